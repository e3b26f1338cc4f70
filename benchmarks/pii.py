"""PII detection: accuracy on presidio-research's synthetic set, and the stage's throughput.

Accuracy follows presidio-research's token-level protocol (its `Evaluator`): the sentences are
tokenized with spaCy; a token carries the entity of the span it overlaps, in the IO scheme;
dataset entities are mapped to ours (STREET_ADDRESS and GPE -> LOCATION; the entities neither
engine claims -> O: ORGANIZATION, DATE_TIME, TITLE, AGE, NRP, ZIP_CODE, DOMAIN_NAME,
US_DRIVER_LICENSE); stop words and punctuation are skipped; per entity precision and recall,
and overall precision, recall and F2 over "is this token PII", type ignored. In the same run,
Presidio's default `AnalyzerEngine` with the same spaCy model (score threshold 0.4) is scored
the same way.

Throughput on two corpora, through the `pii` stage in `local[2]` (scrub, counts, keyed hashes):
- the PII set: documents of about 2 KB, the set's sentences joined, so every line holds personal
  data; beside a single-process `BatchAnalyzerEngine` (default recognizers, same model) and our
  detector in one process, with peak resident memory;
- a web-like corpus: the curation benchmark's documents (docstrings and source code) with the
  set's sentences inserted into a tenth of them.
Where the time goes: each part of the detector timed alone over both corpora, and the Arrow round
trip of the text to the Python workers (an identity pandas UDF).

    python -m benchmarks pii --docs 2000 --web-docs 10000

Needs `../shared/data/presidio-research-synth-v2.json` (or `--data PATH`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import string
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd  # the identity UDF's type hints are read at run time

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "presidio-research-synth-v2.json"
MAPPING = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "LOCATION",
    "GPE": "LOCATION",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "IP_ADDRESS": "IP_ADDRESS",
    "IBAN_CODE": "IBAN_CODE",
}
OURS_TO_EVAL = {"STREET_ADDRESS": "LOCATION"}
EVAL_ENTITIES = sorted(set(MAPPING.values()))
BETA = 2.0


def score(samples: list[dict[str, Any]], predictions: list[list[tuple[str, int, int]]], nlp: Any) -> dict[str, Any]:
    """presidio-research's token-level scores for `predictions` ((type, start, end) per sample)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    skip = set(STOP_WORDS) | set(string.punctuation) | {""}
    results: Counter[tuple[str, str]] = Counter()
    for sample, spans, doc in zip(samples, predictions, nlp.pipe(s["full_text"] for s in samples), strict=True):
        for token in doc:
            if token.text.lower().strip() in skip:
                continue
            start, end = token.idx, token.idx + len(token.text)
            truth = next(
                (MAPPING.get(s["entity_type"], "O") for s in sample["spans"]
                 if s["start_position"] < end and start < s["end_position"]),
                "O",
            )  # fmt: skip
            guess = next((OURS_TO_EVAL.get(t, t) for t, s, e in spans if s < end and start < e), "O")
            results[(truth, guess if guess in EVAL_ENTITIES else "O")] += 1
    per_entity = {}
    for entity in EVAL_ENTITIES:
        annotated = sum(v for (a, _), v in results.items() if a == entity)
        predicted = sum(v for (_, p), v in results.items() if p == entity)
        tp = results[(entity, entity)]
        per_entity[entity] = {
            "precision": round(tp / predicted, 3) if predicted else None,
            "recall": round(tp / annotated, 3) if annotated else None,
            "tokens": annotated,
        }
    annotated = sum(v for (a, _), v in results.items() if a != "O")
    predicted = sum(v for (_, p), v in results.items() if p != "O")
    tp = sum(v for (a, p), v in results.items() if a != "O" and p != "O")
    precision, recall = tp / predicted, tp / annotated
    f_beta = (1 + BETA**2) * precision * recall / (BETA**2 * precision + recall)
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f2": round(f_beta, 3),
        "entities": per_entity,
    }


def presidio_default(model: str) -> Any:
    """Presidio's default AnalyzerEngine (all predefined recognizers), offline, with `model`."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from curation.pii_detect import _offline

    _offline()
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def documents(samples: list[dict[str, Any]], count: int, chars: int = 2000, seed: int = 0) -> list[str]:
    """`count` documents of about `chars` characters: the set's sentences, joined in random order."""
    rng = random.Random(seed)
    texts = [s["full_text"] for s in samples]
    out = []
    for _ in range(count):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(rng.choice(texts))
        out.append("\n".join(parts))
    return out


