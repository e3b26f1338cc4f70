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
from datetime import UTC, datetime
from typing import Any

import click
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.classifier import ClassifierParams, classifier, model_file
from curation.decisions import DECISION, DROPPED, decision
from curation.decontaminate import DecontaminateParams, decontaminate, load_index, overlap_report
from curation.exact_dedup import EXACT_DUPLICATE, ExactDedupParams, exact_dedup
from curation.fuzzy_dedup import NEAR_DUPLICATE, FuzzyDedupParams, fuzzy_dedup
from curation.gate import GateFailedError, GateParams, GateResult, validate
from curation.language import LanguageParams, language, model_path
from curation.licensing import LicenseParams, carry_license, license_stage
from curation.normalize import NormalizeParams, normalize
from curation.pii import PiiParams, check_ready, pii
from curation.pipeline import STAGES, PipelineRun, Stage, StageCounts, prepare, run_stages
from curation.quality import QualityParams, quality
from curation.ranking import displaced_rows
from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options, spark_progress
from lineage.catalog import (
    BRONZE_DOCUMENTS,
    GOVERNANCE_EVAL_ITEMS,
    LINEAGE_RUNS,
    SILVER_DECISIONS,
    SILVER_DOCUMENTS,
    SILVER_MINHASH,
    SILVER_PII_INDEX,
)
from lineage.edges import CURATE_RELATIONS, DERIVED_FROM, DUPLICATE_OF, SCRUBBED_FROM, edges, replace_edges
from lineage.errors import MillpondError
from lineage.runs import ERASE_JOB, Run, recorded_run
from lineage.tables import ensure_table, latest_version, read_table

UPSTREAM_DELETED = "deleted_from_bronze"
# (stage, the column of its output that lists displaced silver documents, their reason)
DISPLACING_STAGES = (
    ("exact_dedup", "_displaced_exact", EXACT_DUPLICATE),
    ("fuzzy_dedup", "_displaced", NEAR_DUPLICATE),
)


class CurateError(MillpondError, ValueError):
    """A curate request that cannot run as asked (unknown or unbuilt stage, missing model)."""


class CurateReconciliationError(MillpondError, RuntimeError):
    """The rows written do not match the funnel."""


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


def plan_stages(requested: list[str] | None, config: Config) -> tuple[list[str], dict[str, str]]:
    """The stages to run and those skipped with why; refuses unknown, unbuilt or unrunnable ones."""
    section = config.section("curate")
    if requested:
        unknown = [s for s in requested if s not in STAGES]
        if unknown:
            raise CurateError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        chosen = [s for s in STAGES if s in requested]
        skipped: dict[str, str] = {}
        if "classifier" in chosen:
            model_file(params_from(ClassifierParams, section["classifier"]))
    else:
        chosen, skipped = [], {}
        for stage in STAGES:
            if stage == "classifier" and not section["classifier"]["model"]:
                skipped[stage] = "no model: set [curate.classifier] model (see `millpond classifier train`)"
            else:
                chosen.append(stage)
    if "language" in chosen:
        model_path(params_from(LanguageParams, section["language"]))
    if "pii" in chosen:
        check_ready(params_from(PiiParams, section["pii"]))  # the key and the spaCy model, before Spark works
    return chosen, skipped


def curated_version(lakehouse: Any) -> int | None:
    """The bronze version the last successful curate run read (the incremental watermark)."""
    columns = ["job", "status", "input_versions", "output_versions", "started_at"]
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=columns)
    if runs is None:
        return None
    watermark = None
    for r in sorted(runs.to_pylist(), key=lambda r: r["started_at"]):
        if r["status"] != "succeeded":
            continue
        read = dict(r["input_versions"] or []).get(BRONZE_DOCUMENTS.name)
        if r["job"] == "curate" and read is not None:
            watermark = read
        elif r["job"] == ERASE_JOB and read is not None and read == watermark:
            # An erasure already removed its rows from silver, and vacuumed the change data of its
            # own commits: a curate run that was up to date before it is up to date after it.
            watermark = dict(r["output_versions"] or []).get(BRONZE_DOCUMENTS.name, watermark)
    return watermark


