"""`exact_dedup`: one document per distinct cleaned text, chosen by a deterministic keep rule.

The keep rule, shared with fuzzy dedup: highest quality score, then preferred license (allowed
for the preferred purpose, then not allowed, then unknown), then earliest ingest, then
smallest `doc_id`. Documents already in silver take part: a new copy that ranks higher
displaces the silver one (see `displaced`), so incremental runs keep what one full run keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.decisions import DECISION
from curation.ranking import EXISTING, dedup_verdict, displaced_rows, keep_order, outranked_silver, with_kept_copy

EXACT_DUPLICATE = "exact_duplicate"


@dataclass(frozen=True)
class ExactDedupParams:
    """The `[curate.exact_dedup]` section."""

    preferred_purpose: str = "pretraining"  # copies whose license this purpose allows win ties on quality


_RANKED_COLUMNS = ["doc_id", "text_sha256", "quality_score", "license_policy", "ingested_at"]


def with_text_hash(frame: DataFrame) -> DataFrame:
    return frame.withColumn("text_sha256", F.sha2(F.col("text"), 256))


def _ranked(batch: DataFrame, existing: DataFrame | None, params: ExactDedupParams) -> DataFrame:
    """Every copy (batch and silver) with the id of its group's kept copy and the group size."""
    copies = batch.select(*_RANKED_COLUMNS, F.lit(False).alias(EXISTING))
    if existing is not None:
        # a silver row that this batch re-curates is replaced by its new version
        older = existing.select(*_RANKED_COLUMNS).join(batch.select("doc_id"), "doc_id", "left_anti")
        copies = copies.unionByName(older.withColumn(EXISTING, F.lit(True)))
    cluster = F.concat(F.lit("exact:"), F.substring("text_sha256", 1, 32))
    ranked = with_kept_copy(copies, "text_sha256", keep_order(params.preferred_purpose), cluster)
    return ranked.withColumn("_copies", F.count("*").over(Window.partitionBy("text_sha256")))


def exact_dedup(frame: DataFrame, params: ExactDedupParams, existing: DataFrame | None = None) -> DataFrame:
    """Add `text_sha256`; keep one copy of each text, drop the others with `duplicate_of`.

    `existing`: silver documents (with `text_sha256`) the batch is deduplicated against. The
    silver copies a batch copy outranks come out in `_displaced_exact` (doc_id, kept_id,
    _cluster), on the smallest batch row of their text, so they are ranked once with the batch.
    """
    batch = with_text_hash(frame)
    ranked = _ranked(batch, existing, params)
    carriers = outranked_silver(ranked, "text_sha256", "_displaced_exact")
    verdict = dedup_verdict(F.col("_copies") == 1, EXACT_DUPLICATE)
    decided = ranked.where(~F.col(EXISTING)).select("doc_id", verdict.alias(DECISION))
    return batch.join(decided, "doc_id").join(carriers, "doc_id", "left")


def displaced(frame: DataFrame, params: ExactDedupParams, existing: DataFrame) -> DataFrame:
    """Silver documents that a copy in this batch outranks: (doc_id, decision) to drop from silver."""
    return displaced_rows(exact_dedup(frame, params, existing), "_displaced_exact", EXACT_DUPLICATE)