def web_corpus(samples: list[dict[str, Any]], count: int, share: float = 0.1, seed: int = 0) -> list[tuple[str, str]]:
    """(text, domain) of `count` documents of the curation benchmark's corpus (docstrings and
    source code of the installed packages), a `share` of them with one to three of the set's
    sentences inserted between their lines: personal data in a minority of documents, as in web
    text."""
    from benchmarks.curate import build_corpus

    rng = random.Random(seed)
    rows, _ = build_corpus(count, seed=seed)
    out = []
    for row in rows[:count]:
        text = row["text"]
        if rng.random() < share:
            lines = text.split("\n")
            for _ in range(rng.randint(1, 3)):
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(samples)["full_text"])
            text = "\n".join(lines)
        out.append((text, row["domain"]))
    return out


def breakdown(detector: Any, texts: list[str], ner: list[bool], params: Any) -> dict[str, float]:
    """Seconds per part of `detector.analyze` over `texts`, each part run alone in this process."""
    from curation.pii_detect import find_cards, find_emails, find_ibans, find_phones, find_secrets
    from curation.pii_screen import name_sentences, triggered
    from curation.pii_structure import candidates

    def seconds(work: Any) -> float:
        start = time.perf_counter()
        work()
        return round(time.perf_counter() - start, 2)

    named = [t for t, use in zip(texts, ner, strict=True) if use]
    nlp = detector._nlp
    out: dict[str, float] = {}
    # The screen the detector runs: the sentences where a name can be, with its name lexicon, cut
    # to its context words; each distinct span one spaCy doc (the memo starts empty here).
    lexicon, context = detector._lexicon, detector.settings.ner_context_words
    out["ner_screen"] = seconds(lambda: [name_sentences(t, lexicon, context) for t in named])
    spans = list(dict.fromkeys(t[s:e] for t in named for s, e in name_sentences(t, lexicon, context)))
    out["ner_screened_share"] = round(sum(map(len, spans)) / max(1, sum(map(len, named))), 3)
    out["ner_on_screened_text"] = seconds(lambda: list(nlp.pipe(spans, batch_size=params.batch_size)))
    out["ner_on_whole_texts"] = seconds(lambda: list(nlp.pipe(named, batch_size=params.batch_size)))
    disabled = [n for n in nlp.component_names if n not in nlp.pipe_names]
    for name in disabled:  # what every spaCy component costs: the detector before it ran NER alone
        nlp.enable_pipe(name)
    try:
        out["spacy_all_components_whole_texts"] = seconds(lambda: list(nlp.pipe(named, batch_size=params.batch_size)))
    finally:
        for name in disabled:
            nlp.disable_pipe(name)
    entities = detector._presidio_entities
    for recognizer in detector._pattern_recognizers:
        hits = [t for t in texts if triggered(recognizer.name, t)]
        out[f"{recognizer.name}_triggered_share"] = round(len(hits) / len(texts), 3)
        out[recognizer.name] = seconds(lambda r=recognizer, h=hits: [r.analyze(t, entities, None) for t in h])
    out["context_words_where_found"] = seconds(lambda: [detector._presidio_results(t, []) for t in texts]) - sum(
        out[r.name] for r in detector._pattern_recognizers
    )
    out["secrets"] = seconds(lambda: [find_secrets(t, detector._secret_screen) for t in texts])
    out["phones_cards_emails_ibans"] = seconds(
        lambda: [(find_phones(t), find_cards(t), find_emails(t), find_ibans(t)) for t in texts]
    )
    out["structure_keys_and_headers"] = seconds(lambda: [candidates(t, params.phone_regions) for t in texts])
    out["whole_detector"] = seconds(lambda: detector.analyze(texts, batch_size=params.batch_size, ner=ner))
    return {k: round(v, 3) for k, v in out.items()}


