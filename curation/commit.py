"""Committing a curated batch: `silver.decisions`, `silver.documents`, `lineage.edges` and the
near-duplicate and PII indexes, in an order a killed run can redo.

The job hands over the pipeline's result (`curation.pipeline.PipelineRun`) and what it planned
(`CommittedBatch`); this module knows the tables' semantics: which rows leave silver (dropped
now, displaced by a better copy, deleted upstream), how the indexes stay in step, and that the
MERGE must write exactly the funnel's survivors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.decisions import DECISION, DROPPED, KEPT, decision
from curation.exact_dedup import EXACT_DUPLICATE
from curation.fuzzy_dedup import NEAR_DUPLICATE, FuzzyDedupParams
from curation.pipeline import PipelineRun
from curation.ranking import displaced_rows
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DECISIONS, SILVER_DOCUMENTS, SILVER_MINHASH, SILVER_PII_INDEX
from lineage.edges import CURATE_RELATIONS, DERIVED_FROM, DUPLICATE_OF, SCRUBBED_FROM, edges, replace_edges
from lineage.errors import MillpondError
from lineage.tables import ensure_table, latest_version

UPSTREAM_DELETED = "deleted_from_bronze"
# (stage, the column of its output that lists displaced silver documents, their reason)
DISPLACING_STAGES = (
    ("exact_dedup", "_displaced_exact", EXACT_DUPLICATE),
    ("fuzzy_dedup", "_displaced", NEAR_DUPLICATE),
)


# silver.minhash's columns and the fuzzy_dedup stage's names for them: a document's signature,
# band hashes and the keep rule's inputs.
INDEX_COLUMNS = {
    "signature": "_signature",
    "bands": "_bands",
    "quality_score": "quality_score",
    "license_policy": "license_policy",
    "ingested_at": "ingested_at",
}


class CurateReconciliationError(MillpondError, RuntimeError):
    """The rows written do not match the funnel."""


class IndexSettingsError(MillpondError, ValueError):
    """silver.minhash holds signatures made with other near-duplicate settings."""


@dataclass(frozen=True)
class CommittedBatch:
    """What the job planned for this batch, besides the pipeline's result."""

    bronze_version: int  # the bronze version the batch was read at
    deleted: DataFrame | None  # doc_ids deleted from bronze since the last run
    full: bool  # a full run: silver rows outside the batch go
    gated: bool  # the quality gate ran and passed: one `kept` decision per survivor
    index_digest: str  # the near-duplicate settings the stored signatures were made with


@dataclass(frozen=True)
class SilverCommit:
    """What the commit wrote: silver rows inserted, updated and deleted, and how many silver
    documents a better copy in the batch displaced."""

    silver: dict[str, int]
    superseded: int


def _quiet(message: str) -> None:
    """No progress lines."""


def silver_rows(frame: DataFrame, stamps: dict[str, Any]) -> DataFrame:
    """The survivors in `silver.documents`' columns and types, with the run's stamps."""
    columns = []
    for f in SILVER_DOCUMENTS.schema.fields:
        if f.name in stamps:
            columns.append(F.lit(stamps[f.name]).cast(f.dataType).alias(f.name))
        elif f.name == "text_sha256":
            columns.append(F.coalesce(F.col("text_sha256"), F.sha2(F.col("text"), 256)).alias(f.name))
        else:
            columns.append(F.col(f.name).cast(f.dataType).alias(f.name))
    return frame.select(*columns)


