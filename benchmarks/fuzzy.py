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

HERE = Path(__file__).resolve().parent
BANDS = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.01)]


def docstrings(limit: int, min_chars: int = 1200) -> list[str]:
    import sysconfig

    root = Path(sysconfig.get_paths()["purelib"])
    out: list[str] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
            continue
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars and doc not in seen:
                    seen.add(doc)
                    out.append(doc[:2500])
                    if len(out) >= limit:
                        return out
    return out


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


def build(docs: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str, float]]]:
    """(doc_id, text) rows and planted pairs (a, b, exact Jaccard)."""
    from curation.minhash import jaccard, shingle_hashes

    rng = random.Random(seed)
    originals = docstrings(docs)
    rows: list[tuple[str, str]] = []
    pairs: list[tuple[str, str, float]] = []
    i = 0
    while len(rows) < docs:
        base = originals[i % len(originals)]
        if i >= len(originals):  # not enough distinct docstrings: make the original unique
            base = f"{base}\n\nrevision {i} " + " ".join(rng.sample(base.split(), min(30, len(base.split()))))
        base_id = f"o{i:07d}"
        rows.append((base_id, base))
        if i % 5 == 0:
            for k in range(rng.randint(1, 3)):
                text = variant(rng, base, rng.choice([0.01, 0.02, 0.04, 0.08, 0.15]))
                vid = f"v{i:07d}_{k}"
                rows.append((vid, text))
                pairs.append((base_id, vid, jaccard(shingle_hashes(base), shingle_hashes(text))))
        elif i % 5 == 1:
            words = base.split()
            other = originals[(i * 7 + 3) % len(originals)].split()
            text = " ".join(words[: len(words) // 2] + other[len(other) // 2 :])
            nid = f"n{i:07d}"
            rows.append((nid, text))
            pairs.append((base_id, nid, jaccard(shingle_hashes(base), shingle_hashes(text))))
        i += 1
    kept = {r[0] for r in rows[:docs]}
    return rows[:docs], [p for p in pairs if p[0] in kept and p[1] in kept]


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
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--skip-datasketch-above", type=int, default=200_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

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
    results: dict[str, Any] = {}
    for size in args.docs:
        print(f"building {size:,} documents", flush=True)
        rows, pairs = build(size)
        now = datetime.now(UTC)
        records = [
            {f.name: None for f in BRONZE_DOCUMENTS.schema.fields}
            | {"doc_id": d, "record_id": d, "text": t, "source": "bench", "source_uri": "bench", "locator": d,
               "ingested_at": now, "ingest_run_id": "bench", "content_sha256": d, "license_source": "declared"}
            for d, t in rows
        ]  # fmt: skip
        frame = prepare(spark.createDataFrame(records, schema=BRONZE_DOCUMENTS.schema))
        frame = frame.repartition(parallelism * 2, "doc_id").persist()
        frame.count()
        with PeakMemory(os.getpid(), tree=True) as memory:
            start = time.perf_counter()
            out = fuzzy_dedup(frame, params).select("doc_id", "decision.action", "decision.cluster_id")
            out = out.localCheckpoint(eager=True)
            seconds = time.perf_counter() - start
        clusters = {r["doc_id"]: r["cluster_id"] for r in out.collect()}
        removed = sum(1 for r in out.collect() if r["action"] == "dropped")
        bands: dict[str, dict[str, int]] = {}
        for a, b, j in pairs:
            name = next(f"{lo:.2f}-{min(hi, 1.0):.2f}" for lo, hi in BANDS if lo <= j < hi)
            found = clusters.get(a) is not None and clusters.get(a) == clusters.get(b)
            entry = bands.setdefault(name, {"pairs": 0, "found": 0})
            entry["pairs"] += 1
            entry["found"] += found
        truth = [(j >= params.threshold, clusters.get(a) is not None and clusters.get(a) == clusters.get(b))
                 for a, b, j in pairs]  # fmt: skip
        tp = sum(1 for t, f in truth if t and f)
        fp = sum(1 for t, f in truth if not t and f)
        fn = sum(1 for t, f in truth if t and not f)
        strong = [
            (j, clusters.get(a) is not None and clusters.get(a) == clusters.get(b)) for a, b, j in pairs if j >= 0.85
        ]
        entry = {
            "documents": size,
            "spark_s": round(seconds, 1),
            "spark_docs_per_s": round(size / seconds),
            "spark_docs_per_s_per_core": round(size / seconds / parallelism),
            "spark_peak_mb": round(memory.peak / 1e6),
            "removed": removed,
            "precision": round(tp / max(tp + fp, 1), 4),
            "recall": round(tp / max(tp + fn, 1), 4),
            "recall_jaccard_at_least_0.85": round(sum(f for _, f in strong) / max(len(strong), 1), 4),
            "bands": bands,
        }
        if size <= args.skip_datasketch_above:
            base_s = datasketch_run(rows, params.threshold, params.num_perm, params.bands)
            entry["datasketch_s"] = round(base_s, 1)
            entry["datasketch_docs_per_s"] = round(size / base_s)
            entry["ratio_per_core"] = round((size / seconds / parallelism) / (size / base_s), 2)
        results[str(size)] = entry
        print(json.dumps(entry), flush=True)
        frame.unpersist()
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}",
        "params": {"threshold": params.threshold, "num_perm": params.num_perm, "bands": list(params.bands)},
        "results": results,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "fuzzy.json").write_text(json.dumps(summary, indent=2) + "\n")
    spark.stop()
    del F