def _abandoned_runs(lakehouse: Any, current: str) -> list[str]:
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=["run_id", "job", "status"])
    if runs is None:
        return []
    return [
        r["run_id"]
        for r in runs.to_pylist()
        if r["job"] == "curate" and r["status"] != "succeeded" and r["run_id"] != current
    ]


def changed_documents(spark: SparkSession, path: str, since: int, until: int) -> tuple[DataFrame, DataFrame]:
    """(doc_ids inserted or updated, doc_ids deleted) in bronze after version `since` up to `until`."""
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", since + 1)
        .option("endingVersion", until)
        .load(path)
        .select("doc_id", "_change_type", "_commit_version")
    )
    last = changes.groupBy("doc_id").agg(F.max_by("_change_type", "_commit_version").alias("change"))
    upserted = last.where(F.col("change").isin("insert", "update_postimage")).select("doc_id")
    deleted = last.where(F.col("change") == "delete").select("doc_id")
    return upserted, deleted


# Stages that need nothing but their rows and parameters.
ROW_STAGES: dict[str, tuple[type, Callable[[DataFrame, Any], DataFrame]]] = {
    "normalize": (NormalizeParams, normalize),
    "language": (LanguageParams, language),
    "quality": (QualityParams, quality),
    "classifier": (ClassifierParams, classifier),
    "license": (LicenseParams, license_stage),
    "pii": (PiiParams, pii),
}


def build_stages(
    spark: SparkSession, config: Config, chosen: list[str], existing: DataFrame | None, full: bool
) -> tuple[list[tuple[str, Stage]], Any]:
    """Each chosen stage bound to its parameters; also the eval index (for the overlap report)."""
    section = config.section("curate")
    eval_index = None
    bound: list[tuple[str, Stage]] = []
    for name in chosen:
        if name == "gate":
            continue  # validated on the survivors, see run_curate
        if name in ROW_STAGES:
            cls, stage = ROW_STAGES[name]
            p_row = params_from(cls, section[name])
            bound.append((name, lambda df, f=stage, p=p_row: f(df, p)))
        elif name == "exact_dedup":
            p_dedup = params_from(ExactDedupParams, section[name])
            bound.append((name, lambda df, p=p_dedup: exact_dedup(df, p, existing)))
        elif name == "fuzzy_dedup":
            p_fuzzy = params_from(FuzzyDedupParams, section[name])
            index = None if full else near_duplicate_index(spark, config, p_fuzzy)
            bound.append((name, lambda df, p=p_fuzzy, ix=index: fuzzy_dedup(df, p, ix)))
        elif name == "decontaminate":
            p_dec = params_from(DecontaminateParams, section[name])
            eval_table = GOVERNANCE_EVAL_ITEMS.path(config.lakehouse)
            items = spark.read.format("delta").load(eval_table) if DeltaTable.isDeltaTable(spark, eval_table) else None
            eval_index = load_index(items, p_dec.ngram)
            bound.append((name, lambda df, p=p_dec, ix=eval_index: decontaminate(df, p, ix)))
    return bound, eval_index


def near_duplicate_index(spark: SparkSession, config: Config, params: FuzzyDedupParams) -> DataFrame | None:
    """The stored signatures of earlier runs, with their keep-rule columns and eligibility."""
    path = SILVER_MINHASH.path(config.lakehouse)
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    stored = spark.read.format("delta").load(path)
    digests = [r[0] for r in stored.select("params_digest").distinct().collect()]
    if any(d != params.index_digest() for d in digests):
        raise CurateError(
            f"{SILVER_MINHASH.name} holds signatures made with other [curate.fuzzy_dedup] settings "
            "(num_perm, ngram, shingle, seed, the bands or the shingle hashing changed): run `millpond curate --full` to rebuild it"
        )
    return stored.select(
        "doc_id",
        F.col("signature").alias("_signature"),
        F.col("bands").alias("_bands"),
        "quality_score",
        "license_policy",
        "ingested_at",
        (F.col("status") == "kept").alias("eligible"),
    )


