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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.commit import CommittedBatch, commit_batch, near_duplicate_index
from curation.decontaminate import load_index, overlap_report
from curation.gate import GateFailedError, GateResult
from curation.licensing import carry_license
from curation.pipeline import Stage, StageCounts, prepare, run_stages
from curation.preferences import route_preference_records
from curation.registry import EVAL_INDEX, MINHASH_INDEX, SILVER, SURVIVORS, StageSpec, stage, stage_names, stages
from ingestion.manifest import PREFERENCE_DOMAIN
from jobs.config import Config, params_from, section_defaults
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options, spark_progress
from jobs.data_runs import tracked_run
from lineage.catalog import (
    BRONZE_DOCUMENTS,
    GOVERNANCE_EVAL_ITEMS,
    SILVER_DECISIONS,
    SILVER_DOCUMENTS,
)
from lineage.errors import MillpondError
from lineage.runs import Run, abandoned_runs, curated_version
from lineage.tables import changed_documents, ensure_table, latest_version


class CurateError(MillpondError, ValueError):
    """A curate request that cannot run as asked (unknown or unbuilt stage, missing model)."""


@dataclass
class CurateReport:
    run_id: str
    mode: str  # incremental | full | nothing_new
    bronze_version: int | None
    rows_in: int
    rows_out: int
    stages: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it did not run
    silver: dict[str, int] = field(default_factory=dict)  # inserted, updated, deleted
    superseded: int = 0  # silver documents displaced by a better copy in this batch
    overlap: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    versions: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "bronze_version": self.bronze_version,
            "in": self.rows_in,
            "out": self.rows_out,
            "stages": self.stages,
            "skipped": self.skipped,
            "silver": self.silver,
            "superseded": self.superseded,
            "overlap": self.overlap,
            "gate": self.gate,
            "versions": self.versions,
        }


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


def build_stages(
    spark: SparkSession, config: Config, chosen: list[str], existing: DataFrame | None, full: bool
) -> tuple[list[tuple[str, Stage]], Any]:
    """Each chosen row stage bound to its parameters and to what it needs; also the eval index
    (for the overlap report). Batch checks run later, on the survivors."""
    loaders: dict[str, Callable[[Any], Any]] = {
        SILVER: lambda params: existing,
        MINHASH_INDEX: lambda params: None if full else near_duplicate_index(spark, config.lakehouse, params),
        EVAL_INDEX: lambda params: eval_index(spark, config, params.ngram),
    }
    bound: list[tuple[str, Stage]] = []
    needed: dict[str, Any] = {}
    for name in chosen:
        spec = stage(name)
        params = stage_params(spec, config)
        if spec.needs is None:
            bound.append((name, lambda df, f=spec.apply, p=params: f(df, p)))
        elif spec.needs != SURVIVORS:
            needed[spec.needs] = loaders[spec.needs](params)
            bound.append((name, lambda df, f=spec.apply, p=params, x=needed[spec.needs]: f(df, p, x)))
    return bound, needed.get(EVAL_INDEX)


def eval_index(spark: SparkSession, config: Config, ngram: int) -> Any:
    """The n-gram index of the registered eval sets (`governance.eval_items`; empty when none)."""
    path = GOVERNANCE_EVAL_ITEMS.path(config.lakehouse)
    items = spark.read.format("delta").load(path) if DeltaTable.isDeltaTable(spark, path) else None
    return load_index(items, ngram)


def run_curate(
    spark: SparkSession, config: Config, stages: list[str] | None = None, full: bool = False
) -> CurateReport:
    """Curate what bronze gained since the last successful run (or everything, with `full`)."""
    chosen, skipped = plan_stages(stages, config)
    run = Run(job="curate", config_digest=config.digest(), params={"stages": chosen, "full": full})

    def keep_gate_result(err: BaseException) -> None:
        if isinstance(err, GateFailedError):
            run.reports["gate"] = json.dumps(err.result.as_json())

    with tracked_run(spark, config, run, on_failure=keep_gate_result):
        report = _curate(spark, config, chosen, skipped, full, run)
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


