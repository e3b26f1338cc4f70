"""`fuzzy_dedup`: near-duplicate removal with MinHash LSH on Spark, deterministic clusters.

1. Signatures and band hashes per document, a whole Arrow batch at a time (`curation.minhash`).
2. Candidate edges from shared band buckets: every pair of a small bucket; in a large one
   (skew: thousands of copies of one page) every member is linked to the bucket's smallest
   `doc_id`, so a bucket of n documents gives n - 1 edges, never n**2 pairs.
3. Optionally, edges whose estimated Jaccard (equal signature values) is below the threshold
   are dropped.
4. Connected components in Spark itself: alternating large-star and small-star rounds
   (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014) until every
   component is a star around its smallest node; each round is checkpointed, so plans stay short.
5. In each component the keep rule of exact dedup picks one document; the others are dropped
   as `near_duplicate` with `duplicate_of`, and every member, the kept one too, records the
   component's `cluster_id` (its smallest `doc_id`).

Documents of earlier runs take part through their stored signatures (`index`, the
`silver.minhash` table): a new document that outranks a silver one displaces it, and near
duplicates dropped earlier still link their cluster, so two batches give what one would.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION
from curation.minhash import SHINGLE_HASHING, band_hashes, batch_shingles, optimal_bands, permutations, signatures_of
from curation.ranking import CLUSTER, EXISTING, KEPT_ID, dedup_verdict, keep_order, outranked_silver, with_kept_copy

NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True)
class FuzzyDedupParams:
    """The `[curate.fuzzy_dedup]` section."""

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    shingle: str = "word"  # word | char
    seed: int = 1
    verify: bool = True  # drop candidate edges whose estimated Jaccard is below the threshold
    max_rounds: int = 40  # connected-components rounds (they converge in O(log n))
    pairs_up_to: int = 16  # buckets up to this size give every pair; larger ones a star
    # A small side (shared buckets of three or more, the documents on candidate edges, the
    # verdicts of cluster members) is broadcast when it has at most this many rows, so the
    # large side (every document's buckets, signatures or text) is not shuffled to meet it;
    # beyond it, a shuffle join. Memory is bounded by this, not by the corpus.
    broadcast_up_to: int = 250_000
    # Bands and rows minimize these weights of false positive and false negative probability
    # (datasketch's rule). With verification on, a false positive costs one signature compare
    # while a false negative is a duplicate kept, so misses weigh more: at 128 permutations this
    # gives 14 bands of 9 rows, which makes a pair with Jaccard 0.85 a candidate 97.5% of the
    # time (datasketch's even weights, 9 x 13: 69%).
    false_positive_weight: float = 0.1
    false_negative_weight: float = 0.9
    preferred_purpose: str = "pretraining"

    def __post_init__(self) -> None:
        if self.shingle not in ("word", "char"):
            raise ValueError(f"[curate.fuzzy_dedup] shingle must be word or char, got {self.shingle!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"[curate.fuzzy_dedup] threshold must be between 0 and 1, got {self.threshold}")

    @property
    def bands(self) -> tuple[int, int]:
        return optimal_bands(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)

    def index_digest(self) -> str:
        """What stored signatures depend on: they can be reused only under the same settings."""
        keys = {k: v for k, v in asdict(self).items() if k in ("num_perm", "ngram", "shingle", "seed")}
        keys["bands"] = list(self.bands)
        keys["hashing"] = SHINGLE_HASHING
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


SKETCH = T.StructType(
    [
        T.StructField("signature", T.ArrayType(T.IntegerType())),  # uint32 values seen as int32
        T.StructField("bands", T.ArrayType(T.LongType())),
    ]
)


def sketch(frame: DataFrame, params: FuzzyDedupParams) -> DataFrame:
    """Add `_signature` and `_bands` to every row."""
    a, b = permutations(params.num_perm, params.seed)
    bands, rows = params.bands
    n, kind = params.ngram, params.shingle

    @F.arrow_udf(SKETCH)
    def sketch_batch(texts: pa.Array) -> pa.Array:
        sigs = signatures_of(*batch_shingles(pc.fill_null(texts, "").to_pylist(), n, kind), a, b)
        hashed = band_hashes(sigs, bands, rows)
        return pa.StructArray.from_arrays([_rows_of(sigs.view(np.int32)), _rows_of(hashed)], ["signature", "bands"])

    return (
        frame.withColumn("_sketch", sketch_batch(F.col("text")))
        .withColumn("_signature", F.col("_sketch.signature"))
        .withColumn("_bands", F.col("_sketch.bands"))
        .drop("_sketch")
    )


def _materialized(frame: DataFrame, broadcast_up_to: int) -> tuple[DataFrame, int]:
    """`frame` computed once and kept, and its row count; marked for broadcast when it has at
    most `broadcast_up_to` rows, so that joining it to a large side does not shuffle that side."""
    kept_frame = frame.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    rows = kept_frame.count()
    return (F.broadcast(kept_frame) if rows <= broadcast_up_to else kept_frame), rows


def _rows_of(matrix: np.ndarray) -> pa.ListArray:
    """A 2-d array as an Arrow list array, one list per row, without a copy per row."""
    count, width = matrix.shape
    offsets = pa.array(np.arange(0, (count + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).ravel()))


def candidate_edges(members: DataFrame, pairs_up_to: int = 16, broadcast_up_to: int = 250_000) -> DataFrame:
    """(a, b) edges, a > b, between documents that share a band bucket.

    A bucket of up to `pairs_up_to` documents gives every pair (so verification judges each
    pair itself); a larger one links each member to the bucket's smallest `doc_id` only, so a
    bucket of n documents gives n - 1 edges, never n**2 pairs. Bucket hashes carry their
    band (`band_hashes`), so one bucket column serves every band.

    One aggregation over all (document, bucket) rows finds the shared buckets with their
    size, smallest and largest member: a bucket of two is its pair already. Only the members
    of the rarer buckets of three or more are fetched again, by a join on those buckets.
    """
    buckets = members.select("doc_id", F.explode("_bands").alias("bucket"))
    shared = (
        buckets.groupBy("bucket")
        .agg(F.count("*").alias("_n"), F.min("doc_id").alias("_m"), F.max("doc_id").alias("_x"))
        .where(F.col("_n") > 1)
        .localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    )
    pairs = shared.where((F.col("_n") == 2) & (F.col("_x") != F.col("_m")))  # != : two bands, one hash
    edges = pairs.select(F.col("_x").alias("a"), F.col("_m").alias("b"))
    crowded, rows = _materialized(shared.where(F.col("_n") > 2).select("bucket", "_n", "_m"), broadcast_up_to)
    if rows:
        sized = buckets.join(crowded, "bucket")
        star = sized.where((F.col("_n") > pairs_up_to) & (F.col("doc_id") != F.col("_m"))).select(
            F.col("doc_id").alias("a"), F.col("_m").alias("b")
        )
        small = (
            sized.where(F.col("_n") <= pairs_up_to)
            .groupBy("bucket")
            .agg(F.array_sort(F.collect_list("doc_id")).alias("ids"))
            .select(
                F.explode(
                    F.expr(
                        "flatten(transform(ids, (x, i) -> "
                        "transform(slice(ids, i + 2, size(ids)), y -> named_struct('a', y, 'b', x))))"
                    )
                ).alias("pair")
            )
            .select("pair.a", "pair.b")
        )
        edges = edges.unionByName(star).unionByName(small)
    return edges.distinct()


def verified(edges: DataFrame, members: DataFrame, params: FuzzyDedupParams) -> DataFrame:
    """Only edges whose signatures agree in at least `threshold` of their values. Only the
    signatures of documents on an edge are fetched (by broadcast of their ids when few)."""
    edges = edges.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    if edges.isEmpty():  # a batch without candidates: nothing to fetch
        return edges
    ends, _ = _materialized(
        edges.select(F.col("a").alias("doc_id")).union(edges.select(F.col("b").alias("doc_id"))).distinct(),
        params.broadcast_up_to,
    )
    sigs = members.select("doc_id", "_signature").join(ends, "doc_id").localCheckpoint(eager=True)
    left = sigs.withColumnRenamed("doc_id", "a").withColumnRenamed("_signature", "sa")
    right = sigs.withColumnRenamed("doc_id", "b").withColumnRenamed("_signature", "sb")
    return (
        edges.join(left, "a")
        .join(right, "b")
        .where(_equal_values(F.col("sa"), F.col("sb")) >= F.lit(params.threshold * params.num_perm))
        .select("a", "b")
    )


@F.pandas_udf(T.IntegerType())
def _equal_values(left: pd.Series, right: pd.Series) -> pd.Series:
    """How many positions two signatures agree in, a whole batch of pairs at once in numpy."""
    if len(left) == 0:
        return pd.Series([], dtype="int32")
    return pd.Series((np.stack(left.to_numpy()) == np.stack(right.to_numpy())).sum(axis=1, dtype=np.int32))


def _undirected(edges: DataFrame) -> DataFrame:
    """Each edge both ways. Repeats are harmless to the stars (a minimum, then a join row for
    row) and `_oriented` removes them once per round."""
    return edges.union(edges.select(F.col("b").alias("a"), F.col("a").alias("b")))


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node links its larger neighbours to the smallest of its neighbourhood."""
    adjacent = _undirected(edges)
    smallest = adjacent.groupBy("a").agg(F.least(F.col("a"), F.min("b")).alias("m"))
    return (
        adjacent.join(smallest, "a")
        .where(F.col("b") > F.col("a"))
        .select(F.col("b").alias("a"), F.col("m").alias("b"))
        .where(F.col("a") != F.col("b"))
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node links itself and its smaller neighbours to the smallest of them."""
    smaller = _undirected(edges).where(F.col("b") < F.col("a"))
    smallest = smaller.groupBy("a").agg(F.min("b").alias("m"))
    linked = smaller.join(smallest, "a").select(F.col("b").alias("a"), F.col("m").alias("b"))
    return linked.union(smallest.select("a", F.col("m").alias("b"))).where(F.col("a") != F.col("b"))


def _oriented(edges: DataFrame) -> DataFrame:
    """Each undirected edge once, as (larger, smaller)."""
    return edges.select(F.greatest("a", "b").alias("a"), F.least("a", "b").alias("b")).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """Whether every component of `edges` (a > b) is already a star around its smallest node:
    no node is the larger end of two edges, or both a larger and a smaller end. Stars are the
    fixed point of the rounds, so this ends them without a round that changes nothing."""
    ends = edges.select(F.col("a").alias("node"), F.lit(1).alias("larger"), F.lit(0).alias("smaller")).union(
        edges.select(F.col("b").alias("node"), F.lit(0).alias("larger"), F.lit(1).alias("smaller"))
    )
    roles = ends.groupBy("node").agg(F.sum("larger").alias("larger"), F.max("smaller").alias("smaller"))
    return roles.where((F.col("larger") > 1) | ((F.col("larger") > 0) & (F.col("smaller") > 0))).isEmpty()


def connected_components(edges: DataFrame, max_rounds: int = 40) -> DataFrame:
    """(doc_id, component): every node of `edges` with the smallest id of its component.

    Most clusters of near duplicates are pairs, already stars: such edges need no round."""
    current = _oriented(edges).localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    rounds = 0
    while not _is_star_forest(current):
        if rounds == max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        current = _oriented(_small_star(_large_star(current)))
        current = current.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
        rounds += 1
    nodes = _undirected(current)
    return nodes.groupBy(F.col("a").alias("doc_id")).agg(F.least(F.col("a"), F.min("b")).alias("component"))


def fuzzy_dedup(frame: DataFrame, params: FuzzyDedupParams, index: DataFrame | None = None) -> DataFrame:
    """Keep one document per near-duplicate cluster; drop the others with `duplicate_of`.

    `index`: documents of earlier runs with their stored `_signature` and `_bands`, their
    keep-rule columns (`quality_score`, `license_policy`, `ingested_at`) and `eligible` (true
    for those silver still holds; the near duplicates dropped earlier take part only as links,
    so that a cluster split across batches is the cluster one batch would find). Adds
    `_signature` and `_bands` to the batch, and `_displaced`: on one row per cluster, the
    silver documents this batch outranks (doc_id, kept_id, _cluster).
    """
    # Materialized once: the signatures feed the edges, the verification and the output.
    batch = sketch(frame, params).localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    keep_columns = ["doc_id", "_signature", "_bands", "quality_score", "license_policy", "ingested_at"]
    members = batch.select(*keep_columns, F.lit(True).alias("eligible"), F.lit(False).alias(EXISTING))
    if index is not None:
        older = index.select(*keep_columns, "eligible").join(batch.select("doc_id"), "doc_id", "left_anti")
        members = members.unionByName(older.withColumn(EXISTING, F.lit(True)))
    members = members.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    edges = candidate_edges(members, params.pairs_up_to, params.broadcast_up_to)
    if params.verify:
        edges = verified(edges, members, params)
    components = connected_components(edges, params.max_rounds)
    ranked = members.select("doc_id", "quality_score", "license_policy", "ingested_at", "eligible", EXISTING).join(
        components, "doc_id"
    )
    order = [F.col("eligible").desc(), *keep_order(params.preferred_purpose)]
    ranked = with_kept_copy(ranked, "component", order, F.concat(F.lit("near:"), F.col("component")))
    # The silver members a batch document outranks, carried by the cluster's smallest batch row.
    carriers = outranked_silver(ranked, "component", "_displaced", eligible=F.col("eligible"))
    verdict = dedup_verdict(F.col(KEPT_ID).isNull(), NEAR_DUPLICATE)
    verdicts, _ = _materialized(
        ranked.where(~F.col(EXISTING)).select("doc_id", KEPT_ID, CLUSTER).join(carriers, "doc_id", "left"),
        params.broadcast_up_to,
    )
    return batch.join(verdicts, "doc_id", "left").withColumn(DECISION, verdict).drop(KEPT_ID, CLUSTER)