def _silver_rows(frame: DataFrame, stamps: dict[str, Any]) -> DataFrame:
    columns = []
    for f in SILVER_DOCUMENTS.schema.fields:
        if f.name in stamps:
            columns.append(F.lit(stamps[f.name]).cast(f.dataType).alias(f.name))
        elif f.name == "text_sha256":
            columns.append(F.coalesce(F.col("text_sha256"), F.sha2(F.col("text"), 256)).alias(f.name))
        else:
            columns.append(F.col(f.name).cast(f.dataType).alias(f.name))
    return frame.select(*columns)


def run_curate(
    spark: SparkSession, config: Config, stages: list[str] | None = None, full: bool = False
) -> CurateReport:
    """Curate what bronze gained since the last successful run (or everything, with `full`)."""
    lakehouse = config.lakehouse
    chosen, skipped = plan_stages(stages, config)
    run = Run(job="curate", config_digest=config.digest(), params={"stages": chosen, "full": full})

    def keep_gate_result(err: BaseException) -> None:
        if isinstance(err, GateFailedError):
            run.reports["gate"] = json.dumps(err.result.as_json())

    with recorded_run(spark, lakehouse, run, on_failure=keep_gate_result):
        report = _curate(spark, config, chosen, skipped, full, run)
        run.counts = {"in": report.rows_in, "out": report.rows_out, "superseded": report.superseded} | {
            f"silver_{k}": v for k, v in report.silver.items()
        }
        for stage in report.stages:
            for reason, count in stage["dropped"].items():
                run.counts[f"{stage['stage']}:{reason}"] = count
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
    abandoned = _abandoned_runs(lakehouse, run.run_id)
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
        batch = carry_license(batch, params_from(LicenseParams, config.section("curate")["license"]))
    with spark_progress(spark, "curating"):
        pipeline = run_stages(batch, bound, progress)
    try:
        report.rows_in = pipeline.rows_in
        report.rows_out = pipeline.rows_out
        report.stages = [c.as_json() for c in pipeline.funnel]
        if index is not None and "decontaminate" in pipeline.outputs:
            report.overlap = overlap_report(index, pipeline.outputs["decontaminate"])

        survivors = pipeline.survivors
        if "gate" in chosen:
            gate_params = params_from(GateParams, config.section("curate")["gate"])
            progress("validating the batch (quality gate)")
            result = validate(
                survivors,
                check_lang="language" in chosen,
                check_license="license" in chosen,
                check_pii=gate_params.residual_pii == "on" or (gate_params.residual_pii == "auto" and "pii" in chosen),
            )
            report.gate = result.as_json()
            if not result.success:
                raise GateFailedError(result)
            pipeline.funnel.append(StageCounts("gate", pipeline.rows_out, kept=pipeline.rows_out))
            report.stages = [c.as_json() for c in pipeline.funnel]
        fuzzy = params_from(FuzzyDedupParams, config.section("curate")["fuzzy_dedup"])
        _commit(
            spark, lakehouse, run, pipeline, survivors, bronze_version, deleted, full, chosen, report,
            fuzzy.index_digest(),
        )  # fmt: skip
        report.versions = _versions(silver_table, decisions_table)
    finally:
        pipeline.release()
    return report


def _versions(silver_table: DeltaTable, decisions_table: DeltaTable) -> dict[str, int]:
    return {SILVER_DOCUMENTS.name: latest_version(silver_table), SILVER_DECISIONS.name: latest_version(decisions_table)}


