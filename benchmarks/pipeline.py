"""The whole pipeline on one corpus: millpond's ingest and curate beside DataTrove, same files, same cores.

    python -m benchmarks pipeline --docs 100000 [--datatrove-python .cache/datatrove-venv/bin/python]

The corpus: documents of about 2 KB of real English (the plain sentences of the installed
packages' docstrings, in paragraphs), written as JSONL files, with what
the stage benchmarks plant: near-duplicate variants of one original in five, exact copies,
mojibake, a boilerplate line, eval items (hh-rlhf dialogues) pasted into 0.5% of the documents
(registered as an eval set), and personal data from presidio-research's sentences in a tenth of them.

millpond, in `local[2]`: `millpond ingest`, then into one copy of the lakehouse the stages
DataTrove also has and that do the same work (`language`, `quality`, `fuzzy_dedup`; PII is timed
apart, since DataTrove's formatter only replaces e-mail and IP addresses), into another the whole
default `millpond curate` (decisions log, Delta MERGEs, keyed PII index, gate); each stage
also alone on the ingested batch. DataTrove (`benchmarks/datatrove_pipeline.py`, in its own
virtualenv since its pins differ), after the JVM has exited, with `LocalPipelineExecutor` and
as many tasks as cores: reader, language filter (the same lid.176 model), Gopher repetition and
quality filters, C4's lorem-ipsum check, PII formatter, MinHash dedup in four steps. Both with
the same thresholds; drops compared filter by filter.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATATROVE_PYTHON = ROOT / ".cache" / "datatrove-venv" / "bin" / "python"
# The stages both have, doing the same work. PII is not among them: DataTrove's formatter replaces
# e-mail and IP addresses by regex; millpond's stage runs NER and a dozen recognizers, keys what
# it finds and scrubs metadata. Both are timed apart.
LIKE_FOR_LIKE = ["language", "quality", "fuzzy_dedup"]


_PROSE = re.compile(r"[A-Z][A-Za-z ,;'-]+")


class ProseOriginals:
    """Original documents of about 2 KB made of the plain English sentences of the installed
    packages' docstrings (letters, spaces, commas; no code, no symbols), in paragraphs of three
    to six sentences: prose both sides' quality filters read alike, unlike docstrings, whose
    code and symbols DataTrove's spaCy-token word count and millpond's whitespace word count
    judge differently."""

    def __init__(self, pool: list[str], seed: int) -> None:
        sentences = {s.strip() for d in pool for s in d.replace("\n", " ").split(". ")}
        self.sentences = sorted(s for s in sentences if len(s) > 40 and len(s.split()) >= 7 and _PROSE.fullmatch(s))
        self.seed = seed

    def __call__(self, i: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + i)
        paragraphs: list[str] = []
        while sum(len(p) + 2 for p in paragraphs) < 2000:
            paragraphs.append(" ".join(rng.choice(self.sentences) + "." for _ in range(rng.randint(3, 6))))
        return "\n\n".join(paragraphs)


def eval_set(count: int) -> list[str]:
    """Eval items that share no sentence with the corpus: the first 600 characters of real
    dialogues from ../shared/data's hh-rlhf test split."""
    import gzip

    path = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        dialogues = [json.loads(line)["chosen"].strip() for line in handle]
    return [d[:600] for d in dialogues if len(d) >= 300][:count]


