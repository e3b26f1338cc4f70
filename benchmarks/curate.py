"""Curation stage throughput: each stage on Spark (`local[2]`) beside a single-process run of the
same functions on the same documents, in the same run; plus peak memory.

The corpus is real text from the installed Python distributions: docstrings (domain `docs`) and
~40-line chunks of source files (domain `code`), with planted exact duplicates (5%), mojibake
(1%), a boilerplate footer on 10% of the docstrings and eval items (0.5%) copied into documents.
Every stage reads the same cached input, so each figure is that stage alone.

    python -m benchmarks curate --docs 100000
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FOOTER = "This documentation page was generated automatically from the module sources."


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = [tree, *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)]]
    return [d for n in nodes if (d := ast.get_docstring(n)) and len(d) >= 300]


def _code_chunks(source: str, lines: int = 40) -> list[str]:
    rows = source.split("\n")
    return ["\n".join(rows[i : i + lines]) for i in range(0, len(rows), lines) if len(rows[i : i + lines]) > 5]


def build_corpus(docs: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Bronze-shaped rows and the eval items planted in some of them."""
    import sysconfig

    root = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    rng = random.Random(seed)
    rng.shuffle(files)
    prose: list[str] = []
    code: list[str] = []
    wanted = int(docs * 0.935)
    for path in files:
        if len(prose) + len(code) >= wanted and len(prose) >= wanted // 2:
            break
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        prose.extend(_docstrings(source))
        if len(code) < wanted // 2:
            code.extend(_code_chunks(source))
    prose, code = prose[: wanted // 2], code[: wanted - min(len(prose), wanted // 2)]
    eval_items = prose[-200:]
    prose = prose[:-200]
    texts = [(t, "docs") for t in prose] + [(t, "code") for t in code]
    rows = []
    now = datetime.now(UTC)
    for i, (text, domain) in enumerate(texts):
        if domain == "docs" and i % 10 == 0:
            text = f"{text}\n\n{FOOTER}\n"
        rows.append(_row(f"base-{i}", text, domain, now))
    base = len(rows)
    while len(rows) < docs:
        i = len(rows)
        kind = rng.random()
        original = rows[rng.randrange(base)]
        if kind < 0.75:  # an exact copy under another id
            rows.append(_row(f"dup-{i}", original["text"], original["domain"], now))
        elif kind < 0.9:  # mojibake: UTF-8 read as Windows-1252
            text = "Naïve café résumé notes: " + original["text"]
            rows.append(_row(f"moji-{i}", text.encode("utf-8").decode("cp1252", errors="replace"), "docs", now))
        else:  # contaminated: an eval item inside
            rows.append(_row(f"eval-{i}", original["text"] + "\n" + rng.choice(eval_items), original["domain"], now))
    return rows, eval_items


def _row(record_id: str, text: str, domain: str, now: datetime) -> dict[str, Any]:
    return {
        "doc_id": hashlib.sha256(record_id.encode()).hexdigest()[:32],
        "record_id": record_id,
        "text": text,
        "source": f"bench-{domain}",
        "source_uri": "file:///bench",
        "locator": record_id,
        "ingested_at": now,
        "ingest_run_id": "bench",
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "license": "MIT",
        "license_source": "declared",
        "subject_ids": [],
        "consent": [],
        "domain": domain,
        "metadata": {},
    }


class PeakMemory:
    """Peak resident memory of a process tree (or one process), sampled every 0.2 s from /proc."""

    def __init__(self, root: int, tree: bool) -> None:
        self.root, self.tree, self.peak = root, tree, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        if not self.tree:
            return [self.root]
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def _rss(self) -> int:
        total = 0
        for pid in self._pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def measure(fn: Callable[[], Any], tree: bool) -> tuple[float, int, Any]:
    with PeakMemory(os.getpid(), tree) as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, memory.peak, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks curate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument(
        "--stages", default="normalize,language,quality,classifier,license,exact_dedup,decontaminate,gate"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".data" / "curate")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from benchmarks import baselines
    from curation.classifier import ClassifierParams, TrainSettings, classifier, train_quality_model
    from curation.decontaminate import DecontaminateParams, build_index, decontaminate
    from curation.exact_dedup import ExactDedupParams, exact_dedup
    from curation.gate import validate
    from curation.language import LanguageParams, language
    from curation.licensing import LicenseParams, license_stage
    from curation.normalize import NormalizeParams, normalize
    from curation.pipeline import prepare
    from curation.quality import QualityParams, quality
    from ingestion.bronze import ARROW_SCHEMA
    from jobs.config import cache_dir
    from jobs.spark import SparkSettings, get_spark

    args.work.mkdir(parents=True, exist_ok=True)
    corpus_file = args.work / f"corpus-{args.docs}.parquet"
    print(f"building a corpus of {args.docs:,} documents from installed Python sources", flush=True)
    rows, eval_items = build_corpus(args.docs)
    stamps = [pa.field("ingested_at", pa.timestamp("us", tz="UTC")), pa.field("ingest_run_id", pa.string())]
    schema = pa.schema([f for f in ARROW_SCHEMA if f.name in rows[0]] + stamps)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), corpus_file)
    texts = [r["text"] for r in rows]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    domains = Counter(r["domain"] for r in rows)
    print(f"{len(rows):,} documents, {megabytes:.1f} MB of text, {dict(domains)}", flush=True)

    model = args.work / "quality.fasttext.bin"
    prose = [r["text"] for r in rows if r["domain"] == "docs"][:3000]
    code = [r["text"] for r in rows if r["domain"] == "code"][:3000]
    train_quality_model(prose, code, model, TrainSettings(epoch=3))
    index = build_index([(f"item-{i}", "bench-eval", t) for i, t in enumerate(eval_items)], 13)

    settings = SparkSettings(master=args.master, driver_memory=args.driver_memory, app_name="millpond-bench-curate")
    spark = get_spark(settings, cache_dir())
    # As the curate job does: at least two partitions per core (the file is one Parquet row group).
    frame = prepare(spark.read.parquet(str(corpus_file)))
    frame = frame.repartition(spark.sparkContext.defaultParallelism * 2, "doc_id").persist(StorageLevel.MEMORY_AND_DISK)
    assert frame.count() == len(rows)

    params = {
        "normalize": NormalizeParams(),
        "language": LanguageParams(),
        "quality": QualityParams(),
        "classifier": ClassifierParams(model=str(model)),
        "license": LicenseParams(),
        "exact_dedup": ExactDedupParams(),
        "decontaminate": DecontaminateParams(),
    }
    spark_stages: dict[str, Callable[[], Any]] = {
        "normalize": lambda: normalize(frame, params["normalize"]),
        "language": lambda: language(frame, params["language"]),
        "quality": lambda: quality(frame, params["quality"]),
        "classifier": lambda: classifier(frame, params["classifier"]),
        "license": lambda: license_stage(frame, params["license"]),
        "exact_dedup": lambda: exact_dedup(frame, params["exact_dedup"]),
        "decontaminate": lambda: decontaminate(frame, params["decontaminate"], index),
    }
    results: dict[str, dict[str, Any]] = {}
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        base_s, base_mem, base_out = measure(lambda s=stage: baselines.run(s, rows, params, index), tree=False)
        if stage == "gate":
            spark_s, spark_mem, outcome = measure(
                lambda: validate(frame, check_lang=False, check_license=True, check_pii=True), tree=True
            )
            spark_out = Counter({"passed" if outcome.success else "failed": 1})
        else:

            def run_stage(s: str = stage) -> Counter[str]:
                decided = spark_stages[s]().select("doc_id", "decision.action", "decision.reason")
                decided = decided.localCheckpoint(eager=True)  # every row computed, once
                counts = decided.groupBy("action", "reason").count().collect()
                return Counter({f"{r[0]}:{r[1]}": r[2] for r in counts})

            spark_s, spark_mem, spark_out = measure(run_stage, tree=True)
        dropped_spark = sum(v for k, v in spark_out.items() if k.startswith("dropped"))
        dropped_base = sum(v for k, v in base_out.items() if k.startswith("dropped"))
        results[stage] = {
            "baseline_docs_per_s": round(len(rows) / base_s),
            "spark_docs_per_s": round(len(rows) / spark_s),
            "ratio": round(base_s / spark_s, 2),
            "baseline_s": round(base_s, 1),
            "spark_s": round(spark_s, 1),
            "baseline_peak_mb": round(base_mem / 1e6),
            "spark_peak_mb": round(spark_mem / 1e6),
            "dropped_spark": dropped_spark,
            "dropped_baseline": dropped_base,
        }
        print(f"{stage}: {json.dumps(results[stage])}", flush=True)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}, driver {args.driver_memory}",
        "documents": len(rows),
        "text_mb": round(megabytes, 1),
        "domains": dict(domains),
        "stages": results,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"curate-{args.docs}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| stage | single process docs/s | Spark docs/s | ratio | single process peak MB | Spark peak MB |")
    for stage, r in results.items():
        print(
            f"| {stage} | {r['baseline_docs_per_s']:,} | {r['spark_docs_per_s']:,} | {r['ratio']}x | "
            f"{r['baseline_peak_mb']:,} | {r['spark_peak_mb']:,} |"
        )
    frame.unpersist()
    spark.stop()
    del F