def _commit(
    spark: SparkSession,
    lakehouse: Any,
    run: Run,
    pipeline: PipelineRun,
    survivors: DataFrame,
    bronze_version: int,
    deleted: DataFrame | None,
    full: bool,
    chosen: list[str],
    report: CurateReport,
    params_digest: str,
) -> None:
    """Decisions first (appended under this run's id), then one MERGE into silver.documents, then
    the near-duplicate index. A run killed between them is redone whole by the next run."""
    now = datetime.now(UTC)
    decisions = pipeline.decisions
    if "gate" in chosen:
        gate_rows = survivors.select("doc_id", F.lit("gate").alias("stage"), decision("kept").alias(DECISION))
        gate_rows = gate_rows.select("doc_id", "stage", f"{DECISION}.*")
        decisions = gate_rows if decisions is None else decisions.unionByName(gate_rows)
    extra = []
    removed_ids = None
    # Silver documents a better copy in this batch displaced, as the dedup stages found them; one
    # displaced by both stages is recorded once, by the first.
    for stage, column, reason in DISPLACING_STAGES:
        if stage not in pipeline.outputs:
            continue
        ousted = displaced_rows(pipeline.outputs[stage], column, reason)
        if removed_ids is not None:
            ousted = ousted.join(removed_ids, "doc_id", "left_anti")
        ousted = ousted.localCheckpoint(eager=True)
        count = ousted.count()
        if count:
            report.superseded += count
            extra.append(ousted.select("doc_id", F.lit(stage).alias("stage"), f"{DECISION}.*"))
            ids = ousted.select("doc_id")
            removed_ids = ids if removed_ids is None else removed_ids.unionByName(ids)
    if deleted is not None:
        upstream = deleted.select(
            "doc_id", F.lit("bronze").alias("stage"), decision(DROPPED, UPSTREAM_DELETED).alias(DECISION)
        ).select("doc_id", "stage", f"{DECISION}.*")
        extra.append(upstream)
        removed_ids = deleted if removed_ids is None else removed_ids.unionByName(deleted)
    for more in extra:
        decisions = more if decisions is None else decisions.unionByName(more)
    if decisions is not None:
        rows = decisions.select(
            *SILVER_DECISIONS.schema.fieldNames()[:-2],
            F.lit(run.run_id).alias("run_id"),
            F.lit(now).alias("decided_at"),
        )
        progress(f"writing decisions to {SILVER_DECISIONS.name}")
        rows.write.format("delta").mode("append").save(SILVER_DECISIONS.path(lakehouse))

    # What leaves silver: rows of this batch that were dropped now, displaced copies, deletions upstream.
    batch_ids = pipeline.batch.select("doc_id")
    dropped_now = batch_ids.join(survivors.select("doc_id"), "doc_id", "left_anti")
    removed_ids = dropped_now if removed_ids is None else removed_ids.unionByName(dropped_now)
    keep = _silver_rows(
        survivors, {"bronze_version": bronze_version, "curate_run_id": run.run_id, "curated_at": now}
    ).withColumn("_remove", F.lit(False))
    remove = removed_ids.distinct().select(
        *[
            F.lit(None).cast(f.dataType).alias(f.name) if f.name != "doc_id" else F.col("doc_id")
            for f in SILVER_DOCUMENTS.schema.fields
        ],
        F.lit(True).alias("_remove"),
    )
    source = keep.unionByName(remove)
    columns = SILVER_DOCUMENTS.schema.fieldNames()
    values = {c: f"s.`{c}`" for c in columns}
    silver_table = DeltaTable.forPath(spark, SILVER_DOCUMENTS.path(lakehouse))
    merge = (
        silver_table.alias("t")
        .merge(source.alias("s"), "t.doc_id = s.doc_id")
        .whenMatchedDelete(condition="s._remove")
        .whenMatchedUpdate(condition="NOT s._remove", set=values)
        .whenNotMatchedInsert(condition="NOT s._remove", values=values)
    )
    if full:
        merge = merge.whenNotMatchedBySourceDelete()
    progress(f"merging {report.rows_out} documents into {SILVER_DOCUMENTS.name}")
    metrics = merge.execute().first()
    done = metrics.asDict() if metrics is not None else {}
    report.silver = {
        "inserted": int(done.get("num_inserted_rows") or 0),
        "updated": int(done.get("num_updated_rows") or 0),
        "deleted": int(done.get("num_deleted_rows") or 0),
    }
    if report.silver["inserted"] + report.silver["updated"] != report.rows_out:
        raise CurateReconciliationError(
            f"{SILVER_DOCUMENTS.name}: the funnel ends with {report.rows_out} documents but the MERGE wrote "
            f"{report.silver['inserted']} new and {report.silver['updated']} updated"
        )
    _write_edges(spark, lakehouse, run, pipeline, survivors, decisions, removed_ids, full, silver_table)
    if "fuzzy_dedup" in pipeline.outputs:
        demoted = removed_ids.distinct()  # displaced silver documents, and this batch's drops
        _update_index(spark, lakehouse, run, pipeline, survivors, demoted, deleted, full, params_digest)
    _update_pii_index(spark, lakehouse, run, pipeline, survivors, removed_ids, full)


