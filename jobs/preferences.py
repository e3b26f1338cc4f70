"""`millpond preferences build`: `bronze.interactions` (and the preference records of
`bronze.documents`) into `silver.interactions` and `silver.preferences`.

Parse, plan, open Spark, call `build_preferences`, print the funnel. The build recomputes both
tables from the pinned bronze version (an interaction's feedback can arrive any time later, and a
rating pair joins two interactions), MERGEs the result and removes rows no longer produced; a
run with nothing new in bronze since the last successful one changes nothing.
"""

from __future__ import annotations

import json
import sys

import click
from pyspark.sql import SparkSession

from curation.decontaminate import DecontaminateParams
from curation.fuzzy_dedup import FuzzyDedupParams
from curation.licensing import LicenseParams
from curation.pii import PiiParams
from curation.preference_batch import PreferenceInputs, PreferencesReport, build_batch
from curation.preferences import PreferenceParams
from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.data_runs import tracked_run
from lineage.catalog import BRONZE_DOCUMENTS, BRONZE_INTERACTIONS, SILVER_PREFERENCES
from lineage.runs import Run

JOB = "preferences"


def build_preferences(spark: SparkSession, config: Config, full: bool = False) -> PreferencesReport:
    """Rebuild silver.interactions and silver.preferences from bronze.interactions and bronze's
    preference records (`curation/preference_batch.py`), recorded as a run."""
    curate = config.section("curate")
    settings = PreferenceInputs(
        params=params_from(PreferenceParams, config.section("preferences")),
        pii=params_from(PiiParams, curate.get("pii") or {}),
        purposes=params_from(LicenseParams, curate.get("license") or {}).purposes,
        screen=params_from(DecontaminateParams, curate.get("decontaminate") or {}),
        fuzzy=params_from(FuzzyDedupParams, curate.get("fuzzy_dedup") or {}),
    )
    run = Run(job=JOB, config_digest=config.digest(), params={"full": full})
    with tracked_run(spark, config, run):
        report = build_batch(spark, config.lakehouse, run.run_id, JOB, settings, full, progress)
        run.input_versions = {BRONZE_INTERACTIONS.name: report.bronze_version,
                              BRONZE_DOCUMENTS.name: report.documents_version}  # fmt: skip
        if report.mode == "nothing_new":
            return report
        run.output_versions = dict(report.versions)
        run.counts = {"interactions": report.interactions, "records": report.records, "pairs": report.pairs} | {
            f"refused:{k}": v for k, v in report.refused.items()
        }
        run.reports["funnel"] = json.dumps(report.as_json(), sort_keys=True)
    return report


def print_report(report: PreferencesReport) -> None:
    click.echo(f"preferences run {report.run_id} ({report.mode}, {BRONZE_INTERACTIONS.name} v{report.bronze_version})")
    if report.mode == "nothing_new":
        click.echo(f"nothing new in {BRONZE_INTERACTIONS.name} or {BRONZE_DOCUMENTS.name} since the last build: "
                   "silver unchanged")  # fmt: skip
        return
    click.echo(f"  {report.interactions} interactions, {report.with_feedback} with feedback; "
               f"{report.records} preference records ({BRONZE_DOCUMENTS.name} v{report.documents_version})")  # fmt: skip
    click.echo(f"  {'rule':<8} {'pairs':>7} {'kept':>7}")
    for rule, count in sorted(report.candidates.items()):
        click.echo(f"  {rule:<8} {count:>7} {report.kept.get(rule, 0):>7}")
    if report.refused:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.refused.items(), key=lambda kv: -kv[1]))
        click.echo(f"  refused: {reasons}")
    click.echo(f"{SILVER_PREFERENCES.name}: {report.pairs} pairs")


@click.group("preferences")
def preferences_group() -> None:
    """Preference pairs from the served model's interactions and feedback, and from preference-jsonl sources."""


@preferences_group.command("build")
@click.option("--full", is_flag=True, help="Rebuild even when bronze has nothing new.")
@click.option("--json", "as_json", is_flag=True, help="Print the funnel as JSON.")
@spark_options
@lakehouse_options
def build_command(
    full: bool, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Build silver.interactions (scrubbed) and silver.preferences (pairs by rule) from
    bronze.interactions and the preference-jsonl records of bronze.documents."""
    config = effective_config(lakehouse, config_file)
    from curation.pii import check_ready

    check_ready(params_from(PiiParams, config.section("curate").get("pii") or {}))  # key and model, before Spark
    spark = open_spark(config, master, app_name="millpond-preferences")
    report = build_preferences(spark, config, full)
    if as_json:
        click.echo(json.dumps(report.as_json(), sort_keys=True))
    else:
        print_report(report)


if __name__ == "__main__":  # spark-submit jobs/preferences.py build [--full]
    from jobs.cli import run_job_file

    run_job_file(["preferences"], sys.argv[1:])
