"""`exact_dedup`: one document per distinct cleaned text, chosen by a deterministic keep rule.

The keep rule, shared with fuzzy dedup: highest quality score, then preferred license (allowed
for the preferred purpose, then not allowed, then unknown), then earliest ingest, then
smallest `doc_id`. Documents already in silver take part: a new copy that ranks higher
displaces the silver one (see `displaced`), so incremental runs keep what one full run keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from curation.decisions import DECISION, DROPPED, decision, kept

EXACT_DUPLICATE = "exact_duplicate"


@dataclass(frozen=True)
class ExactDedupParams:
    """The `[curate.exact_dedup]` section."""

    preferred_purpose: str = "pretraining"  # copies whose license this purpose allows win ties on quality


def keep_order(preferred_purpose: str = "pretraining") -> list[Column]:
    """Sort order of the copies of one document: the first one is kept."""
    policy = F.col("license_policy")[preferred_purpose]
    license_rank = F.when(policy == "allowed", 0).when(policy == "not_allowed", 1).otherwise(2)
    return [
        F.col("quality_score").desc_nulls_last(),
        license_rank.asc(),
        F.col("ingested_at").asc_nulls_last(),
        F.col("doc_id").asc(),
    ]


_RANKED_COLUMNS = ["doc_id", "text_sha256", "quality_score", "license_policy", "ingested_at"]


def with_text_hash(frame: DataFrame) -> DataFrame:
    return frame.withColumn("text_sha256", F.sha2(F.col("text"), 256))


def _ranked(batch: DataFrame, existing: DataFrame | None, params: ExactDedupParams) -> DataFrame:
    """Every copy (batch and silver) with the id of its group's kept copy and the group size."""
    copies = batch.select(*_RANKED_COLUMNS, F.lit(False).alias("_existing"))
    if existing is not None:
        # a silver row that this batch re-curates is replaced by its new version
        older = existing.select(*_RANKED_COLUMNS).join(batch.select("doc_id"), "doc_id", "left_anti")
        copies = copies.unionByName(older.withColumn("_existing", F.lit(True)))
    group = Window.partitionBy("text_sha256")
    ordered = group.orderBy(*keep_order(params.preferred_purpose))
    return (
        copies.withColumn("_kept_id", F.first("doc_id").over(ordered.rowsBetween(Window.unboundedPreceding, 0)))
        .withColumn("_copies", F.count("*").over(group))
        .withColumn("_cluster", F.concat(F.lit("exact:"), F.substring("text_sha256", 1, 32)))
    )


def exact_dedup(frame: DataFrame, params: ExactDedupParams, existing: DataFrame | None = None) -> DataFrame:
    """Add `text_sha256`; keep one copy of each text, drop the others with `duplicate_of`.

    `existing`: silver documents (with `text_sha256`) the batch is deduplicated against. The
    silver copies a batch copy outranks come out in `_displaced_exact` (doc_id, kept_id,
    _cluster), on the smallest batch row of their text, so they are ranked once with the batch.
    """
    batch = with_text_hash(frame)
    ranked = _ranked(batch, existing, params)
    ousted = (
        ranked.where(F.col("_existing") & (F.col("_kept_id") != F.col("doc_id")))
        .groupBy("text_sha256")
        .agg(F.collect_list(F.struct("doc_id", F.col("_kept_id").alias("kept_id"), "_cluster")).alias("_ousted"))
    )
    carriers = (
        ranked.where(~F.col("_existing"))
        .groupBy("text_sha256")
        .agg(F.min("doc_id").alias("doc_id"))
        .join(ousted, "text_sha256")
        .select("doc_id", F.col("_ousted").alias("_displaced_exact"))
    )
    verdict = (
        F.when(F.col("_copies") == 1, kept())
        .when(F.col("_kept_id") == F.col("doc_id"), decision("kept", cluster_id=F.col("_cluster")))
        .otherwise(decision(DROPPED, EXACT_DUPLICATE, cluster_id=F.col("_cluster"), duplicate_of=F.col("_kept_id")))
    )
    decided = ranked.where(~F.col("_existing")).select("doc_id", verdict.alias(DECISION))
    return batch.join(decided, "doc_id").join(carriers, "doc_id", "left")


def displaced(frame: DataFrame, params: ExactDedupParams, existing: DataFrame) -> DataFrame:
    """Silver documents that a copy in this batch outranks: (doc_id, decision) to drop from silver."""
    return displaced_rows(exact_dedup(frame, params, existing), "_displaced_exact", EXACT_DUPLICATE)


def displaced_rows(decided: DataFrame, column: str, reason: str) -> DataFrame:
    """(doc_id, decision) of the silver documents a dedup stage's output says it displaced."""
    return decided.select(F.explode(column).alias("d")).select(
        F.col("d.doc_id").alias("doc_id"),
        decision(DROPPED, reason, cluster_id=F.col("d._cluster"), duplicate_of=F.col("d.kept_id")).alias(DECISION),
    )