def _write_edges(
    spark: SparkSession,
    lakehouse: Any,
    run: Run,
    pipeline: PipelineRun,
    survivors: DataFrame,
    decisions: DataFrame | None,
    removed_ids: DataFrame,
    full: bool,
    silver_table: DeltaTable,
) -> None:
    """lineage.edges for this batch: each silver document from its bronze record (scrubbed or
    derived), each duplicate to the copy kept. The edges of every touched document are replaced."""
    version = latest_version(silver_table)
    scrubbed = F.when(F.size("pii_counts") > 0, SCRUBBED_FROM).otherwise(DERIVED_FROM)
    rows = edges(
        survivors, child="doc_id", child_table=SILVER_DOCUMENTS.name, parent="doc_id",
        parent_table=BRONZE_DOCUMENTS.name, relation=scrubbed, run_id=run.run_id, table_version=version,
    )  # fmt: skip
    if decisions is not None:
        copies = decisions.where(F.col("duplicate_of").isNotNull())
        rows = rows.unionByName(
            edges(
                copies,
                child="doc_id",
                child_table=BRONZE_DOCUMENTS.name,
                parent="duplicate_of",
                parent_table=SILVER_DOCUMENTS.name,
                relation=DUPLICATE_OF,
                run_id=run.run_id,
                table_version=version,
                cluster="cluster_id",
            )  # fmt: skip
        )
    touched = pipeline.batch.select("doc_id").unionByName(removed_ids.select("doc_id"))
    progress("writing lineage edges")
    replace_edges(spark, lakehouse, rows, touched, CURATE_RELATIONS, everything=full)


def _update_pii_index(
    spark: SparkSession,
    lakehouse: Any,
    run: Run,
    pipeline: PipelineRun,
    survivors: DataFrame,
    removed_ids: DataFrame,
    full: bool,
) -> None:
    """Keep silver.pii_index in step with silver.documents: the rows of every document this batch
    touched or removed are replaced by what the pii stage found in the survivors (none when the
    stage did not run). A run killed between the two writes is redone whole by the next run."""
    path = SILVER_PII_INDEX.path(lakehouse)
    if "pii" not in pipeline.outputs and not DeltaTable.isDeltaTable(spark, path):
        return
    table = ensure_table(spark, SILVER_PII_INDEX, lakehouse)
    touched = pipeline.batch.select("doc_id").unionByName(removed_ids.select("doc_id")).distinct()
    clear = table.alias("t").merge(touched.alias("s"), "t.doc_id = s.doc_id").whenMatchedDelete()
    if full:
        clear = clear.whenNotMatchedBySourceDelete()
    progress(f"updating {SILVER_PII_INDEX.name}")
    clear.execute()
    if "pii" not in pipeline.outputs:
        return
    rows = survivors.select("doc_id", F.explode("_pii_hashes").alias("h")).select(
        "doc_id", "h.entity_type", "h.value_hmac", F.lit(run.run_id).alias("curate_run_id")
    )
    keys = " AND ".join(f"t.{c} = s.{c}" for c in SILVER_PII_INDEX.key)
    table.alias("t").merge(rows.alias("s"), keys).whenNotMatchedInsertAll().execute()


