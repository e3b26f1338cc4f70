"""Ingest the sources of a manifest into `bronze.documents`, bad records into `quarantine.records`.

Runs in-process (`millpond ingest --manifest sources.toml`) or as a spark-submit application
(`spark-submit jobs/ingest.py --manifest sources.toml`, or `millpond submit ingest -- ...`).
Every run reconciles: read = ingested + unchanged + quarantined + tombstoned (erased earlier).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from pyspark.sql import SparkSession

from ingestion.bronze import IngestParams
from ingestion.load import IngestPlan, IngestReport, load_bronze, plan_ingest
from jobs.config import Config
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options, spark_progress
from jobs.data_runs import tracked_run
from lineage.runs import Run


def run_ingest(
    spark: SparkSession, config: Config, manifest: str | Path | IngestPlan, source_names: tuple[str, ...] = ()
) -> IngestReport:
    """Read, quarantine, MERGE and reconcile; the run is recorded in `lineage.runs` either way."""
    lakehouse = config.lakehouse
    params = IngestParams(**config.section("ingest"))
    plan = manifest if isinstance(manifest, IngestPlan) else plan_ingest(manifest, source_names)
    sources, tasks = plan.sources, plan.tasks
    run = Run(
        job="ingest",
        config_digest=config.digest(),
        params={"manifest": str(plan.manifest), "sources": [s.name for s in sources], "files": len(tasks)},
    )
    with tracked_run(spark, config, run):
        report = load_bronze(
            spark, lakehouse, params, plan, run.run_id, progress, lambda what: spark_progress(spark, what)
        )
        run.counts = {k: v for k, v in report.as_json().items() if isinstance(v, int)} | {
            f"quarantined:{k}": v for k, v in report.quarantine_reasons.items()
        }
        run.output_versions = {k: v for k, v in report.versions.items() if v is not None}
    return report


def print_report(report: IngestReport) -> None:
    click.echo(f"ingest run {report.run_id}")
    width = max([len("source")] + [len(n) for n in report.sources])
    click.echo(f"  {'source':<{width}}  {'files':>7}  {'read':>9}  {'documents':>9}  {'quarantined':>11}")
    for name, c in report.sources.items():
        click.echo(f"  {name:<{width}}  {c.files:>7}  {c.read:>9}  {c.documents:>9}  {c.quarantined:>11}")
    click.echo(
        f"read {report.read} = ingested {report.ingested} (new {report.new}, updated {report.updated})"
        f" + unchanged {report.unchanged} + quarantined {report.quarantined}"
        + (f" + tombstoned {report.tombstoned}" if report.tombstoned else "")
    )
    if report.quarantine_reasons:
        reasons = ", ".join(f"{k} {v}" for k, v in report.quarantine_reasons.items())
        click.echo(f"quarantined by reason: {reasons}  (see `millpond quarantine`)")
    versions = ", ".join(f"{k} v{v}" for k, v in report.versions.items() if v is not None)
    click.echo(f"tables: {versions}")


@click.command("ingest")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Source manifest (TOML).")
@click.option("--source", "source_names", multiple=True, help="Only this source (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the reconciliation as JSON.")
@spark_options
@lakehouse_options
def ingest_command(
    manifest: str,
    source_names: tuple[str, ...],
    as_json: bool,
    master: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Ingest a manifest's sources into bronze.documents; bad records go to quarantine.records."""
    config = effective_config(lakehouse, config_file)
    plan = plan_ingest(manifest, source_names)
    spark = open_spark(config, master, app_name="millpond-ingest")
    report = run_ingest(spark, config, plan)
    if as_json:
        click.echo(json.dumps(report.as_json(), sort_keys=True))
    else:
        print_report(report)


if __name__ == "__main__":  # spark-submit jobs/ingest.py --manifest ... [--lakehouse ...]
    from jobs.cli import main

    main(["ingest", *sys.argv[1:]])
