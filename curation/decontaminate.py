"""`decontaminate`: drop documents that share a word n-gram (13 by default) with an evaluation item.

Words are lower-cased runs of letters and digits; an n-gram is hashed to 64 bits with the
rolling polynomial of `curation.minhash` over stable per-word hashes (the same value on
every worker and every run). Evaluation items come from `governance.eval_items` (`millpond evalset add`); their
n-grams are few, so they travel with the task, and each document is checked with a binary
search. An item shorter than n words has no n-gram and cannot be matched: the overlap report
counts those items.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, DROPPED, decision, kept
from curation.minhash import rolling_hashes, token_hashes
from lineage.catalog import GOVERNANCE_EVAL_ITEMS
from lineage.tables import ensure_table, merge_rows, read_table

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class DecontaminateParams:
    """The `[curate.decontaminate]` section."""

    ngram: int = 13


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_hashes(text: str, n: int, cache: dict[str, int] | None = None) -> np.ndarray:
    """The 64-bit hash of every word n-gram of the text (empty when it has fewer than n words)."""
    return rolling_hashes(token_hashes(words(text), {} if cache is None else cache), n)


@dataclass(frozen=True)
class EvalIndex:
    """The n-grams of every eval set: a sorted array of hashes per set, and which item holds each."""

    sets: dict[str, np.ndarray]
    items_by_hash: dict[int, list[str]]
    item_sets: dict[str, str]  # item id -> eval set
    items: dict[str, int]  # eval set -> items
    too_short: dict[str, int]  # eval set -> items with fewer than n words


def build_index(items: list[tuple[str, str, str]], n: int) -> EvalIndex:
    """From (item_id, eval_set, text) rows."""
    per_set: dict[str, list[np.ndarray]] = {}
    items_by_hash: dict[int, list[str]] = {}
    counts: dict[str, int] = {}
    too_short: dict[str, int] = {}
    cache: dict[str, int] = {}
    item_sets: dict[str, str] = {}
    for item_id, eval_set, text in items:
        item_sets[item_id] = eval_set
        counts[eval_set] = counts.get(eval_set, 0) + 1
        hashes = ngram_hashes(text, n, cache)
        if len(hashes) == 0:
            too_short[eval_set] = too_short.get(eval_set, 0) + 1
            continue
        per_set.setdefault(eval_set, []).append(hashes)
        for h in np.unique(hashes).tolist():
            items_by_hash.setdefault(h, []).append(item_id)
    sets = {name: np.unique(np.concatenate(parts)) for name, parts in per_set.items()}
    return EvalIndex(sets, items_by_hash, item_sets, counts, too_short)


def load_index(eval_items: DataFrame | None, n: int) -> EvalIndex:
    """The index of the `governance.eval_items` rows (eval sets are small: they fit the driver)."""
    rows = [] if eval_items is None else eval_items.select("item_id", "eval_set", "text").collect()
    return build_index([(r[0], r[1], r[2]) for r in rows], n)


def matches(text: str, index: EvalIndex, n: int, cache: dict[str, int]) -> tuple[list[str], list[int]]:
    """The eval sets the text shares an n-gram with (sorted), and the shared n-gram hashes."""
    hashes = np.unique(ngram_hashes(text, n, cache))
    hit_sets, hit_hashes = [], set()
    for name in sorted(index.sets):
        table = index.sets[name]
        pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        found = hashes[table[pos] == hashes]
        if len(found):
            hit_sets.append(name)
            hit_hashes.update(found.tolist())
    return hit_sets, sorted(hit_hashes)


_HITS = T.StructType(
    [
        T.StructField("sets", T.ArrayType(T.StringType())),
        # as signed 64-bit values: Spark has no unsigned long
        T.StructField("hashes", T.ArrayType(T.LongType())),
    ]
)


def decontaminate(frame: DataFrame, params: DecontaminateParams, index: EvalIndex) -> DataFrame:
    """Drop documents sharing an n-gram with an eval item; the reason is the eval set's name
    (the first in name order when several match). `_eval_hits` keeps the shared n-grams for the report."""
    n = params.ngram
    sets = index.sets

    @F.pandas_udf(_HITS)
    def find(texts: pd.Series) -> pd.DataFrame:
        local = EvalIndex(sets, {}, {}, {}, {})
        cache: dict[str, int] = {}
        found_sets, found_hashes = [], []
        for text in texts:
            names, hashes = matches(text, local, n, cache) if sets else ([], [])
            found_sets.append(names)
            found_hashes.append(np.array(hashes, dtype=np.uint64).view(np.int64).tolist())
        return pd.DataFrame({"sets": found_sets, "hashes": found_hashes})

    out = frame.withColumn("_hits", find(F.col("text")))
    verdict = F.when(
        F.size("_hits.sets") > 0,
        decision(DROPPED, F.col("_hits.sets")[0], F.size("_hits.hashes").cast("double")),
    ).otherwise(kept())
    return out.withColumn(DECISION, verdict).withColumn("_eval_hits", F.col("_hits.hashes")).drop("_hits")


def overlap_report(index: EvalIndex, decided: DataFrame) -> dict[str, dict[str, Any]]:
    """Per eval set: items, items too short to match, items found in the corpus, documents dropped."""
    dropped = decided.where(F.col(f"{DECISION}.action") == DROPPED)
    docs = {r[0]: r[1] for r in dropped.groupBy(f"{DECISION}.reason").count().collect()}
    hit_hashes = {
        int(np.int64(r[0]).view(np.uint64)) for r in dropped.select(F.explode("_eval_hits")).distinct().collect()
    }
    hit_items: dict[str, set[str]] = {}
    for h in hit_hashes:
        for item in index.items_by_hash.get(h, ()):
            hit_items.setdefault(index.item_sets[item], set()).add(item)
    return {
        name: {
            "items": index.items[name],
            "too_short": index.too_short.get(name, 0),
            "items_found": len(hit_items.get(name, ())),
            "documents_dropped": docs.get(name, 0),
        }
        for name in sorted(index.items)
    }


def eval_item_id(eval_set: str, text: str) -> str:
    """An eval item's id: its set and text, so re-adding a set is a no-op."""
    return hashlib.sha256(f"eval\x00{eval_set}\x00{text}".encode()).hexdigest()[:32]