def _update_index(
    spark: SparkSession,
    lakehouse: Any,
    run: Run,
    pipeline: PipelineRun,
    survivors: DataFrame,
    demoted: DataFrame,
    deleted: DataFrame | None,
    full: bool,
    digest: str,
) -> None:
    """Bring silver.minhash up to date: every document that reached fuzzy_dedup in this batch with
    its signature (`kept` if silver now holds it, else `dropped`), silver documents that left
    silver marked `dropped`, and re-curated documents that no longer reach the stage removed.
    Old signatures are never recomputed."""
    table = ensure_table(spark, SILVER_MINHASH, lakehouse)
    reached = pipeline.outputs["fuzzy_dedup"]
    in_silver = survivors.select("doc_id", F.lit(True).alias("_in_silver"))
    upserts = reached.join(in_silver, "doc_id", "left").select(
        "doc_id",
        F.col("_signature").alias("signature"),
        F.col("_bands").alias("bands"),
        "quality_score",
        "license_policy",
        "ingested_at",
        F.when(F.col("_in_silver"), "kept").otherwise("dropped").alias("status"),
        F.lit(digest).alias("params_digest"),
        F.lit(run.run_id).alias("curate_run_id"),
        F.lit("upsert").alias("_op"),
    )
    empty = {f.name: F.lit(None).cast(f.dataType) for f in SILVER_MINHASH.schema.fields}
    empty["curate_run_id"] = F.lit(run.run_id)

    def ops(ids: DataFrame, op: str) -> DataFrame:
        return ids.select(
            "doc_id", *[empty[c].alias(c) for c in SILVER_MINHASH.schema.fieldNames()[1:]], F.lit(op).alias("_op")
        )

    batch_ids = pipeline.batch.select("doc_id")
    gone = batch_ids.join(reached.select("doc_id"), "doc_id", "left_anti")  # dropped before the stage now
    if deleted is not None:
        gone = gone.unionByName(deleted.select("doc_id"))
    demote = demoted.join(batch_ids, "doc_id", "left_anti").join(gone, "doc_id", "left_anti")
    source = upserts.unionByName(ops(demote, "demote")).unionByName(ops(gone, "delete"))
    values = {c: f"s.`{c}`" for c in SILVER_MINHASH.schema.fieldNames()}
    merge = (
        table.alias("t")
        .merge(source.alias("s"), "t.doc_id = s.doc_id")
        .whenMatchedDelete(condition="s._op = 'delete'")
        .whenMatchedUpdate(
            condition="s._op = 'demote'", set={"status": "'dropped'", "curate_run_id": "s.curate_run_id"}
        )
        .whenMatchedUpdate(condition="s._op = 'upsert'", set=values)
        .whenNotMatchedInsert(condition="s._op = 'upsert'", values=values)
    )
    if full:
        merge = merge.whenNotMatchedBySourceDelete()
    progress(f"updating the near-duplicate index {SILVER_MINHASH.name}")
    merge.execute()


def print_report(report: CurateReport) -> None:
    click.echo(f"curate run {report.run_id} ({report.mode}, bronze v{report.bronze_version})")
    if report.mode == "nothing_new":
        click.echo("nothing new in bronze since the last curate run: silver unchanged")
        return
    click.echo(f"  {'stage':<14} {'in':>9} {'kept':>9} {'modified':>9} {'dropped':>9}  reasons")
    for stage in report.stages:
        dropped = sum(stage["dropped"].values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stage["dropped"].items(), key=lambda kv: -kv[1]))
        click.echo(
            f"  {stage['stage']:<14} {stage['in']:>9} {stage['kept']:>9} {stage['modified']:>9} {dropped:>9}  {reasons}"
        )
    click.echo(f"rows in {report.rows_in} -> rows out {report.rows_out}")
    for stage, why in report.skipped.items():
        click.echo(f"  skipped {stage}: {why}")
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
@click.option("--stages", default=None, help=f"Comma-separated subset of: {', '.join(STAGES)} (default: all built).")
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
