"""`millpond pii scan FILE`: what the pii stage would find in a file, for tuning recognizers.

Runs the stage's detector with the `[curate.pii]` settings on the file's text, no Spark. Values
are masked unless `--show-values` is given: the output is for a terminal, not for a log.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from curation.pii import PiiParams, detector
from curation.pii_detect import Finding, counts, resolve_overlaps
from jobs.config import params_from
from jobs.context import effective_config, lakehouse_options


class PiiScanError(click.ClickException):
    """A file that cannot be scanned."""


@click.group("pii")
def pii_group() -> None:
    """Personal data and secrets: inspect what the pii stage finds."""


def _mask(value: str) -> str:
    """First and last character, the length in between: enough to recognize, not to read."""
    flat = value.replace("\n", " ")
    return flat if len(flat) <= 2 else f"{flat[0]}…{flat[-1]} ({len(flat)} chars)"


def _located(text: str, f: Finding) -> tuple[int, int]:
    line = text.count("\n", 0, f.start) + 1
    column = f.start - (text.rfind("\n", 0, f.start) + 1) + 1
    return line, column


@pii_group.command("scan")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON: counts and findings.")
@click.option("--show-values", is_flag=True, help="Print the values found in clear text (masked by default).")
@lakehouse_options
def scan_command(path: str, as_json: bool, show_values: bool, lakehouse: str | None, config_file: str | None) -> None:
    """Print what the pii stage would find in PATH: type, line:column, score and the value (masked)."""
    config = effective_config(lakehouse, config_file)
    params = params_from(PiiParams, config.section("curate")["pii"])
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PiiScanError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        line = file.read_bytes()[: err.start].count(b"\n") + 1
        raise PiiScanError(f"{path}:{line}: not UTF-8 text ({err.reason})") from None
    found = resolve_overlaps(detector(params.detector_settings()).analyze([text], batch_size=params.batch_size)[0])
    rows = []
    for f in found:
        line, column = _located(text, f)
        value = text[f.start : f.end]
        rows.append(
            {
                "entity_type": f.entity_type,
                "line": line,
                "column": column,
                "score": f.score,
                "value": value if show_values else _mask(value),
            }
        )
    if as_json:
        click.echo(json.dumps({"file": str(file), "counts": counts(found), "findings": rows}, ensure_ascii=False))
        return
    click.echo(f"{file}: {len(rows)} finding(s)" + "".join(f", {k} {v}" for k, v in sorted(counts(found).items())))
    for row in rows:
        click.echo(f"  {row['line']}:{row['column']}  {row['entity_type']:<15} {row['score']:.2f}  {row['value']}")