def commit_batch(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    pipeline: PipelineRun,
    batch: CommittedBatch,
    progress: Callable[[str], None] = _quiet,
) -> SilverCommit:
    """Decisions first (appended under this run's id), then one MERGE into silver.documents, then
    the lineage edges, the near-duplicate index and the PII index. A run killed between them is
    redone whole by the next run."""
    survivors, deleted, full = pipeline.survivors, batch.deleted, batch.full
    superseded = 0
    now = datetime.now(UTC)
    decisions = pipeline.decisions
    if batch.gated:
        gate_rows = survivors.select("doc_id", F.lit("gate").alias("stage"), decision(KEPT).alias(DECISION))
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
            superseded += count
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
            F.lit(run_id).alias("run_id"),
            F.lit(now).alias("decided_at"),
        )
        progress(f"writing decisions to {SILVER_DECISIONS.name}")
        rows.write.format("delta").mode("append").save(SILVER_DECISIONS.path(lakehouse))

    # What leaves silver: rows of this batch that were dropped now, displaced copies, deletions upstream.
    batch_ids = pipeline.batch.select("doc_id")
    dropped_now = batch_ids.join(survivors.select("doc_id"), "doc_id", "left_anti")
    removed_ids = dropped_now if removed_ids is None else removed_ids.unionByName(dropped_now)
    keep = silver_rows(
        survivors, {"bronze_version": batch.bronze_version, "curate_run_id": run_id, "curated_at": now}
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
    progress(f"merging {pipeline.rows_out} documents into {SILVER_DOCUMENTS.name}")
    metrics = merge.execute().first()
    done = metrics.asDict() if metrics is not None else {}
    silver = {
        "inserted": int(done.get("num_inserted_rows") or 0),
        "updated": int(done.get("num_updated_rows") or 0),
        "deleted": int(done.get("num_deleted_rows") or 0),
    }
    if silver["inserted"] + silver["updated"] != pipeline.rows_out:
        raise CurateReconciliationError(
            f"{SILVER_DOCUMENTS.name}: the funnel ends with {pipeline.rows_out} documents but the MERGE wrote "
            f"{silver['inserted']} new and {silver['updated']} updated"
        )
    _write_edges(spark, lakehouse, run_id, pipeline, decisions, removed_ids, full, progress)
    if "fuzzy_dedup" in pipeline.outputs:
        demoted = removed_ids.distinct()  # displaced silver documents, and this batch's drops
        _update_index(spark, lakehouse, run_id, pipeline, demoted, deleted, full, batch.index_digest, progress)
    _update_pii_index(spark, lakehouse, run_id, pipeline, removed_ids, full, progress)
    return SilverCommit(silver=silver, superseded=superseded)


def _write_edges(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    pipeline: PipelineRun,
    decisions: DataFrame | None,
    removed_ids: DataFrame,
    full: bool,
    progress: Callable[[str], None],
) -> None:
    """lineage.edges for this batch: each silver document from its bronze record (scrubbed or
    derived), each duplicate to the copy kept. The edges of every touched document are replaced."""
    survivors = pipeline.survivors
    version = latest_version(SILVER_DOCUMENTS.path(lakehouse))
    scrubbed = F.when(F.size("pii_counts") > 0, SCRUBBED_FROM).otherwise(DERIVED_FROM)
    rows = edges(
        survivors, child="doc_id", child_table=SILVER_DOCUMENTS.name, parent="doc_id",
        parent_table=BRONZE_DOCUMENTS.name, relation=scrubbed, run_id=run_id, table_version=version,
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
                run_id=run_id,
                table_version=version,
                cluster="cluster_id",
            )  # fmt: skip
        )
    touched = pipeline.batch.select("doc_id").unionByName(removed_ids.select("doc_id"))
    progress("writing lineage edges")
    replace_edges(spark, lakehouse, rows, touched, CURATE_RELATIONS, everything=full)


def _update_pii_index(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    pipeline: PipelineRun,
    removed_ids: DataFrame,
    full: bool,
    progress: Callable[[str], None],
) -> None:
    """Keep silver.pii_index in step with silver.documents: the rows of every document this batch
    touched or removed are replaced by what the pii stage found in the survivors (none when the
    stage did not run), in one MERGE after silver's. A run killed between the two is redone whole
    by the next run."""
    path = SILVER_PII_INDEX.path(lakehouse)
    if "pii" not in pipeline.outputs and not DeltaTable.isDeltaTable(spark, path):
        return
    table = ensure_table(spark, SILVER_PII_INDEX, lakehouse)
    touched = pipeline.batch.select("doc_id").unionByName(removed_ids.select("doc_id")).distinct()
    # One MERGE, one commit: a `clear` row per touched document deletes its rows, and what the
    # stage found is inserted beside them (the stage lists each finding once per document).
    nothing = [F.lit(None).cast("string").alias(c) for c in ("entity_type", "value_hmac")]
    source = touched.select("doc_id", *nothing, F.lit(run_id).alias("curate_run_id"), F.lit("clear").alias("_op"))
    if "pii" in pipeline.outputs:
        found = pipeline.survivors.select("doc_id", F.explode("_pii_hashes").alias("h")).select(
            "doc_id",
            "h.entity_type",
            "h.value_hmac",
            F.lit(run_id).alias("curate_run_id"),
            F.lit("insert").alias("_op"),
        )
        source = source.unionByName(found)
    values = {c: f"s.`{c}`" for c in SILVER_PII_INDEX.schema.fieldNames()}
    merge = (
        table.alias("t")
        .merge(source.alias("s"), "t.doc_id = s.doc_id AND s._op = 'clear'")
        .whenMatchedDelete()
        .whenNotMatchedInsert(condition="s._op = 'insert'", values=values)
    )
    if full:
        merge = merge.whenNotMatchedBySourceDelete()
    progress(f"updating {SILVER_PII_INDEX.name}")
    merge.execute()