def _curate(
    spark: SparkSession, config: Config, chosen: list[str], skipped: dict[str, str], full: bool, run: Run
) -> CurateReport:
    lakehouse = config.lakehouse
    bronze_table = ensure_table(spark, BRONZE_DOCUMENTS, lakehouse)
    silver_table = ensure_table(spark, SILVER_DOCUMENTS, lakehouse)
    decisions_table = ensure_table(spark, SILVER_DECISIONS, lakehouse)
    bronze_version = latest_version(bronze_table)
    bronze_path = BRONZE_DOCUMENTS.path(lakehouse)
    report = CurateReport(run.run_id, "full" if full else "incremental", bronze_version, 0, 0, skipped=skipped)

    # A run killed half way left decisions without a finished run: they are redone now.
    abandoned = abandoned_runs(lakehouse, "curate", run.run_id)
    if abandoned:
        decisions_table.delete(F.col("run_id").isin(abandoned))

    watermark = None if full else curated_version(lakehouse)
    if watermark is None:
        report.mode = "full"
    bronze = spark.read.format("delta").option("versionAsOf", bronze_version).load(bronze_path)
    deleted = None
    if watermark is not None:
        if watermark >= bronze_version:
            report.mode = "nothing_new"
            report.versions = _versions(silver_table, decisions_table)
            return report
        upserted, deleted = changed_documents(spark, bronze_path, watermark, bronze_version)
        bronze = bronze.join(upserted, "doc_id", "left_semi")

    # The stages are CPU-bound Python: every core needs a share of the batch, however few
    # files it sits in.
    parallelism = spark.sparkContext.defaultParallelism
    if bronze.rdd.getNumPartitions() < parallelism:
        bronze = bronze.repartition(parallelism * 2, "doc_id")

    existing = None
    if not full and "exact_dedup" in chosen:
        existing = silver_table.toDF().select("doc_id", "text_sha256", "quality_score", "license_policy", "ingested_at")
    bound, index = build_stages(spark, config, chosen, existing, full)
    progress(f"curating with stages {', '.join(chosen) or '(none)'}")
    batch = prepare(bronze)
    if "license" not in chosen:  # the declared license still decides the policy
        batch = carry_license(batch, stage_params(stage("license"), config))
    if bronze.where(F.col("domain") == PREFERENCE_DOMAIN).limit(1).count():
        bound = [("route", route_preference_records), *bound]  # pairs go to `preferences build`
    with spark_progress(spark, "curating"):
        pipeline = run_stages(batch, bound, progress)
    try:
        report.rows_in = pipeline.rows_in
        report.rows_out = pipeline.rows_out
        report.stages = [c.as_json() for c in pipeline.funnel]
        if index is not None and "decontaminate" in pipeline.outputs:
            report.overlap = overlap_report(index, pipeline.outputs["decontaminate"])

        for spec in (stage(name) for name in chosen):
            if spec.needs != SURVIVORS:
                continue
            progress(f"validating the batch ({spec.name})")
            result = spec.apply(pipeline.survivors, stage_params(spec, config), chosen)
            report.gate = result.as_json()
            if not result.success:
                raise GateFailedError(result)
            pipeline.funnel.append(StageCounts(spec.name, pipeline.rows_out, kept=pipeline.rows_out))
            report.stages = [c.as_json() for c in pipeline.funnel]
        fuzzy = stage_params(stage("fuzzy_dedup"), config)
        gated = any(stage(name).needs == SURVIVORS for name in chosen)
        planned = CommittedBatch(bronze_version, deleted, full, gated=gated, index_digest=fuzzy.index_digest())
        committed = commit_batch(spark, lakehouse, run.run_id, pipeline, planned, progress)
        report.silver, report.superseded = committed.silver, committed.superseded
        report.versions = _versions(silver_table, decisions_table)
    finally:
        pipeline.release()
    return report


def _versions(silver_table: DeltaTable, decisions_table: DeltaTable) -> dict[str, int]:
    return {SILVER_DOCUMENTS.name: latest_version(silver_table), SILVER_DECISIONS.name: latest_version(decisions_table)}


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


__all__ = ["GateResult", "curate_command", "run_curate"]


if __name__ == "__main__":  # spark-submit jobs/curate.py [--stages ...] [--full] [--lakehouse ...]
    from jobs.cli import main

    main(["curate", *sys.argv[1:]])
