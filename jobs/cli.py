"""The `millpond` command line."""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

from jobs.classifier import classifier_group
from jobs.context import effective_config, lakehouse_options, spark_settings
from jobs.curate import curate_command
from jobs.dpo import dpo_command
from jobs.evalset import evalset_group
from jobs.evaluate import eval_command
from jobs.flywheel import flywheel_group
from jobs.ingest import ingest_command
from jobs.mlflow_server import mlflow_command
from jobs.pii_scan import pii_group
from jobs.preferences import preferences_group
from jobs.serve import serve_command
from jobs.sft import sft_command
from jobs.snapshot import snapshot_group
from jobs.stream_interactions import stream_group
from jobs.subject_requests import lineage_group
from jobs.tokens import shards_group, tokenizer_group
from jobs.train import train_group
from jobs.why import why_command
from lineage.catalog import LINEAGE_RUNS, QUARANTINE_RECORDS
from lineage.errors import MillpondError
from lineage.reader import inspect_tables
from lineage.tables import read_table

DEBUG_FLAG = "--debug"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--lakehouse", default=None, help="Lakehouse root folder (env MILLPOND_LAKEHOUSE; default ./lakehouse).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (env MILLPOND_CONFIG; default ./millpond.toml if present).",
)
@click.option(
    DEBUG_FLAG,
    "debug",
    is_flag=True,
    help="Show the traceback of an error instead of one line (also after the command; env MILLPOND_DEBUG=1).",
)
@click.version_option(package_name="millpond")
@click.pass_context
def cli(ctx: click.Context, lakehouse: str | None, config_file: str | None, debug: bool) -> None:
    """millpond: a lakehouse for LLM training data, on Spark and Delta."""
    ctx.obj = {"lakehouse": lakehouse, "config_file": config_file}


@cli.command("config")
@lakehouse_options
def config_command(lakehouse: str | None, config_file: str | None) -> None:
    """Print the effective configuration (defaults, file, environment and flags) as TOML."""
    config = effective_config(lakehouse, config_file)
    click.echo(f"# config file: {config.file or 'none (built-in defaults)'}")
    click.echo(f"# digest: {config.digest()}")
    click.echo(config.to_toml(), nl=False)


@cli.command("tables")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def tables_command(as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """List every table of the lakehouse: name, path, Delta version and row count."""
    config = effective_config(lakehouse, config_file)
    infos = inspect_tables(config.lakehouse)
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], sort_keys=True))
        return
    click.echo(f"lakehouse: {config.lakehouse}")
    width = max(len(i.name) for i in infos)
    click.echo(f"  {'table':<{width}}  {'version':>7}  {'rows':>10}  path")
    for info in infos:
        version = "-" if info.version is None else str(info.version)
        rows = "-" if info.rows is None else str(info.rows)
        click.echo(f"  {info.name:<{width}}  {version:>7}  {rows:>10}  {info.path}")


