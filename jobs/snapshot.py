"""`millpond snapshot create|list|show`: named, immutable training sets in gold.snapshots.

`create` reads the source table at its current Delta version and records that version; the
snapshot never changes after, and a later run trains on exactly these members whatever
happens to the table. Runs under spark-submit too (`python jobs/snapshot.py create ...`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.data_runs import tracked_run
from lineage.catalog import table
from lineage.runs import Run
from lineage.snapshots import (
    SnapshotSpec,
    SnapshotSpecError,
    filter_json,
    list_snapshots,
    parse_mix,
    parse_where,
    schema_columns,
    snapshot_details,
    snapshot_source,
    write_snapshot,
)


def create_snapshot(spark: SparkSession, config: Config, spec: SnapshotSpec) -> dict[str, Any]:
    """Cut `spec` from its source table's current version into gold.snapshots and its members."""
    lakehouse = config.lakehouse
    path, version = snapshot_source(spark, lakehouse, spec)
    run = Run(
        job="snapshot",
        config_digest=config.digest(),
        params={"name": spec.name, "source": spec.source_table, "filter": filter_json(spec.where),
                "mix": dict(spec.mix), "temperature": spec.temperature, "purpose": spec.purpose},
    )  # fmt: skip
    with tracked_run(spark, config, run):
        summary = write_snapshot(spark, lakehouse, spec, path, version, run, progress)
        run.input_versions = {spec.source_table: version}
        run.counts = {"rows": summary["rows"], "train_rows": summary["train_rows"]} | {
            f"excluded:{k}": v for k, v in summary["excluded"].items()
        }
        run.reports["mixture"] = json.dumps(summary["realized_mix"], sort_keys=True)
    return summary


@click.group("snapshot")
def snapshot_group() -> None:
    """Named, immutable training sets (gold.snapshots): create, list, show."""


@snapshot_group.command("create")
@click.argument("name")
@click.option("--from", "source_table", default="silver.documents", show_default=True, help="Table to cut from.")
@click.option(
    "--where",
    "filters",
    multiple=True,
    help="COLUMN OP VALUE [AND ...], e.g. \"lang = 'en' AND quality_score >= 0.5\" (repeatable: ANDed).",
)
@click.option(
    "--mix", default=None, help="Weights by source: SOURCE=WEIGHT,... (training examples; scarce sources repeat)."
)
@click.option("--temperature", type=float, default=None, help="Temperature sampling across sources: p ~ n^(1/T).")
@click.option(
    "--purpose", default="pretraining", show_default=True, help="Policy to enforce: license allowlist and consent."
)
@click.option(
    "--validation", type=float, default=0.01, show_default=True, help="Share held out for validation (by doc_id hash)."
)
@click.option(
    "--test",
    "test_share",
    type=float,
    default=0.01,
    show_default=True,
    help="Share sealed for testing, never trained on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@spark_options
@lakehouse_options
def create_command(
    name: str,
    source_table: str,
    filters: tuple[str, ...],
    mix: str | None,
    temperature: float | None,
    purpose: str,
    validation: float,
    test_share: float,
    as_json: bool,
    master: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Cut snapshot NAME from a table's current version: filter, policy, split, mixture."""  # fmt: skip
    config = effective_config(lakehouse, config_file)
    try:
        columns = schema_columns(table(source_table).schema)
    except KeyError as err:
        raise SnapshotSpecError(str(err.args[0])) from None
    where = tuple(c for text in filters for c in parse_where(text, columns))
    spec = SnapshotSpec(name, source_table, where, parse_mix(mix), temperature, purpose, validation, test_share)
    spark = open_spark(config, master, app_name=f"millpond-snapshot-{name}")
    summary = create_snapshot(spark, config, spec)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True, default=str))
        return
    print_summary(summary)


def print_summary(s: dict[str, Any]) -> None:
    click.echo(f"snapshot {s['name']}: {s['source_table']} v{s['source_version']}, purpose {s['purpose']}")
    if "splits" in s:
        click.echo("  documents: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()))
    click.echo(f"  training examples {s['train_rows']} ({s['words']} words); tokens: {s['tokens'] or 'not cut yet'}")
    if s["realized_mix"]:
        click.echo(
            "  realized mix (share of training words): "
            + ", ".join(f"{k} {v:.3f}" for k, v in s["realized_mix"].items())
        )
    if s["excluded"]:
        click.echo("  left out: " + ", ".join(f"{k} {v}" for k, v in sorted(s["excluded"].items())))
    click.echo(f"  content digest {s['content_digest']}")


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def list_command(as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """List the snapshots: name, source version, rows, words, purpose."""
    config = effective_config(lakehouse, config_file)
    snapshots = list_snapshots(config.lakehouse)
    if as_json:
        click.echo(json.dumps(snapshots, sort_keys=True, default=str))
        return
    if not snapshots:
        click.echo("no snapshots yet: `millpond snapshot create NAME`")
    for s in snapshots:
        click.echo(f"  {s['name']:<24} {s['source_table']} v{s['source_version']:<4} {s['rows']:>8} docs "
                   f"{s['words']:>10} words  {s['purpose']}  {s['created_at']}")  # fmt: skip


@snapshot_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def show_command(name: str, as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """Show one snapshot: its definition, counts by split and source, what was left out."""
    config = effective_config(lakehouse, config_file)
    summary = snapshot_details(config.lakehouse, name)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True, default=str))
        return
    print_summary(summary)
    click.echo("  filter: " + (json.dumps(summary["filter"]) if summary["filter"] else "none"))
    for digest, tokens in summary["tokens_by_tokenizer"].items():
        click.echo(f"  tokens with tokenizer {digest}: " + ", ".join(f"{k} {v}" for k, v in tokens.items()))


if __name__ == "__main__":  # spark-submit jobs/snapshot.py create NAME [--where ...] [--lakehouse ...]
    from jobs.cli import run_job_file

    run_job_file(["snapshot"], sys.argv[1:])