def register_eval_set(spark: SparkSession, lakehouse: Any, name: str, texts: list[Any]) -> tuple[int, Any]:
    """MERGE the non-blank `texts` (each with `text`, `source_uri`, `locator`) into
    governance.eval_items as set `name`; (distinct items, the MERGE's result)."""
    now = datetime.now(UTC)
    rows: dict[str, tuple[Any, ...]] = {}
    for t in texts:
        if t.text.strip():
            key = eval_item_id(name, t.text)
            rows.setdefault(key, (key, name, t.text, t.source_uri, t.locator, now))
    table = ensure_table(spark, GOVERNANCE_EVAL_ITEMS, lakehouse)
    frame = spark.createDataFrame(list(rows.values()), schema=GOVERNANCE_EVAL_ITEMS.schema)
    return len(rows), merge_rows(spark, table, GOVERNANCE_EVAL_ITEMS.key, frame)


def eval_sets(lakehouse: Any) -> list[dict[str, Any]]:
    """The registered eval sets by name: item count, sources, when first added."""
    data = read_table(GOVERNANCE_EVAL_ITEMS, lakehouse, columns=["eval_set", "source_uri", "added_at"])
    items: Counter[str] = Counter()
    sources: dict[str, set[str]] = defaultdict(set)
    added: dict[str, Any] = {}
    for row in [] if data is None else data.to_pylist():
        name = row["eval_set"]
        items[name] += 1
        sources[name].add(row["source_uri"])
        added[name] = min(added.get(name, row["added_at"]), row["added_at"])
    return [
        {"name": n, "items": items[n], "sources": sorted(sources[n]), "added_at": str(added[n])} for n in sorted(items)
    ]
