"""One curate batch: the bronze documents new since the last successful curate run, through
the chosen stages, the batch checks and the commit to silver, with its report.

`jobs/curate.py` reads the configuration, plans the stages and records the run; this module
does the work, knowing the lakehouse and each stage's parameters but not where they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.commit import CommittedBatch, commit_batch, near_duplicate_index
from curation.decontaminate import load_index, overlap_report
from curation.gate import GateFailedError
from curation.licensing import carry_license
from curation.pipeline import Stage, StageCounts, prepare, run_stages
from curation.preferences import route_preference_records
from curation.registry import EVAL_INDEX, MINHASH_INDEX, SILVER, SURVIVORS, stage
from lineage.catalog import (
    BRONZE_DOCUMENTS,
    GOVERNANCE_EVAL_ITEMS,
    PREFERENCE_DOMAIN,
    SILVER_DECISIONS,
    SILVER_DOCUMENTS,
)
from lineage.runs import abandoned_runs, curated_version
from lineage.tables import changed_documents, ensure_table, latest_version, session_conf


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


def bind_stages(
    spark: SparkSession,
    lakehouse: str | Path,
    chosen: list[str],
    params: Mapping[str, Any],
    existing: DataFrame | None,
    full: bool,
) -> tuple[list[tuple[str, Stage]], Any]:
    """Each chosen row stage bound to its parameters and to what it needs; also the eval index
    (for the overlap report). Batch checks run later, on the survivors."""
    loaders: dict[str, Callable[[Any], Any]] = {
        SILVER: lambda p: existing,
        MINHASH_INDEX: lambda p: None if full else near_duplicate_index(spark, lakehouse, p),
        EVAL_INDEX: lambda p: eval_index(spark, lakehouse, p.ngram),
    }
    bound: list[tuple[str, Stage]] = []
    needed: dict[str, Any] = {}
    for name in chosen:
        spec = stage(name)
        settings = params[name]
        if spec.needs is None:
            bound.append((name, lambda df, f=spec.apply, p=settings: f(df, p)))
        elif spec.needs != SURVIVORS:
            needed[spec.needs] = loaders[spec.needs](settings)
            bound.append((name, lambda df, f=spec.apply, p=settings, x=needed[spec.needs]: f(df, p, x)))
    return bound, needed.get(EVAL_INDEX)


def eval_index(spark: SparkSession, lakehouse: str | Path, ngram: int) -> Any:
    """The n-gram index of the registered eval sets (`governance.eval_items`; empty when none)."""
    path = GOVERNANCE_EVAL_ITEMS.path(lakehouse)
    items = spark.read.format("delta").load(path) if DeltaTable.isDeltaTable(spark, path) else None
    return load_index(items, ngram)


SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def curate_batch(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    chosen: list[str],
    params: Mapping[str, Any],
    *,
    skipped: dict[str, str],
    full: bool,
    partition_rows: int = 20_000,
    progress: Callable[[str], None] = lambda message: None,
    watch: Callable[[SparkSession, str], AbstractContextManager[None]] = lambda spark, what: nullcontext(),
) -> CurateReport:
    """Curate what bronze gained since the last successful curate run (everything with `full`)
    through the `chosen` stages, with `params` the parameters of every stage by name: redo what
    an abandoned run left, run the row stages, then the batch checks on the survivors, then
    commit to silver (`curation.commit`). No partition of the batch or of a stage's shuffle holds
    more than about `partition_rows` documents. `watch` shows progress of the Spark work."""
    ensure_table(spark, BRONZE_DOCUMENTS, lakehouse)
    silver_table = ensure_table(spark, SILVER_DOCUMENTS, lakehouse)
    decisions_table = ensure_table(spark, SILVER_DECISIONS, lakehouse)
    bronze_path = BRONZE_DOCUMENTS.path(lakehouse)
    bronze_version = latest_version(bronze_path)
    report = CurateReport(run_id, "full" if full else "incremental", bronze_version, 0, 0, skipped=skipped)

    # A run killed half way left decisions without a finished run: they are redone now.
    abandoned = abandoned_runs(lakehouse, "curate", run_id)
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
            report.versions = _versions(lakehouse)
            return report
        upserted, deleted = changed_documents(spark, bronze_path, watermark, bronze_version)
        upserted = upserted.localCheckpoint(eager=True)  # one pass over the change feed, counted and joined
        bronze = bronze.join(upserted, "doc_id", "left_semi")
        expected_rows = upserted.count()
    else:
        expected_rows = bronze.count()  # from the Delta log's statistics, no scan

    # The stages are CPU-bound Python: every core needs a share of the batch, however few files it
    # sits in. And a task's share must stay small, however large the batch: Delta's files are
    # large, and the session's few shuffle partitions suit a small batch.
    parallelism = spark.sparkContext.defaultParallelism
    by_size = -(-expected_rows // max(partition_rows, 1))
    current = bronze.rdd.getNumPartitions()
    if current < parallelism or current < by_size:
        bronze = bronze.repartition(max(2 * parallelism, by_size), "doc_id")
    shuffle = max(by_size, int(spark.conf.get(SHUFFLE_PARTITIONS)))
    with session_conf(spark, {SHUFFLE_PARTITIONS: str(shuffle)}):
        existing = None
        if not full and "exact_dedup" in chosen:
            existing = silver_table.toDF().select(
                "doc_id", "text_sha256", "quality_score", "license_policy", "ingested_at"
            )
        bound, index = bind_stages(spark, lakehouse, chosen, params, existing, full)
        progress(f"curating with stages {', '.join(chosen) or '(none)'}")
        batch = prepare(bronze)
        if "license" not in chosen:  # the declared license still decides the policy
            batch = carry_license(batch, params["license"])
        if bronze.where(F.col("domain") == PREFERENCE_DOMAIN).limit(1).count():
            bound = [("route", route_preference_records), *bound]  # pairs go to `preferences build`
        with watch(spark, "curating"):
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
                result = spec.apply(pipeline.survivors, params[spec.name], chosen)
                report.gate = result.as_json()
                if not result.success:
                    raise GateFailedError(result)
                pipeline.funnel.append(StageCounts(spec.name, pipeline.rows_out, kept=pipeline.rows_out))
                report.stages = [c.as_json() for c in pipeline.funnel]
            fuzzy = params["fuzzy_dedup"]
            gated = any(stage(name).needs == SURVIVORS for name in chosen)
            planned = CommittedBatch(bronze_version, deleted, full, gated=gated, index_digest=fuzzy.index_digest())
            committed = commit_batch(spark, lakehouse, run_id, pipeline, planned, progress)
            report.silver, report.superseded = committed.silver, committed.superseded
            report.versions = _versions(lakehouse)
        finally:
            pipeline.release()
    return report


def _versions(lakehouse: str | Path) -> dict[str, int]:
    return {spec.name: latest_version(spec.path(lakehouse)) for spec in (SILVER_DOCUMENTS, SILVER_DECISIONS)}
