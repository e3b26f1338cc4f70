"""Which copy a deduplication stage keeps, shared by exact and near-duplicate removal.

Copies of a document (same text, or one near-duplicate cluster) are ranked by `keep_order`;
the first is kept, the others are dropped with `duplicate_of` it. Silver documents of earlier
runs take part: a new copy that outranks one is kept and the silver one is displaced, carried
on one batch row per group so that the job can remove it from silver with its decision.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from curation.decisions import DROPPED, KEPT, decision, kept

KEPT_ID, CLUSTER, EXISTING = "_kept_id", "_cluster", "_existing"


def keep_order(preferred_purpose: str = "pretraining") -> list[Column]:
    """Sort order of the copies of one document: the first one is kept. Highest quality, then a
    license the preferred purpose allows, then the earliest ingested, then the smallest id."""
    policy = F.col("license_policy")[preferred_purpose]
    license_rank = F.when(policy == "allowed", 0).when(policy == "not_allowed", 1).otherwise(2)
    return [
        F.col("quality_score").desc_nulls_last(),
        license_rank.asc(),
        F.col("ingested_at").asc_nulls_last(),
        F.col("doc_id").asc(),
    ]


def with_kept_copy(copies: DataFrame, group: str, order: list[Column], cluster: Column) -> DataFrame:
    """Each copy with `_kept_id` (its group's first copy in `order`) and `_cluster` (the group's id)."""
    ordered = Window.partitionBy(group).orderBy(*order).rowsBetween(Window.unboundedPreceding, 0)
    return copies.withColumn(KEPT_ID, F.first("doc_id").over(ordered)).withColumn(CLUSTER, cluster)


def outranked_silver(ranked: DataFrame, group: str, column: str, eligible: Column | None = None) -> DataFrame:
    """(doc_id, `column`): on the smallest batch row of each group, the list of silver copies
    (doc_id, kept_id, _cluster) a batch copy outranks."""
    outranked = F.col(EXISTING) & (F.col(KEPT_ID) != F.col("doc_id"))
    if eligible is not None:
        outranked = outranked & eligible
    ousted = (
        ranked.where(outranked)
        .groupBy(group)
        .agg(F.collect_list(F.struct("doc_id", F.col(KEPT_ID).alias("kept_id"), CLUSTER)).alias(column))
    )
    return (
        ranked.where(~F.col(EXISTING))
        .groupBy(group)
        .agg(F.min("doc_id").alias("doc_id"))
        .join(ousted, group)
        .select("doc_id", column)
    )


def dedup_verdict(alone: Column, reason: str) -> Column:
    """Kept without a cluster when `alone`; kept as its cluster's copy; else dropped as a duplicate."""
    return (
        F.when(alone, kept())
        .when(F.col(KEPT_ID) == F.col("doc_id"), decision(KEPT, cluster_id=F.col(CLUSTER)))
        .otherwise(decision(DROPPED, reason, cluster_id=F.col(CLUSTER), duplicate_of=F.col(KEPT_ID)))
    )


def displaced_rows(decided: DataFrame, column: str, reason: str) -> DataFrame:
    """(doc_id, decision) of the silver documents a dedup stage's output says it displaced."""
    return decided.select(F.explode(column).alias("d")).select(
        F.col("d.doc_id").alias("doc_id"),
        decision(DROPPED, reason, cluster_id=F.col("d._cluster"), duplicate_of=F.col("d.kept_id")).alias("decision"),
    )