def build_corpus(
    docs: int, folder: Path, samples: list[dict[str, Any]], files: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Write `docs` JSONL records (`id`, `text`) into `files` files in `folder`; what was planted."""
    from benchmarks.fuzzy import docstring_pool, variant

    rng = random.Random(seed)
    original = ProseOriginals(docstring_pool(HERE / ".data" / "docstrings.json.gz"), seed)
    eval_items = eval_set(200)
    folder.mkdir(parents=True, exist_ok=True)
    handles = [(folder / f"part-{k:03d}.jsonl").open("w", encoding="utf-8") for k in range(files)]
    planted: Counter[str] = Counter()
    written = 0
    i = 0

    def write(text: str, kind: str) -> None:
        nonlocal written
        handles[written % files].write(json.dumps({"id": f"d{written:08d}", "text": text}) + "\n")
        written += 1
        planted[kind] += 1

    try:
        while written < docs:
            base = original(i)
            if rng.random() < 0.1:  # personal data between the lines
                lines = base.split(". ")
                for _ in range(rng.randint(1, 3)):
                    lines.insert(rng.randrange(len(lines) + 1), rng.choice(samples)["full_text"])
                base = ". ".join(lines)
                planted["personal_data"] += 1
            if rng.random() < 0.005:
                base = f"{base}\n{rng.choice(eval_items)}"
                planted["eval_item"] += 1
            write(base, "original")
            if i % 5 == 0 and written < docs:
                for _ in range(rng.randint(1, 3)):
                    if written < docs:
                        write(variant(rng, base, rng.choice([0.01, 0.02, 0.04, 0.08, 0.15])), "near_duplicate")
            if rng.random() < 0.05 and written < docs:
                write(base, "exact_copy")
            if rng.random() < 0.03 and written < docs:
                mojibake = ("Naïve café résumé notes: " + base).encode("utf-8").decode("cp1252", errors="replace")
                write(mojibake, "mojibake")
            i += 1
    finally:
        for handle in handles:
            handle.close()
    (folder.parent / "eval_items.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in eval_items))
    megabytes = sum(p.stat().st_size for p in folder.glob("*.jsonl")) / 1e6
    return {"documents": written, "files": files, "megabytes": round(megabytes, 1), "planted": dict(planted)}


def millpond_side(args: argparse.Namespace, corpus: Path, work: Path) -> dict[str, Any]:
    """Ingest once, curate the like-for-like stages and the whole default pipeline (each into its
    own copy of the lakehouse), then every stage alone on the ingested batch."""
    from benchmarks.curate import PeakMemory
    from jobs.config import DEFAULTS, Config, cache_dir
    from jobs.curate import run_curate
    from jobs.evalset import add_command
    from jobs.ingest import run_ingest
    from jobs.spark import SparkSettings, get_spark

    def config_for(lakehouse: Path) -> Config:
        values = copy.deepcopy(DEFAULTS)
        values["lakehouse"] = str(lakehouse)
        values["mlflow"]["log_data_jobs"] = False
        return Config(values=values, file=None)

    import tomli_w

    manifest = work / "sources.toml"
    source = {"name": "bench", "format": "jsonl", "path": f"{corpus}/*.jsonl", "id_field": "id", "license": "MIT",
              "domain": "prose"}  # fmt: skip
    manifest.write_text(tomli_w.dumps({"source": [source]}))
    like, full = work / "lakehouse-like", work / "lakehouse-full"
    for folder in (like, full):
        shutil.rmtree(folder, ignore_errors=True)
    settings = SparkSettings(master=args.master, driver_memory=args.driver_memory, app_name="millpond-bench-pipeline")
    spark = get_spark(settings, cache_dir())
    out: dict[str, Any] = {}

    def timed(name: str, work_fn: Any) -> Any:
        with PeakMemory(os.getpid(), tree=True) as memory:
            start = time.perf_counter()
            result = work_fn()
            seconds = time.perf_counter() - start
        out[name] = {"seconds": round(seconds, 1), "peak_mb": round(memory.peak / 1e6)}
        print(f"millpond {name}: {out[name]}", flush=True)
        return result

    ingested = timed("ingest", lambda: run_ingest(spark, config_for(like), manifest))
    out["ingest"]["rows"] = ingested.ingested
    whole = not args.like_for_like_only
    if whole:  # the same ingest in a second lakehouse, with the eval set registered, for the default curate
        shutil.copytree(like, full)
        add_command.main(
            ["bench-eval", str(work / "eval_items.jsonl"), "--lakehouse", str(full), "--master", args.master],
            standalone_mode=False,
        )
    if not args.skip_like_for_like:
        report = timed("curate_like_for_like", lambda: run_curate(spark, config_for(like), LIKE_FOR_LIKE))
        out["curate_like_for_like"]["funnel"] = report.stages
    if whole:
        report = timed("curate_full", lambda: run_curate(spark, config_for(full)))
        out["curate_full"]["funnel"] = report.stages
        out["curate_full"]["skipped"] = report.skipped
        if not args.skip_stages_alone:
            ran = [s["stage"] for s in report.stages]
            out["stages_alone"] = stages_alone(spark, config_for(full), full, ran)
    spark.stop()
    return out


def stages_alone(spark: Any, config: Any, lakehouse: Path, ran: list[str]) -> dict[str, float]:
    """Seconds of each stage of `ran` alone on the ingested batch (as the curate benchmark times them)."""
    from pyspark import StorageLevel

    from curation.batch import bind_stages
    from curation.pipeline import prepare
    from curation.registry import stages
    from jobs.curate import stage_params
    from lineage.catalog import BRONZE_DOCUMENTS

    chosen = [name for name in ran if name in {spec.name for spec in stages()}]
    params = {spec.name: stage_params(spec, config) for spec in stages()}
    batch = prepare(spark.read.format("delta").load(BRONZE_DOCUMENTS.path(lakehouse)))
    batch = batch.repartition(spark.sparkContext.defaultParallelism * 2, "doc_id").persist(StorageLevel.MEMORY_AND_DISK)
    batch.count()
    bound, _ = bind_stages(spark, lakehouse, chosen, params, None, True)
    seconds: dict[str, float] = {}
    for name, apply in bound:
        start = time.perf_counter()
        apply(batch).select("doc_id", "decision.action").localCheckpoint(eager=True)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"millpond {name} alone: {seconds[name]} s", flush=True)
    batch.unpersist()
    return seconds


def datatrove_side(args: argparse.Namespace, corpus: Path, work: Path) -> dict[str, Any]:
    """DataTrove's run in its own interpreter, its process tree's peak memory beside it."""
    from benchmarks.curate import PeakMemory
    from curation.language import LanguageParams, model_path

    target = work / "datatrove"
    shutil.rmtree(target, ignore_errors=True)
    command = [str(args.datatrove_python), str(HERE / "datatrove_pipeline.py"), "--input", str(corpus),
               "--work", str(target), "--lid-model", str(model_path(LanguageParams())), "--tasks", str(args.tasks)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    with PeakMemory(process.pid, tree=True) as memory:
        stdout, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"DataTrove's run failed (exit {process.returncode}): {' '.join(command)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_mb"] = round(memory.peak / 1e6)
    return result


def drops(ours: list[dict[str, Any]], theirs: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Documents each side dropped per filter family: language, quality, near-duplicates."""
    mine = {row["stage"]: sum(row["dropped"].values()) for row in ours}
    steps = {
        step["name"]: step["stats"].get("dropped") or 0
        for part in theirs["steps"].values()
        for step in part["stats"]
    }  # fmt: skip
    quality = sum(v for k, v in steps.items() if "Gopher" in k or "C4" in k)
    language = sum(v for k, v in steps.items() if "Language" in k)
    fuzzy = sum(v for k, v in steps.items() if "MinHash stage 4" in k)  # the filter step
    return {
        "language": {"millpond": mine.get("language", 0), "datatrove": language},
        "quality": {"millpond": mine.get("quality", 0), "datatrove": quality},
        "near_duplicates": {"millpond": mine.get("fuzzy_dedup", 0), "datatrove": fuzzy},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--tasks", type=int, default=2, help="DataTrove's tasks and workers (the same cores)")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--datatrove-python", type=Path, default=DATATROVE_PYTHON)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "presidio-research-synth-v2.json"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".data" / "pipeline")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--out", type=Path, help="the results file (default: results/pipeline-DOCS.json)")
    parser.add_argument(
        "--skip-like-for-like",
        action="store_true",
        help="only the whole default pipeline (ingest + curate), when the like-for-like run is known",
    )
    parser.add_argument("--skip-stages-alone", action="store_true", help="do not time each stage alone")
    parser.add_argument(
        "--like-for-like-only",
        action="store_true",
        help="skip the whole default curate and the stages alone (PII takes about 30 minutes per 100k documents here)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("MILLPOND_PII_KEY", "benchmark-key-" + "0" * 32)
    if not args.skip_datatrove and not args.datatrove_python.is_file():
        raise SystemExit(
            f"{args.datatrove_python}: no DataTrove interpreter; make one with\n"
            f"  python3.11 -m venv .cache/datatrove-venv && "
            f".cache/datatrove-venv/bin/pip install 'datatrove[processing]==0.10.1' fasttext-numpy2-wheel spacy\n"
            "or run with --skip-datatrove"
        )
    samples = json.loads(args.data.read_text())
    work = args.work / str(args.docs)
    corpus = work / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    print(f"writing {args.docs:,} documents to {corpus}", flush=True)
    built = build_corpus(args.docs, corpus, samples)
    print(json.dumps(built), flush=True)
    ours = millpond_side(args, corpus, work)
    theirs = None if args.skip_datatrove else datatrove_side(args, corpus, work)
    if theirs is not None:
        print(f"datatrove: {json.dumps(theirs)}", flush=True)
    docs = built["documents"]
    like_s = (
        ours["ingest"]["seconds"] + ours["curate_like_for_like"]["seconds"] if "curate_like_for_like" in ours else None
    )
    full_s = ours["ingest"]["seconds"] + ours["curate_full"]["seconds"] if "curate_full" in ours else None
    summary: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}, DataTrove tasks {args.tasks}",
        "python": sys.version.split()[0],
        "corpus": built,
        "millpond": ours,
        "datatrove": theirs,
        "docs_per_s": {
            "millpond_like_for_like": round(docs / like_s, 1) if like_s else None,
            "millpond_full": round(docs / full_s, 1) if full_s else None,
            "datatrove": round(docs / theirs["seconds"], 1) if theirs else None,
        },
    }
    if theirs and like_s:
        summary["ratio_like_for_like"] = round(theirs["seconds"] / like_s, 2)  # > 1: millpond faster
        summary["ratio_full_vs_datatrove"] = round(full_s / theirs["seconds"], 2) if full_s else None  # goal <= 2
        summary["drops"] = drops(ours["curate_like_for_like"]["funnel"], theirs)
    out = args.out or HERE / "results" / f"pipeline-{docs}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps({k: summary[k] for k in summary if k not in ("millpond", "datatrove")}, indent=2, default=str))
