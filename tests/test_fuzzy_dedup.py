"""Near-duplicate removal: the numpy maths against datasketch, and the Spark stage on planted data."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from curation_data import bronze_row, decided, frame
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from pyspark.sql import functions as F

from curation.fuzzy_dedup import FuzzyDedupParams, candidate_edges, connected_components, fuzzy_dedup, sketch
from curation.minhash import (
    SHINGLE_HASHING,
    batch_shingles,
    jaccard,
    optimal_bands,
    permutations,
    shingle_hashes,
    signatures,
)

WORDS = [f"w{i}" for i in range(5000)]


def random_text(rng: random.Random, words: int = 200) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def edited(rng: random.Random, text: str, edits: int) -> str:
    tokens = text.split()
    for _ in range(edits):
        tokens[rng.randrange(len(tokens))] = rng.choice(WORDS)
    return " ".join(tokens)


# --- numpy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_perm", "seed", "block"), [(128, 1, 1 << 16), (64, 7, 5), (256, 42, 300)])
def test_signatures_equal_datasketch_affine32_bit_for_bit(num_perm: int, seed: int, block: int) -> None:
    rng = random.Random(seed)
    texts = [random_text(rng, rng.randrange(0, 300)) for _ in range(40)] + ["", "one", "Two words"]
    shingles = [shingle_hashes(t, 5) for t in texts]
    a, b = permutations(num_perm, seed)
    ours = signatures(shingles, a, b, block)
    for values, row in zip(shingles, ours, strict=True):
        theirs = MinHash(num_perm=num_perm, seed=seed, scheme="affine32", hashfunc=lambda x: x)
        theirs.update_batch([int(v) for v in values])
        assert np.array_equal(theirs.hashvalues, row)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize(("num_perm", "weights"), [(64, (0.5, 0.5)), (128, (0.5, 0.5)), (128, (0.1, 0.9))])
def test_bands_and_rows_equal_datasketch_optimal_parameters(threshold: float, num_perm: int, weights) -> None:
    assert optimal_bands(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)
    assert FuzzyDedupParams(threshold=0.8).bands == (14, 9)


def test_batch_shingles_equal_one_text_at_a_time_and_python_word_tokens(monkeypatch) -> None:
    texts = ["", "one", "Two words", "The Mill, the pond.", "a b c d e f g", "", "x"]
    texts.append("Straße café—naïve ½ x² İstanbul ǅ 한국어 テスト 123_abc don’t " * 3)  # word characters beyond ASCII
    hashes, counts = batch_shingles(texts * 20, 5, max_points=64)  # many small groups
    ends = np.cumsum(counts)
    for text, end, count in zip(texts * 20, ends, counts, strict=True):
        assert np.array_equal(np.unique(hashes[end - count : end]), shingle_hashes(text))
        # the tokens are exactly what `re` calls words in the lower-cased text
        assert np.array_equal(shingle_hashes(text), shingle_hashes(" ".join(re.findall(r"\w+", text.lower()))))
    assert list(counts[:7]) == [0, 1, 1, 1, 3, 0, 1]
    # The hashes are part of the stored index: they must not drift between versions or machines.
    assert shingle_hashes("the quick brown fox jumps over").tolist() == [500101764, 500262705]
    before = FuzzyDedupParams().index_digest()
    monkeypatch.setattr("curation.fuzzy_dedup.SHINGLE_HASHING", SHINGLE_HASHING + "-next")
    assert FuzzyDedupParams().index_digest() != before  # a new scheme refuses the old index


def test_shingles_ignore_case_and_punctuation_and_char_shingles_work() -> None:
    assert np.array_equal(shingle_hashes("The Mill, the pond."), shingle_hashes("the mill the pond"))
    assert len(shingle_hashes("abcdef", 3, "char")) == 4
    with pytest.raises(ValueError, match="word or char"):
        shingle_hashes("x", 3, "bytes")


# --- Spark ---------------------------------------------------------------------------------------


def _union_find(nodes: set[str], edges: list[tuple[str, str]]) -> dict[str, str]:
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: min(m for m in nodes if find(m) == find(n)) for n in nodes}


def test_connected_components_equal_union_find(spark) -> None:
    rng = random.Random(5)
    nodes = [f"n{i:04d}" for i in range(400)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(300)]
    edges += [(f"c{i:03d}", f"c{i + 1:03d}") for i in range(60)]  # a long chain
    edges = [(a, b) for a, b in edges if a != b]
    shapes = {
        "random with a chain": edges,
        "pairs only (already stars)": [("p1", "p0"), ("p3", "p2"), ("p2", "p3")],
        "a star around a larger centre": [("s5", "s1"), ("s5", "s2"), ("s5", "s3")],
        "a node at both ends": [("t3", "t2"), ("t2", "t1")],
        "a cycle": [("r1", "r2"), ("r2", "r3"), ("r3", "r1")],
    }
    for name, shape in shapes.items():
        got = connected_components(spark.createDataFrame(shape, "a string, b string"))
        expected = _union_find({x for e in shape for x in e}, shape)
        assert {r["doc_id"]: r["component"] for r in got.collect()} == expected, name
    with pytest.raises(RuntimeError, match="did not converge in 1 rounds"):
        connected_components(spark.createDataFrame(edges, "a string, b string"), max_rounds=1)


def _planted(rng: random.Random) -> tuple[list[dict], dict[str, str], set[str]]:
    """Originals with near copies (2-4% of words edited), and documents sharing half their text."""
    rows, cluster_of, half = [], {}, set()
    for i in range(30):
        original = random_text(rng)
        rows.append(bronze_row(f"orig{i:02d}", original))
        cluster_of[f"orig{i:02d}"] = f"orig{i:02d}"
        for j in range(2):
            copy = edited(rng, original, rng.choice([1, 2]))
            assert jaccard(shingle_hashes(copy), shingle_hashes(original)) >= 0.85
            rows.append(bronze_row(f"copy{i:02d}_{j}", copy))
            cluster_of[f"copy{i:02d}_{j}"] = f"orig{i:02d}"
    for i in range(20):
        base = rows[rng.randrange(len(rows))]["text"].split()
        text = " ".join(base[:100] + random_text(rng, 100).split())
        rows.append(bronze_row(f"half{i:02d}", text))
        half.add(f"half{i:02d}")
    for i in range(20):
        rows.append(bronze_row(f"solo{i:02d}", random_text(rng)))
        half.add(f"solo{i:02d}")
    return rows, cluster_of, half


def _summary(out) -> dict[str, tuple]:
    return {
        k: (r["decision"]["action"], r["decision"]["duplicate_of"], r["decision"]["cluster_id"]) for k, r in out.items()
    }


def test_planted_near_duplicates_are_removed_and_partial_overlaps_kept(spark) -> None:
    rows, cluster_of, half = _planted(random.Random(11))
    by_id = {r["doc_id"]: r for r in rows}
    for doc in half:  # the hard negatives really share at most half their shingles with everyone
        assert max(jaccard(shingle_hashes(by_id[doc]["text"]), shingle_hashes(r["text"])) for r in rows
                   if r["doc_id"] != doc) <= 0.5  # fmt: skip
    out = decided(fuzzy_dedup(frame(spark, rows), FuzzyDedupParams()))
    for doc in half:
        assert out[doc]["decision"]["action"] == "kept", doc
    clusters: dict[str, list[str]] = {}
    for doc, original in cluster_of.items():
        clusters.setdefault(original, []).append(doc)
    for original, members in clusters.items():
        kept = [m for m in members if out[m]["decision"]["action"] == "kept"]
        assert len(kept) == 1, (original, [out[m]["decision"] for m in members])
        assert {out[m]["decision"]["cluster_id"] for m in members} == {f"near:{min(members)}"}
        for m in members:
            if m != kept[0]:
                assert out[m]["decision"]["reason"] == "near_duplicate"
                assert out[m]["decision"]["duplicate_of"] == kept[0]
        assert kept[0] == min(members)  # same score, license and ingest time: the smallest id


def test_a_batch_without_near_duplicates_is_kept_whole_and_clusterless(spark) -> None:
    rng = random.Random(15)
    rows = [bronze_row(f"u{i}", random_text(rng)) for i in range(20)]
    out = decided(fuzzy_dedup(frame(spark, rows), FuzzyDedupParams()))
    assert {k: (r["decision"]["action"], r["decision"]["cluster_id"]) for k, r in out.items()} == {
        r["doc_id"]: ("kept", None) for r in rows
    }


def test_same_kept_set_with_1_or_64_partitions(spark) -> None:
    rows, _, _ = _planted(random.Random(12))
    data = frame(spark, rows)
    one = _summary(decided(fuzzy_dedup(data.repartition(1), FuzzyDedupParams())))
    many = _summary(decided(fuzzy_dedup(data.repartition(64), FuzzyDedupParams())))
    assert one == many


def test_a_skewed_bucket_gives_n_minus_1_edges_not_n_squared(spark) -> None:
    rng = random.Random(13)
    text = random_text(rng)
    rows = [bronze_row(f"d{i:04d}", text) for i in range(1500)] + [bronze_row("other", random_text(rng))]
    params = FuzzyDedupParams()
    sketched = sketch(frame(spark, rows), params)
    assert candidate_edges(sketched).count() == 1499
    out = decided(fuzzy_dedup(frame(spark, rows), params))
    assert sorted(k for k, r in out.items() if r["decision"]["action"] == "kept") == ["d0000", "other"]
    assert {r["decision"]["duplicate_of"] for k, r in out.items() if k.startswith("d0") and k != "d0000"} == {"d0000"}


def test_two_batches_against_the_index_equal_one_batch(spark) -> None:
    rng = random.Random(14)
    rows, _, _ = _planted(rng)
    # a better-scored near copy arriving later displaces the silver document it copies
    better = bronze_row("zbetter", edited(rng, rows[0]["text"], 1))
    first, second = rows[::2], rows[1::2] + [better]
    params = FuzzyDedupParams()
    scored = lambda rs: frame(spark, rs).withColumn(  # noqa: E731
        "quality_score", F.when(F.col("doc_id") == "zbetter", 0.9).otherwise(0.5)
    )
    whole = _summary(decided(fuzzy_dedup(scored(first + second), params)))

    one = fuzzy_dedup(scored(first), params).persist()
    silver = one.where("decision.action = 'kept'")
    index = one.withColumn("eligible", F.col("decision.action") == "kept")
    two = fuzzy_dedup(scored(second), params, index=index).persist()
    displaced = {
        r["doc_id"]: r["kept_id"] for r in two.select(F.explode("_displaced").alias("d")).select("d.*").collect()
    }
    kept_after = {r["doc_id"] for r in silver.collect()} - set(displaced)
    kept_after |= {r["doc_id"] for r in two.where("decision.action = 'kept'").collect()}
    assert kept_after == {k for k, v in whole.items() if v[0] == "kept"}
    # exactly the first batch's keepers that one batch would not keep are displaced, e.g. copy00_1
    # (kept over orig00 by its smaller id) by the better-scored zbetter
    first_kept = {r["doc_id"] for r in silver.collect()}
    assert set(displaced) == {k for k in first_kept if whole[k][0] != "kept"}
    assert displaced["copy00_1"] == "zbetter"
