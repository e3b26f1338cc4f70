"""Near-duplicate removal: accuracy on planted clusters, and speed beside datasketch.

Accuracy: real docstrings of the installed Python distributions as originals; for some, planted
variants (a few words replaced, whitespace changed, a boilerplate line added) and hard
negatives (half of the original's words, then other text), with the exact Jaccard of every
planted pair. A pair counts as found when both end in one cluster; precision and recall are
reported by Jaccard band, against the truth "Jaccard >= threshold".

Speed: `fuzzy_dedup` in `local[2]` beside datasketch's single-process `MinHash.update_batch`
and `MinHashLSH` (insert, then query every document) on the same documents, same run.

    python -m benchmarks fuzzy --docs 10000 100000
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BANDS = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.01)]


def docstring_pool(cache: Path) -> list[str]:
    """Every distinct docstring of at least 200 characters in the installed Python packages
    (parsed once, then read from `cache`)."""
    import gzip
    import sysconfig

    if cache.exists():
        return json.loads(gzip.decompress(cache.read_bytes()))
    root = Path(sysconfig.get_paths()["purelib"])
    out: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    out[doc] = None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(gzip.compress(json.dumps(list(out)).encode()))
    return list(out)


class Originals:
    """Original documents of about 2 KB from real text: the long docstrings first, then (a
    corpus of a million needs more) documents of real sentences drawn at random from all of
    them, so that no two originals share more than a sentence or two by chance."""

    def __init__(self, pool: list[str], seed: int) -> None:
        self.long = [d[:2500] for d in pool if len(d) >= 1200]
        self.sentences = sorted({s.strip() for d in pool for s in d.replace("\n", " ").split(". ") if len(s) > 40})
        self.seed = seed

    def __call__(self, i: int) -> str:
        if i < len(self.long):
            return self.long[i]
        rng = random.Random(self.seed * 1_000_003 + i)
        parts: list[str] = []
        while sum(len(p) + 2 for p in parts) < 2000:
            parts.append(rng.choice(self.sentences))
        return ". ".join(parts) + "."


def variant(rng: random.Random, text: str, replace_share: float) -> str:
    words = text.split()
    for _ in range(max(1, int(len(words) * replace_share))):
        words[rng.randrange(len(words))] = rng.choice(["data", "value", "result", "item", "thing", "node"])
    joined = " ".join(words)
    if rng.random() < 0.5:
        joined = joined.replace(". ", ".\n\n")  # whitespace changes
    if rng.random() < 0.3:
        joined += "\n\nThis page was generated automatically."  # a boilerplate line
    return joined


def exact_jaccards(pairs: list[tuple[str, str]]) -> list[float]:
    """The exact Jaccard of the shingle sets of each (text, text) pair."""
    from curation.minhash import batch_shingles

    hashes, counts = batch_shingles([t for pair in pairs for t in pair])
    ends = np.cumsum(counts)
    sets = [np.unique(hashes[e - c : e]) for e, c in zip(ends, counts, strict=True)]
    out = []
    for left, right in zip(sets[::2], sets[1::2], strict=True):
        both = len(np.intersect1d(left, right, assume_unique=True))
        out.append(both / max(len(left) + len(right) - both, 1))
    return out


def build(docs: int, target: Path, pool: list[str], seed: int = 0, chunk: int = 50_000) -> list[tuple[str, str, float]]:
    """Write `docs` (doc_id, text) rows to the Parquet file `target`, chunk by chunk; return the
    planted pairs (a, b, exact Jaccard). One original in five gets 1-3 variants (1-15% of
    its words replaced, whitespace and boilerplate changes), one in five a hard negative (half
    of it, then half of another original)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    original = Originals(pool, seed)
    schema = pa.schema([("doc_id", pa.string()), ("text", pa.string())])
    pairs: list[tuple[str, str, float]] = []
    written, i = 0, 0
    with pq.ParquetWriter(target, schema) as writer:
        while written < docs:
            rows: list[tuple[str, str]] = []
            planted: list[tuple[str, str]] = []
            texts: list[tuple[str, str]] = []
            while len(rows) < min(chunk, docs - written):
                base, base_id = original(i), f"o{i:07d}"
                rows.append((base_id, base))
                if i % 5 == 0:
                    for k in range(rng.randint(1, 3)):
                        text = variant(rng, base, rng.choice([0.01, 0.02, 0.04, 0.08, 0.15]))
                        rows.append((f"v{i:07d}_{k}", text))
                        planted.append((base_id, f"v{i:07d}_{k}"))
                        texts.append((base, text))
                elif i % 5 == 1:
                    words, other = base.split(), original(i * 7 + 3).split()
                    text = " ".join(words[: len(words) // 2] + other[len(other) // 2 :])
                    rows.append((f"n{i:07d}", text))
                    planted.append((base_id, f"n{i:07d}"))
                    texts.append((base, text))
                i += 1
            rows = rows[: docs - written]
            ids = {r[0] for r in rows}
            keep = [k for k, (a, b) in enumerate(planted) if a in ids and b in ids]
            jaccards = exact_jaccards([texts[k] for k in keep])
            pairs += [(*planted[k], j) for k, j in zip(keep, jaccards, strict=True)]
            writer.write_table(pa.table({"doc_id": [r[0] for r in rows], "text": [r[1] for r in rows]}, schema=schema))
            written += len(rows)
    return pairs


def datasketch_run(rows: list[tuple[str, str]], threshold: float, num_perm: int, bands: tuple[int, int]) -> float:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=bands)
    sketches = []
    for doc_id, text in rows:
        words = text.lower().split()
        shingles = {" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))}
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(list(shingles))
        sketches.append((doc_id, m))
        lsh.insert(doc_id, m)
    for _, m in sketches:
        lsh.query(m)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks fuzzy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--skip-datasketch-above", type=int, default=200_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import pyarrow.parquet as pq
    from pyspark import SparkContext, StorageLevel
    from pyspark.sql import functions as F

    from benchmarks.curate import PeakMemory
    from curation.fuzzy_dedup import FuzzyDedupParams, fuzzy_dedup
    from curation.pipeline import prepare
    from jobs.config import cache_dir
    from jobs.spark import SparkSettings, get_spark
    from lineage.catalog import BRONZE_DOCUMENTS

    settings = SparkSettings(master=args.master, driver_memory=args.driver_memory, app_name="millpond-bench-fuzzy")
    spark = get_spark(settings, cache_dir())
    params = FuzzyDedupParams()
    parallelism = spark.sparkContext.defaultParallelism
    work = cache_dir() / "benchmarks" / "fuzzy"
    work.mkdir(parents=True, exist_ok=True)
    print("reading the docstrings of the installed packages", flush=True)
    pool = docstring_pool(work / "docstrings.json.gz")
    results: dict[str, Any] = {}
    for size in args.docs:
        corpus = work / f"corpus-{size}.parquet"
        print(f"building {size:,} documents in {corpus}", flush=True)
        pairs = build(size, corpus, pool)
        literals = {
            "record_id": F.col("doc_id"), "source": F.lit("bench"), "source_uri": F.lit("bench"),
            "locator": F.col("doc_id"), "ingested_at": F.current_timestamp(), "ingest_run_id": F.lit("bench"),
            "content_sha256": F.col("doc_id"), "license_source": F.lit("declared"),
        }  # fmt: skip
        raw = spark.read.parquet(str(corpus))
        bronze = raw.select(
            *[
                (F.col(f.name) if f.name in raw.columns else literals.get(f.name, F.lit(None)))
                .cast(f.dataType)
                .alias(f.name)
                for f in BRONZE_DOCUMENTS.schema.fields
            ]
        )
        frame = prepare(bronze).repartition(max(parallelism * 2, size // 25_000), "doc_id")
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        frame.count()
        with PeakMemory(os.getpid(), tree=True) as memory:
            start = time.perf_counter()
            out = fuzzy_dedup(frame, params).select("doc_id", "decision.action", "decision.cluster_id")
            out = out.localCheckpoint(eager=True)
            seconds = time.perf_counter() - start
        table = out.toPandas()
        clusters = dict(zip(table["doc_id"], table["cluster_id"], strict=True))
        removed = int((table["action"] == "dropped").sum())
        del table
        together = [(j, clusters.get(a) is not None and clusters.get(a) == clusters.get(b)) for a, b, j in pairs]
        bands: dict[str, dict[str, int]] = {}
        for j, found in together:
            name = next(f"{lo:.2f}-{min(hi, 1.0):.2f}" for lo, hi in BANDS if lo <= j < hi)
            entry = bands.setdefault(name, {"pairs": 0, "found": 0})
            entry["pairs"] += 1
            entry["found"] += found
        tp = sum(1 for j, f in together if j >= params.threshold and f)
        fp = sum(1 for j, f in together if j < params.threshold and f)
        fn = sum(1 for j, f in together if j >= params.threshold and not f)
        strong = [f for j, f in together if j >= 0.85]
        entry = {
            "documents": size,
            "spark_s": round(seconds, 1),
            "spark_docs_per_s": round(size / seconds),
            "spark_docs_per_s_per_core": round(size / seconds / parallelism),
            "spark_peak_mb": round(memory.peak / 1e6),
            "removed": removed,
            "precision": round(tp / max(tp + fp, 1), 4),
            "recall": round(tp / max(tp + fn, 1), 4),
            "recall_jaccard_at_least_0.85": round(sum(strong) / max(len(strong), 1), 4),
            "bands": dict(sorted(bands.items())),
        }
        results[str(size)] = entry
        print(json.dumps(entry), flush=True)
        frame.unpersist()
    # datasketch after Spark has stopped and its JVM has exited (a stopped session keeps the
    # JVM and its heap), so the two never share the memory or the cores
    gateway = SparkContext._gateway
    spark.stop()
    if gateway is not None:
        gateway.shutdown()
        gateway.proc.terminate()
        gateway.proc.wait(60)
    for size in args.docs:
        corpus = work / f"corpus-{size}.parquet"
        if size <= args.skip_datasketch_above:
            table = pq.read_table(corpus)
            rows = list(zip(table["doc_id"].to_pylist(), table["text"].to_pylist(), strict=True))
            del table
            print(f"datasketch on {size:,} documents", flush=True)
            base_s = datasketch_run(rows, params.threshold, params.num_perm, params.bands)
            entry = results[str(size)]
            entry["datasketch_s"] = round(base_s, 1)
            entry["datasketch_docs_per_s"] = round(size / base_s)
            entry["ratio_per_core"] = round((size / entry["spark_s"] / parallelism) / (size / base_s), 2)
            print(json.dumps({k: v for k, v in entry.items() if k != "bands"}), flush=True)
            del rows
        corpus.unlink()
    sizes = sorted(results, key=int)
    slopes = {}
    for lo, hi in zip(sizes, sizes[1:], strict=False):  # time against size on log-log axes: 1.0 is linear
        small, large = results[lo], results[hi]
        slopes[f"{lo}-{hi}"] = round(
            float(np.log(large["spark_s"] / small["spark_s"]) / np.log(large["documents"] / small["documents"])), 2
        )
    print(f"slope of log time against log size: {slopes}", flush=True)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}",
        "params": {"threshold": params.threshold, "num_perm": params.num_perm, "bands": list(params.bands)},
        "results": results,
        "slopes": slopes,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "fuzzy.json").write_text(json.dumps(summary, indent=2) + "\n")
