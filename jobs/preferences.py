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
from dataclasses import asdict, dataclass, field
from typing import Any

import click
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from curation.batch import eval_index
from curation.decontaminate import DecontaminateParams
from curation.fuzzy_dedup import FuzzyDedupParams
from curation.licensing import LicenseParams
from curation.pii import PiiParams
from curation.preferences import (
    EXTERNAL,
    SERVED,
    PreferenceParams,
    candidate_pairs,
    commit_preferences,
    decontaminated,
    exact_duplicates,
    external_records,
    interactions,
    near_duplicates,
    scrub_interactions,
    with_prompt,
)
from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.data_runs import tracked_run
from lineage.catalog import BRONZE_DOCUMENTS, BRONZE_INTERACTIONS, SILVER_PREFERENCES
from lineage.runs import Run, last_read_version
from lineage.tables import ensure_table, latest_version

JOB = "preferences"


@dataclass
class PreferencesReport:
    run_id: str
    mode: str  # full | nothing_new
    bronze_version: int | None
    documents_version: int | None = None  # bronze.documents, for its preference records
    interactions: int = 0
    with_feedback: int = 0
    records: int = 0  # preference records (preference-jsonl) in bronze.documents
    candidates: dict[str, int] = field(default_factory=dict)  # rule -> pairs the rule made
    kept: dict[str, int] = field(default_factory=dict)  # rule -> pairs in silver.preferences
    refused: dict[str, int] = field(default_factory=dict)  # reason -> candidates refused
    pairs: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def build_preferences(spark: SparkSession, config: Config, full: bool = False) -> PreferencesReport:
    """Rebuild silver.interactions and silver.preferences from bronze.interactions and bronze's
    preference records."""
    lakehouse = config.lakehouse
    params = params_from(PreferenceParams, config.section("preferences"))
    pii_params = params_from(PiiParams, config.section("curate").get("pii") or {})
    purposes = params_from(LicenseParams, config.section("curate").get("license") or {}).purposes
    run = Run(job=JOB, config_digest=config.digest(), params={"full": full})
    with tracked_run(spark, config, run):
        bronze = ensure_table(spark, BRONZE_INTERACTIONS, lakehouse)
        version = latest_version(bronze)
        documents = ensure_table(spark, BRONZE_DOCUMENTS, lakehouse)
        documents_version = latest_version(documents)
        report = PreferencesReport(run.run_id, "full", version, documents_version)
        run.input_versions = {BRONZE_INTERACTIONS.name: version, BRONZE_DOCUMENTS.name: documents_version}
        if not full and all(last_read_version(lakehouse, JOB, name) == v for name, v in run.input_versions.items()):
            report.mode = "nothing_new"
            return report
        events = spark.read.format("delta").option("versionAsOf", version).load(BRONZE_INTERACTIONS.path(lakehouse))
        records = (
            spark.read.format("delta").option("versionAsOf", documents_version).load(BRONZE_DOCUMENTS.path(lakehouse))
        )
        progress(f"scrubbing the interactions of {BRONZE_INTERACTIONS.name} v{version} and the preference "
                 f"records of {BRONZE_DOCUMENTS.name} v{documents_version}")  # fmt: skip
        rows = interactions(events, params.purpose).unionByName(external_records(records, purposes))
        scrubbed = with_prompt(scrub_interactions(rows, pii_params)).localCheckpoint(eager=True)
        totals = scrubbed.agg(
            F.count(F.when(F.col("origin") == SERVED, 1)), F.count("feedback_at"), F.count(F.when(F.col("origin") == EXTERNAL, 1))
        ).first()  # fmt: skip
        report.interactions, report.with_feedback, report.records = totals[0], totals[1], totals[2]
        screen = params_from(DecontaminateParams, config.section("curate").get("decontaminate") or {})
        candidates = decontaminated(
            candidate_pairs(scrubbed, params), screen, eval_index(spark, config.lakehouse, screen.ngram)
        )
        fuzzy = params_from(FuzzyDedupParams, config.section("curate").get("fuzzy_dedup") or {})
        pairs = near_duplicates(exact_duplicates(candidates).localCheckpoint(eager=True), fuzzy)
        pairs = pairs.localCheckpoint(eager=True)
        for row in pairs.groupBy("rule", "refused").count().collect():
            report.candidates[row["rule"]] = report.candidates.get(row["rule"], 0) + row["count"]
            if row["refused"] is None:
                report.kept[row["rule"]] = row["count"]
            else:
                report.refused[row["refused"]] = report.refused.get(row["refused"], 0) + row["count"]
        report.pairs = sum(report.kept.values())

        progress(f"merging {report.interactions} interactions and {report.pairs} pairs into silver")
        report.versions = commit_preferences(
            spark, lakehouse, run.run_id, version, documents_version, scrubbed, pairs, params
        )
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
