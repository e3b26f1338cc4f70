"""`millpond preferences build`: `bronze.interactions` into `silver.interactions` and `silver.preferences`.

Parse, plan, open Spark, call `build_preferences`, print the funnel. The build recomputes both
tables from the pinned bronze version (an interaction's feedback can arrive any time later, and a
rating pair joins two interactions), MERGEs the result and removes rows no longer produced; a
run with nothing new in bronze since the last successful one changes nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.decisions import DROPPED, KEPT
from curation.decontaminate import DecontaminateParams
from curation.pii import PiiParams
from curation.preferences import (
    LICENSE,
    SOURCE,
    PreferenceParams,
    candidate_pairs,
    decontaminated,
    exact_duplicates,
    interactions,
    scrub_interactions,
    with_prompt,
)
from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.curate import eval_index
from lineage.catalog import (
    BRONZE_INTERACTIONS,
    LINEAGE_RUNS,
    SILVER_DECISIONS,
    SILVER_INTERACTIONS,
    SILVER_PREFERENCES,
)
from lineage.edges import edges, insert_edges
from lineage.runs import Run, recorded_run
from lineage.tables import ensure_table, latest_version, read_table

JOB = "preferences"
STAGE = "preferences"  # the stage name of pair decisions in silver.decisions


@dataclass
class PreferencesReport:
    run_id: str
    mode: str  # full | nothing_new
    bronze_version: int | None
    interactions: int = 0
    with_feedback: int = 0
    candidates: dict[str, int] = field(default_factory=dict)  # rule -> pairs the rule made
    kept: dict[str, int] = field(default_factory=dict)  # rule -> pairs in silver.preferences
    refused: dict[str, int] = field(default_factory=dict)  # reason -> candidates refused
    pairs: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _last_built(lakehouse: Any) -> int | None:
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=["job", "status", "input_versions", "started_at"])
    if runs is None:
        return None
    built = [r for r in runs.to_pylist() if r["job"] == JOB and r["status"] == "succeeded"]
    if not built:
        return None
    latest = max(built, key=lambda r: r["started_at"])
    return dict(latest["input_versions"] or []).get(BRONZE_INTERACTIONS.name)


def build_preferences(spark: SparkSession, config: Config, full: bool = False) -> PreferencesReport:
    """Rebuild silver.interactions and silver.preferences from bronze.interactions."""
    lakehouse = config.lakehouse
    params = params_from(PreferenceParams, config.section("preferences"))
    pii_params = params_from(PiiParams, config.section("curate").get("pii") or {})
    run = Run(job=JOB, config_digest=config.digest(), params={"full": full})
    with recorded_run(spark, lakehouse, run):
        bronze = ensure_table(spark, BRONZE_INTERACTIONS, lakehouse)
        version = latest_version(bronze)
        report = PreferencesReport(run.run_id, "full", version)
        run.input_versions = {BRONZE_INTERACTIONS.name: version}
        if not full and _last_built(lakehouse) == version:
            report.mode = "nothing_new"
            return report
        events = spark.read.format("delta").option("versionAsOf", version).load(BRONZE_INTERACTIONS.path(lakehouse))
        progress(f"scrubbing the interactions of {BRONZE_INTERACTIONS.name} v{version}")
        scrubbed = with_prompt(scrub_interactions(interactions(events), pii_params)).localCheckpoint(eager=True)
        report.interactions = scrubbed.count()
        report.with_feedback = scrubbed.where(F.col("feedback_at").isNotNull()).count()
        screen = params_from(DecontaminateParams, config.section("curate").get("decontaminate") or {})
        candidates = decontaminated(candidate_pairs(scrubbed, params), screen, eval_index(spark, config, screen.ngram))
        pairs = exact_duplicates(candidates).localCheckpoint(eager=True)
        for row in pairs.groupBy("rule", "refused").count().collect():
            report.candidates[row["rule"]] = report.candidates.get(row["rule"], 0) + row["count"]
            if row["refused"] is None:
                report.kept[row["rule"]] = row["count"]
            else:
                report.refused[row["refused"]] = report.refused.get(row["refused"], 0) + row["count"]
        report.pairs = sum(report.kept.values())

        now = datetime.now(UTC)
        progress(f"merging {report.interactions} interactions into {SILVER_INTERACTIONS.name}")
        _replace(spark, lakehouse, SILVER_INTERACTIONS, _interaction_rows(scrubbed, version, run.run_id))
        progress(f"merging {report.pairs} pairs into {SILVER_PREFERENCES.name}")
        kept = pairs.where(F.col("refused").isNull())
        _replace(spark, lakehouse, SILVER_PREFERENCES, _pair_rows(kept, params, run.run_id, now))
        decisions = pairs.select(
            F.col("candidate_id").alias("doc_id"), F.lit(STAGE).alias("stage"),
            F.when(F.col("refused").isNull(), KEPT).otherwise(DROPPED).alias("action"),
            F.coalesce("refused", F.concat(F.lit("rule:"), "rule")).alias("reason"), F.lit(None).cast("double").alias("score"),
            F.lit(None).cast("string").alias("cluster_id"),
            F.when(F.col("refused") == "exact_duplicate", F.col("pair_id")).alias("duplicate_of"),
            F.lit(run.run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("decided_at"),
        )  # fmt: skip
        ensure_table(spark, SILVER_DECISIONS, lakehouse)
        decisions.write.format("delta").mode("append").save(SILVER_DECISIONS.path(lakehouse))
        sources = kept.select("pair_id", F.explode(F.array_compact(F.array("interaction_id", "other_interaction_id"))).alias("parent"))  # fmt: skip
        insert_edges(spark, lakehouse, edges(sources, child="pair_id", child_table=SILVER_PREFERENCES.name,
                                             parent="parent", parent_table=BRONZE_INTERACTIONS.name,
                                             relation="pair_of", run_id=run.run_id, table_version=version))  # fmt: skip
        report.versions = {
            spec.name: latest_version(ensure_table(spark, spec, lakehouse))
            for spec in (SILVER_INTERACTIONS, SILVER_PREFERENCES)
        }
        run.output_versions = dict(report.versions)
        run.counts = {"interactions": report.interactions, "pairs": report.pairs} | {
            f"refused:{k}": v for k, v in report.refused.items()
        }
        run.reports["funnel"] = json.dumps(report.as_json(), sort_keys=True)
    return report


def _replace(spark: SparkSession, lakehouse: Any, spec: Any, rows: DataFrame) -> None:
    """Make the table hold exactly `rows` (by key): insert, update what changed, delete the rest."""
    table = ensure_table(spark, spec, lakehouse)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.key)
    (
        table.alias("t")
        .merge(rows.alias("s"), on)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete()
        .execute()
    )


def _interaction_rows(scrubbed: DataFrame, version: int, run_id: str) -> DataFrame:
    extra = {"bronze_version": F.lit(version).cast("long"), "build_run_id": F.lit(run_id)}
    schema = {f.name: f.dataType for f in SILVER_INTERACTIONS.schema.fields}
    return scrubbed.select(*[(extra[n] if n in extra else F.col(n)).cast(schema[n]).alias(n) for n in schema])


def _pair_rows(kept: DataFrame, params: PreferenceParams, run_id: str, now: datetime) -> DataFrame:
    text = F.concat_ws("\n", "prompt_text", "chosen", "rejected")
    policy = F.create_map(F.lit(params.purpose), F.lit("allowed"), F.lit("sft"), F.lit("allowed"))
    return kept.select(
        F.col("pair_id").alias("doc_id"), F.col("prompt_text").alias("prompt"), "chosen", "rejected", "rule",
        text.alias("text"), F.sha2(text, 256).alias("text_sha256"), F.col("prompt_key").alias("split_key"),
        F.lit(SOURCE).alias("source"), "interaction_id", "other_interaction_id", "subject_ids", "consent",
        F.lit(LICENSE).alias("license"), policy.alias("license_policy"), F.lit(now).cast("timestamp").alias("created_at"),
        F.lit(run_id).alias("build_run_id"),
    )  # fmt: skip


def print_report(report: PreferencesReport) -> None:
    click.echo(f"preferences run {report.run_id} ({report.mode}, {BRONZE_INTERACTIONS.name} v{report.bronze_version})")
    if report.mode == "nothing_new":
        click.echo(f"nothing new in {BRONZE_INTERACTIONS.name} since the last build: silver unchanged")
        return
    click.echo(f"  {report.interactions} interactions, {report.with_feedback} with feedback")
    click.echo(f"  {'rule':<8} {'pairs':>7} {'kept':>7}")
    for rule, count in sorted(report.candidates.items()):
        click.echo(f"  {rule:<8} {count:>7} {report.kept.get(rule, 0):>7}")
    if report.refused:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.refused.items(), key=lambda kv: -kv[1]))
        click.echo(f"  refused: {reasons}")
    click.echo(f"{SILVER_PREFERENCES.name}: {report.pairs} pairs")


@click.group("preferences")
def preferences_group() -> None:
    """Preference pairs from the served model's interactions and their feedback."""


@preferences_group.command("build")
@click.option("--full", is_flag=True, help="Rebuild even when bronze.interactions has nothing new.")
@click.option("--json", "as_json", is_flag=True, help="Print the funnel as JSON.")
@spark_options
@lakehouse_options
def build_command(
    full: bool, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Build silver.interactions (scrubbed) and silver.preferences (pairs by rule) from bronze.interactions."""
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
