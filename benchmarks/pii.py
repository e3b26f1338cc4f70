"""PII detection: accuracy on presidio-research's synthetic set, and the stage's throughput.

Accuracy follows presidio-research's token-level protocol (its `Evaluator`): the sentences are
tokenized with spaCy; a token carries the entity of the span it overlaps, in the IO scheme;
dataset entities are mapped to ours (STREET_ADDRESS and GPE -> LOCATION; the entities neither
engine claims -> O: ORGANIZATION, DATE_TIME, TITLE, AGE, NRP, ZIP_CODE, DOMAIN_NAME,
US_DRIVER_LICENSE); stop words and punctuation are skipped; per entity precision and recall,
and overall precision, recall and F2 over "is this token PII", type ignored. In the same run,
Presidio's default `AnalyzerEngine` with the same spaCy model (score threshold 0.4) is scored
the same way.

Throughput: documents of about 2 KB (the set's sentences joined) through the `pii` stage in
`local[2]` (scrub, counts, keyed hashes), beside a single-process `BatchAnalyzerEngine`
(default recognizers, same model) analyzing the same documents, and beside our detector in
one process; peak resident memory of each.

    python -m benchmarks pii --docs 2000

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks pii", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("MILLPOND_PII_KEY", "benchmark-key-" + "0" * 32)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: not found (presidio-research's synth_dataset_v2.json; --data PATH)")
    import spacy
    from presidio_analyzer import BatchAnalyzerEngine

    from benchmarks.curate import PeakMemory
    from curation.pii import PiiParams, pii
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
    chars = sum(len(d) for d in docs)

    def timed(work: Any) -> tuple[float, int]:
        with PeakMemory(os.getpid(), tree=False) as memory:
            start = time.perf_counter()
            work()
            seconds = time.perf_counter() - start
        return seconds, memory.peak

    # The key pass over structured text (names and phones under keys and column headers) beside
    # the NER pass it runs next to, on the same documents.
    from curation.pii_structure import candidates

    settings = params.detector_settings()
    structure_s, _ = timed(lambda: [candidates(d, settings.phone_regions) for d in docs])
    ner_s, _ = timed(lambda: list(ours._nlp.pipe(docs, batch_size=params.batch_size)) if ours._nlp else None)
    base_s, base_peak = timed(
        lambda: list(BatchAnalyzerEngine(default).analyze_iterator(docs, language="en", score_threshold=0.4))
    )
    single_s, single_peak = timed(lambda: ours.analyze(docs))

    from curation.pipeline import prepare
    from jobs.config import cache_dir
    from jobs.spark import SparkSettings, get_spark
    from lineage.catalog import BRONZE_DOCUMENTS

    spark = get_spark(SparkSettings(master=args.master, app_name="millpond-bench-pii"), cache_dir())
    now = datetime.now(UTC)
    records = [
        {f.name: None for f in BRONZE_DOCUMENTS.schema.fields}
        | {"doc_id": f"d{i}", "record_id": f"d{i}", "text": t, "source": "bench", "source_uri": "bench",
           "locator": str(i), "ingested_at": now, "ingest_run_id": "bench", "content_sha256": str(i),
           "license_source": "declared", "subject_ids": [], "metadata": {}}
        for i, t in enumerate(docs)
    ]  # fmt: skip
    parallelism = spark.sparkContext.defaultParallelism
    frame = prepare(spark.createDataFrame(records, schema=BRONZE_DOCUMENTS.schema)).repartition(parallelism * 4)
    frame = frame.localCheckpoint(eager=True)
    # Warm the Python workers once (each builds its engine on first use), as a long job would.
    pii(frame.limit(parallelism * 4).repartition(parallelism), params).select("pii_counts").collect()
    with PeakMemory(os.getpid(), tree=True) as memory:
        start = time.perf_counter()
        out = pii(frame, params).select("decision.action", "pii_counts").localCheckpoint(eager=True)
        spark_s = time.perf_counter() - start
    modified = out.where("action = 'modified'").count()
    spark.stop()

    throughput = {
        "documents": len(docs),
        "mean_chars": round(chars / len(docs)),
        "stage_local2_s": round(spark_s, 1),
        "stage_docs_per_s": round(len(docs) / spark_s, 1),
        "stage_peak_mb": round(memory.peak / 1e6),
        "documents_modified": modified,
        "presidio_batch_1proc_s": round(base_s, 1),
        "presidio_batch_docs_per_s": round(len(docs) / base_s, 1),
        "presidio_batch_peak_mb": round(base_peak / 1e6),
        "millpond_detector_1proc_s": round(single_s, 1),
        "millpond_detector_docs_per_s": round(len(docs) / single_s, 1),
        "millpond_detector_peak_mb": round(single_peak / 1e6),
        "ratio_stage_vs_presidio_batch": round(base_s / spark_s, 2),
        "structure_pass_1proc_s": round(structure_s, 2),
        "ner_pass_1proc_s": round(ner_s, 1),
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3),
    }
    print(json.dumps({"throughput": throughput}), flush=True)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}",
        "spacy_model": params.spacy_model,
        "accuracy": accuracy,
        "throughput": throughput,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "pii.json").write_text(json.dumps(summary, indent=2) + "\n")
