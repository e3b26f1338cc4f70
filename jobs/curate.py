"""Curate new bronze documents into `silver.documents`, every decision into `silver.decisions`.

Runs in-process (`millpond curate`) or as a spark-submit application (`spark-submit
jobs/curate.py`, or `millpond submit curate -- ...`). Incremental: the bronze version each
successful run read is recorded in `lineage.runs`; the next run reads only the documents
bronze's change data feed shows inserted or updated since. The funnel reconciles exactly:
rows in = rows out + rows dropped, stage by stage, and is stored with the run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from pyspark.sql import SparkSession

from curation.batch import CurateReport, curate_batch
from curation.gate import GateFailedError, GateResult
from curation.registry import StageSpec, stage, stage_names, stages
from jobs.config import Config, params_from, section_defaults
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options, spark_progress
from jobs.data_runs import tracked_run
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DOCUMENTS
from lineage.errors import MillpondError
from lineage.runs import Run


class CurateError(MillpondError, ValueError):
    """A curate request that cannot run as asked (unknown or unbuilt stage, missing model)."""


def stage_params(spec: StageSpec, config: Config) -> Any:
    """The stage's frozen parameters from `[curate.<name>]` (its defaults when the section is absent)."""
    section = config.section("curate")
    return params_from(spec.params, section.get(spec.name) or section_defaults(spec.params()))


def plan_stages(requested: list[str] | None, config: Config) -> tuple[list[str], dict[str, str]]:
    """The stages to run and those skipped with why; refuses unknown or unrunnable ones before
    Spark starts (a missing model or key)."""
    names = stage_names()
    skipped: dict[str, str] = {}
    if requested:
        unknown = [s for s in requested if s not in names]
        if unknown:
            raise CurateError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names)}")
        chosen = [s for s in names if s in requested]
    else:
        chosen = []
        for spec in stages():
            why = spec.skip_by_default(stage_params(spec, config)) if spec.skip_by_default else None
            if why:
                skipped[spec.name] = why
            else:
                chosen.append(spec.name)
    for name in chosen:
        spec = stage(name)
        if spec.check is not None:
            spec.check(stage_params(spec, config))
    return chosen, skipped


def run_curate(
    spark: SparkSession, config: Config, requested: list[str] | None = None, full: bool = False
) -> CurateReport:
    """Curate what bronze gained since the last successful run (or everything, with `full`)."""
    chosen, skipped = plan_stages(requested, config)
    run = Run(job="curate", config_digest=config.digest(), params={"stages": chosen, "full": full})

    def keep_gate_result(err: BaseException) -> None:
        if isinstance(err, GateFailedError):
            run.reports["gate"] = json.dumps(err.result.as_json())

    with tracked_run(spark, config, run, on_failure=keep_gate_result):
        params = {spec.name: stage_params(spec, config) for spec in stages()}
        report = curate_batch(
            spark,
            config.lakehouse,
            run.run_id,
            chosen,
            params,
            skipped=skipped,
            full=full,
            partition_rows=config.section("spark")["partition_rows"],
            progress=progress,
            watch=spark_progress,
        )
        run.counts = {"in": report.rows_in, "out": report.rows_out, "superseded": report.superseded} | {
            f"silver_{k}": v for k, v in report.silver.items()
        }
        for row in report.stages:
            for reason, count in row["dropped"].items():
                run.counts[f"{row['stage']}:{reason}"] = count
        run.reports["funnel"] = json.dumps(report.as_json(), sort_keys=True)
        if report.gate is not None:
            run.reports["gate"] = json.dumps(report.gate)
        if report.bronze_version is not None:
            run.input_versions = {BRONZE_DOCUMENTS.name: report.bronze_version}
        run.output_versions = report.versions
    return report


def print_report(report: CurateReport) -> None:
    click.echo(f"curate run {report.run_id} ({report.mode}, bronze v{report.bronze_version})")
    if report.mode == "nothing_new":
        click.echo("nothing new in bronze since the last curate run: silver unchanged")
        return
    click.echo(f"  {'stage':<14} {'in':>9} {'kept':>9} {'modified':>9} {'dropped':>9}  reasons")
    for row in report.stages:
        dropped = sum(row["dropped"].values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(row["dropped"].items(), key=lambda kv: -kv[1]))
        click.echo(f"  {row['stage']:<14} {row['in']:>9} {row['kept']:>9} {row['modified']:>9} {dropped:>9}  {reasons}")
    click.echo(f"rows in {report.rows_in} -> rows out {report.rows_out}")
    for name, why in report.skipped.items():
        click.echo(f"  skipped {name}: {why}")
    if report.superseded:
        click.echo(f"  {report.superseded} silver document(s) displaced by a better copy in this batch")
    for name, figures in report.overlap.items():
        click.echo(
            f"  eval set {name}: {figures['items_found']} of {figures['items']} items found in the corpus, "
            f"{figures['documents_dropped']} documents dropped ({figures['too_short']} items too short to match)"
        )
    silver = ", ".join(f"{k} {v}" for k, v in report.silver.items())
    click.echo(f"{SILVER_DOCUMENTS.name}: {silver}")
    versions = ", ".join(f"{k} v{v}" for k, v in report.versions.items())
    click.echo(f"tables: {versions}")


@click.command("curate")
@click.option(
    "--stages", default=None, help=f"Comma-separated subset of: {', '.join(stage_names())} (default: all that can run)."
)
@click.option("--full", is_flag=True, help="Recompute every bronze document, not only the new ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the funnel as JSON.")
@spark_options
@lakehouse_options
def curate_command(
    stages: str | None, full: bool, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Curate new bronze documents into silver.documents; every decision goes to silver.decisions."""
    config = effective_config(lakehouse, config_file)
    requested = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    plan_stages(requested, config)  # refuse a wrong request before Spark starts
    spark = open_spark(config, master, app_name="millpond-curate")
    report = run_curate(spark, config, requested, full)
    if as_json:
        click.echo(json.dumps(report.as_json(), sort_keys=True))
    else:
        print_report(report)


__all__ = ["CurateReport", "GateResult", "curate_command", "run_curate"]


if __name__ == "__main__":  # spark-submit jobs/curate.py [--stages ...] [--full] [--lakehouse ...]
    from jobs.cli import main

    main(["curate", *sys.argv[1:]])