def stage_throughput(spark: Any, corpus: list[tuple[str, str]], params: Any) -> dict[str, Any]:
    """The `pii` stage in Spark over `corpus`, beside an identity pandas UDF over the same frame
    (the cost of moving the text to the Python workers and back), workers warm."""
    from pyspark.sql import functions as F

    from benchmarks.curate import PeakMemory
    from curation.pii import pii
    from curation.pipeline import prepare
    from lineage.catalog import BRONZE_DOCUMENTS

    now = datetime.now(UTC)
    records = [
        {f.name: None for f in BRONZE_DOCUMENTS.schema.fields}
        | {"doc_id": f"d{i}", "record_id": f"d{i}", "text": t, "source": "bench", "source_uri": "bench",
           "locator": str(i), "ingested_at": now, "ingest_run_id": "bench", "content_sha256": str(i),
           "license_source": "declared", "subject_ids": [], "metadata": {}, "domain": domain}
        for i, (t, domain) in enumerate(corpus)
    ]  # fmt: skip
    parallelism = spark.sparkContext.defaultParallelism
    frame = prepare(spark.createDataFrame(records, schema=BRONZE_DOCUMENTS.schema)).repartition(parallelism * 4)
    frame = frame.localCheckpoint(eager=True)
    # Warm the Python workers once (each builds its engine on first use), as a long job would.
    pii(frame.limit(parallelism * 4).repartition(parallelism), params).select("pii_counts").collect()

    @F.pandas_udf("string")
    def identity(texts: pd.Series) -> pd.Series:
        return texts

    start = time.perf_counter()
    frame.select(identity("text").alias("t")).localCheckpoint(eager=True)
    transfer_s = time.perf_counter() - start
    with PeakMemory(os.getpid(), tree=True) as memory:
        start = time.perf_counter()
        out = pii(frame, params).select("decision.action", "pii_counts").localCheckpoint(eager=True)
        stage_s = time.perf_counter() - start
    return {
        "documents": len(corpus),
        "mean_chars": round(sum(len(t) for t, _ in corpus) / len(corpus)),
        "stage_s": round(stage_s, 1),
        "stage_docs_per_s": round(len(corpus) / stage_s, 1),
        "stage_peak_mb": round(memory.peak / 1e6),
        "documents_modified": out.where("action = 'modified'").count(),
        "arrow_round_trip_s": round(transfer_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks pii", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--web-docs", type=int, default=10000, help="documents of the web-like corpus")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-part timings")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pii.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("MILLPOND_PII_KEY", "benchmark-key-" + "0" * 32)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: not found (presidio-research's synth_dataset_v2.json; --data PATH)")
    import spacy
    from presidio_analyzer import BatchAnalyzerEngine

    from benchmarks.curate import PeakMemory
    from curation.pii import PiiParams
    from curation.pii_detect import PiiDetector, resolve_overlaps

    samples = json.loads(args.data.read_text())
    params = PiiParams()
    nlp = spacy.load(params.spacy_model)
    texts = [s["full_text"] for s in samples]

    ours = PiiDetector(params.detector_settings())
    found = [[(f.entity_type, f.start, f.end) for f in resolve_overlaps(fs)] for fs in ours.analyze(texts)]
    default = presidio_default(params.spacy_model)
    theirs = [
        [(r.entity_type, r.start, r.end) for r in results]
        for results in BatchAnalyzerEngine(default).analyze_iterator(texts, language="en", score_threshold=0.4)
    ]
    accuracy = {"millpond": score(samples, found, nlp), "presidio_default": score(samples, theirs, nlp)}
    print(json.dumps({"accuracy": accuracy}), flush=True)

    docs = documents(samples, args.docs)
    web = web_corpus(samples, args.web_docs)
    web_texts = [t for t, _ in web]
    web_ner = [d not in params.ner_skip_domains for _, d in web]

    def timed(work: Any) -> tuple[float, int]:
        with PeakMemory(os.getpid(), tree=False) as memory:
            start = time.perf_counter()
            work()
            seconds = time.perf_counter() - start
        return seconds, memory.peak

    base_s, base_peak = timed(
        lambda: list(BatchAnalyzerEngine(default).analyze_iterator(docs, language="en", score_threshold=0.4))
    )
    single_s, single_peak = timed(lambda: ours.analyze(docs, batch_size=params.batch_size))
    web_single_s, _ = timed(lambda: ours.analyze(web_texts, batch_size=params.batch_size, ner=web_ner))
    parts = {}
    if not args.no_breakdown:
        parts = {
            "pii_set": breakdown(ours, docs, [True] * len(docs), params),
            "web": breakdown(ours, web_texts, web_ner, params),
        }
        print(json.dumps({"breakdown": parts}), flush=True)

    from jobs.config import cache_dir
    from jobs.spark import SparkSettings, get_spark

    spark = get_spark(SparkSettings(master=args.master, app_name="millpond-bench-pii"), cache_dir())
    stage = {"pii_set": stage_throughput(spark, [(d, "docs") for d in docs], params)}
    stage["web"] = stage_throughput(spark, web, params)
    spark.stop()

    throughput = {
        "stage": stage,
        "presidio_batch_1proc_s": round(base_s, 1),
        "presidio_batch_docs_per_s": round(len(docs) / base_s, 1),
        "presidio_batch_peak_mb": round(base_peak / 1e6),
        "millpond_detector_1proc_s": round(single_s, 1),
        "millpond_detector_docs_per_s": round(len(docs) / single_s, 1),
        "millpond_detector_peak_mb": round(single_peak / 1e6),
        "millpond_detector_web_docs_per_s": round(len(web) / web_single_s, 1),
        "ratio_stage_vs_presidio_batch": round(base_s / stage["pii_set"]["stage_s"], 2),
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3),
    }
    print(json.dumps({"throughput": throughput}), flush=True)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}",
        "spacy_model": params.spacy_model,
        "accuracy": accuracy,
        "throughput": throughput,
        "breakdown_s": parts,
    }
    args.out.parent.mkdir(exist_ok=True, parents=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