@cli.command("quarantine")
@click.option("--source", default=None, help="Only this source.")
@click.option("--reason", default=None, help="Only this reason, e.g. malformed_json.")
@click.option("--run", "run_id", default=None, help="Only records last seen by this ingest run.")
@click.option("--limit", default=50, show_default=True, help="At most this many rows (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@lakehouse_options
def quarantine_command(
    source: str | None,
    reason: str | None,
    run_id: str | None,
    limit: int,
    as_json: bool,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """List what ingestion could not read: reason, detail and where the raw bytes are."""
    config = effective_config(lakehouse, config_file)
    table = read_table(QUARANTINE_RECORDS, config.lakehouse)
    rows = [] if table is None else table.to_pylist()
    rows = [
        r
        for r in rows
        if (source is None or r["source"] == source)
        and (reason is None or r["reason"] == reason)
        and (run_id is None or run_id in (r["ingest_run_id"], r["last_seen_run_id"]))
    ]
    rows.sort(key=lambda r: (r["source"], r["source_uri"], r["locator"]))
    shown = rows if limit == 0 else rows[:limit]
    if as_json:
        for row in shown:
            click.echo(json.dumps(row, default=str, sort_keys=True))
        return
    click.echo(f"{len(rows)} quarantined record(s)" + (f", showing {len(shown)}" if len(shown) < len(rows) else ""))
    for row in shown:
        click.echo(f"{row['source']}  {row['locator']}  {row['reason']}: {row['detail']}")


@cli.command("runs")
@click.option("--limit", default=20, show_default=True, help="The most recent runs only (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@lakehouse_options
def runs_command(limit: int, as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """List job runs from lineage.runs: status, times, table versions and counts."""
    config = effective_config(lakehouse, config_file)
    table = read_table(LINEAGE_RUNS, config.lakehouse)
    rows = [] if table is None else sorted(table.to_pylist(), key=lambda r: r["started_at"], reverse=True)
    rows = rows if limit == 0 else rows[:limit]
    for row in rows:
        if as_json:
            row = {**row, **{k: dict(row[k] or []) for k in ("input_versions", "output_versions", "counts")}}
            click.echo(json.dumps(row, default=str, sort_keys=True))
            continue
        counts = dict(row["counts"] or [])
        summary = " ".join(f"{k}={counts[k]}" for k in ("read", "ingested", "unchanged", "quarantined") if k in counts)
        click.echo(f"{row['run_id']}  {row['status']:<9}  {row['started_at']:%Y-%m-%d %H:%M:%S}  {summary}")


@cli.command(
    "submit",
    context_settings={"ignore_unknown_options": True},
    epilog="Example: millpond submit ingest --master spark://127.0.0.1:7077 -- --manifest sources.toml",
)
@click.argument("job")
@click.option("--master", required=True, help="Cluster master URL, e.g. spark://host:7077, yarn, k8s://...")
@click.option("--deploy-mode", type=click.Choice(["client", "cluster"]), default="client", show_default=True)
@click.option("--python", default=None, help="Python on the executors (default: PYSPARK_PYTHON or this one).")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE", help="Extra Spark setting (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the spark-submit command and stop.")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
@lakehouse_options
def submit_command(
    job: str,
    master: str,
    deploy_mode: str,
    python: str | None,
    confs: tuple[str, ...],
    dry_run: bool,
    job_args: tuple[str, ...],
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Run a job on a Spark cluster through spark-submit, shipping the project and the Delta jars."""
    from jobs.submit import job_arguments, run_submit, submit_command_line  # noqa: PLC0415

    config = effective_config(lakehouse, config_file)
    settings = spark_settings(config, master, app_name=f"millpond-{job}")
    extra = {}
    for item in confs:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--conf")
        extra[key] = value
    args = list(job_args)
    if dry_run:
        command = submit_command_line(
            job, settings, job_arguments(config, args), deploy_mode=deploy_mode, python=python, extra_conf=extra
        )
        click.echo(shlex.join(command))
        return
    code = run_submit(job, config, settings, args, deploy_mode=deploy_mode, python=python, extra_conf=extra)
    sys.exit(code)


cli.add_command(ingest_command)
cli.add_command(curate_command)
cli.add_command(why_command)
cli.add_command(evalset_group)
cli.add_command(classifier_group)
cli.add_command(pii_group)
cli.add_command(snapshot_group)
cli.add_command(tokenizer_group)
cli.add_command(shards_group)
train_group.add_command(sft_command)
train_group.add_command(dpo_command)
cli.add_command(train_group)
cli.add_command(eval_command)
cli.add_command(mlflow_command)
cli.add_command(lineage_group)
cli.add_command(serve_command)
cli.add_command(preferences_group)
cli.add_command(stream_group)
cli.add_command(flywheel_group)


@cli.command("demo")
@click.option("--loop/--no-loop", default=True, help="Run the flywheel after the data plane (default: yes).")
@click.option("--quick", is_flag=True, help="Fewer steps and conversations: the loop in a few minutes (tests).")
@lakehouse_options
def demo_command(loop: bool, quick: bool, lakehouse: str | None, config_file: str | None) -> None:
    """The whole loop on bundled, license-tagged data: ingest, curate, snapshot, lineage; pretrain,
    serve, simulated users, stream, pairs, DPO, evaluate, promote; the runs side by side."""
    from jobs.demo import run_demo

    run_demo(effective_config(lakehouse, config_file), loop, quick)


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """The arguments without `--debug`, and whether it was given: it may stand anywhere before a
    `--` (after which arguments belong to a submitted job)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:cut] if a != DEBUG_FLAG]
    return head + argv[cut:], len(head) < cut or os.environ.get("MILLPOND_DEBUG", "") not in ("", "0")


def run_job_file(command: list[str], argv: list[str]) -> None:
    """A job file run by spark-submit: `millpond submit` puts `--lakehouse` and `--config` first,
    where the root group takes them, before the command's own words (a group such as `snapshot`
    has no such options of its own)."""
    leading, rest = [], list(argv)
    while len(rest) > 1 and rest[0] in ("--lakehouse", "--config"):
        leading, rest = [*leading, *rest[:2]], rest[2:]
    main([*leading, *command, *rest])


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; an error the user can fix ends as one line on stderr and exit status 2."""
    args, debug = split_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        cli.main(args=args, prog_name="millpond", standalone_mode=True)
    except MillpondError as err:
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        click.echo(f"millpond: error: {message} (--debug shows the traceback)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