def _update_index(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    pipeline: PipelineRun,
    demoted: DataFrame,
    deleted: DataFrame | None,
    full: bool,
    digest: str,
    progress: Callable[[str], None],
) -> None:
    """Bring silver.minhash up to date: every document that reached fuzzy_dedup in this batch with
    its signature (`kept` if silver now holds it, else `dropped`), silver documents that left
    silver marked `dropped`, and re-curated documents that no longer reach the stage removed.
    Old signatures are never recomputed."""
    table = ensure_table(spark, SILVER_MINHASH, lakehouse)
    reached = pipeline.outputs["fuzzy_dedup"]
    in_silver = pipeline.survivors.select("doc_id", F.lit(True).alias("_in_silver"))
    upserts = reached.join(in_silver, "doc_id", "left").select(
        "doc_id",
        *[F.col(column).alias(stored) for stored, column in INDEX_COLUMNS.items()],
        F.when(F.col("_in_silver"), "kept").otherwise("dropped").alias("status"),
        F.lit(digest).alias("params_digest"),
        F.lit(run_id).alias("curate_run_id"),
        F.lit("upsert").alias("_op"),
    )
    empty = {f.name: F.lit(None).cast(f.dataType) for f in SILVER_MINHASH.schema.fields}
    empty["curate_run_id"] = F.lit(run_id)

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


def near_duplicate_index(spark: SparkSession, lakehouse: str | Path, params: FuzzyDedupParams) -> DataFrame | None:
    """The stored signatures of earlier runs, with their keep-rule columns and eligibility."""
    path = SILVER_MINHASH.path(lakehouse)
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    stored = spark.read.format("delta").load(path)
    digests = [r[0] for r in stored.select("params_digest").distinct().collect()]
    if any(d != params.index_digest() for d in digests):
        raise IndexSettingsError(
            f"{SILVER_MINHASH.name} holds signatures made with other [curate.fuzzy_dedup] settings "
            "(num_perm, ngram, shingle, seed, the bands or the shingle hashing changed): run `millpond curate --full` to rebuild it"
        )
    return stored.select(
        "doc_id",
        *[F.col(column).alias(name) for column, name in INDEX_COLUMNS.items()],
        (F.col("status") == "kept").alias("eligible"),
    )


def run_findings(lakehouse: Any, run_id: str) -> tuple[list[int], dict[str, int]]:
    """(the size of every near-duplicate cluster a curate run found, the PII values it indexed by
    entity type), from the tables it wrote."""
    from collections import Counter

    import pyarrow.dataset as ds

    from lineage.tables import read_table

    near = read_table(SILVER_DECISIONS, lakehouse, ["duplicate_of"],
                      where=(ds.field("run_id") == run_id) & (ds.field("reason") == NEAR_DUPLICATE))  # fmt: skip
    kept = Counter(v for v in ([] if near is None else near.column("duplicate_of").to_pylist()) if v)
    found = read_table(SILVER_PII_INDEX, lakehouse, ["entity_type"], where=ds.field("curate_run_id") == run_id)
    pii = Counter([] if found is None else found.column("entity_type").to_pylist())
    return [1 + n for n in kept.values()], dict(pii)
