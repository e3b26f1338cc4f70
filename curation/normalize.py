"""`normalize`: repair mojibake, NFC, strip control characters, normalize whitespace, and remove
boilerplate lines (lines that recur in many documents of one source, counted in Spark).

`clean_text` is the per-document part, plain Python so it is tested alone and serves the
single-process baseline; `normalize` is the Spark stage.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import ftfy
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, DROPPED, KEPT, MODIFIED, decision

BINARY_TEXT = "binary_text"
EMPTY_AFTER_CLEANING = "empty_after_cleaning"
BOILERPLATE = "boilerplate_lines"


@dataclass(frozen=True)
class NormalizeParams:
    """The `[curate.normalize]` section."""

    fix_mojibake: bool = True
    # A document whose share of control, replacement or private-use characters exceeds this
    # is binary data that slipped in as text: dropped as binary_text.
    max_binary_fraction: float = 0.1
    # Boilerplate: a trimmed line of at least `boilerplate_min_chars` characters found in at least
    # `boilerplate_min_docs` documents and `boilerplate_min_fraction` of its source's documents.
    boilerplate_min_chars: int = 20
    boilerplate_min_docs: int = 10
    boilerplate_min_fraction: float = 0.02
    # Repeated lines are structure, not boilerplate, in code (imports, closing braces, licence
    # headers) and in demonstrations (a system prompt every conversation shares).
    boilerplate_skip_domains: tuple[str, ...] = ("code", "sft")
    # Longer runs of blank lines are cut to this many (2 keeps PEP 8's spacing of code intact).
    max_blank_lines: int = 2


# Control characters other than tab and newline; the byte-order mark; non-characters.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
_BINARY = re.compile("[\x00-\x08\x0e-\x1f\x7f\ufffd\ue000-\uf8ff]")
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")  # Unicode spaces other than ' '
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_FTFY = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=True,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)


def binary_fraction(text: str) -> float:
    """Share of characters that do not belong in text: controls, U+FFFD, private use."""
    return len(_BINARY.findall(text)) / len(text) if text else 0.0


def clean_text(text: str, params: NormalizeParams = NormalizeParams()) -> tuple[str, list[str]]:
    """The cleaned text and what changed (`mojibake`, `nfc`, `control_chars`, `whitespace`)."""
    changes = []
    if params.fix_mojibake and not text.isascii():
        fixed = ftfy.fix_text(text, _FTFY)
        if fixed != text:
            changes.append("mojibake")
            text = fixed
    if not text.isascii():
        composed = unicodedata.normalize("NFC", text)
        if composed != text:
            changes.append("nfc")
            text = composed
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    stripped = _CONTROL.sub("", text)
    if stripped != text:
        changes.append("control_chars")
        text = stripped
    # Edges are left alone (a file's final newline is not worth a "modified"); blank runs collapse.
    blank_runs = "\n" * (params.max_blank_lines + 1)
    spaced = re.sub(blank_runs + "\n+", blank_runs, _TRAILING.sub("", _SPACES.sub(" ", text)))
    if spaced.strip() == "":
        spaced = ""
    if spaced != text:
        changes.append("whitespace")
    return spaced, changes


_CLEANED = T.StructType(
    [
        T.StructField("text", T.StringType(), True),
        T.StructField("changes", T.StringType(), True),
        T.StructField("binary", T.DoubleType(), True),
    ]
)


def remove_lines(text: str, boilerplate: frozenset[str], max_blank_lines: int = 2) -> tuple[str, bool]:
    """The text without the lines whose trimmed form is boilerplate; whether any went."""
    if not boilerplate:
        return text, False
    lines = text.split("\n")
    kept = [line for line in lines if line.strip() not in boilerplate]
    if len(kept) == len(lines):
        return text, False
    blank_runs = "\n" * (max_blank_lines + 1)
    return re.sub(blank_runs + "\n+", blank_runs, "\n".join(kept)), True


def _cleaner(params: NormalizeParams, boilerplate: dict[str, frozenset[str]]):  # noqa: ANN202 - a pandas UDF
    skip = set(params.boilerplate_skip_domains)

    @F.pandas_udf(_CLEANED)
    def clean(texts: pd.Series, sources: pd.Series, domains: pd.Series) -> pd.DataFrame:
        out_text, out_changes, out_binary = [], [], []
        for text, source, domain in zip(texts, sources, domains, strict=True):
            binary = binary_fraction(text)
            cleaned, changes = clean_text(text, params)
            if domain not in skip:
                cleaned, removed = remove_lines(cleaned, boilerplate.get(source, frozenset()), params.max_blank_lines)
                if removed:
                    changes.append(BOILERPLATE)
            if not cleaned.strip():
                cleaned = ""
            out_text.append(cleaned)
            out_changes.append(",".join(changes) or None)
            out_binary.append(binary)
        return pd.DataFrame({"text": out_text, "changes": out_changes, "binary": out_binary})

    return clean


def boilerplate_lines(frame: DataFrame, params: NormalizeParams) -> dict[str, frozenset[str]]:
    """Each source's boilerplate: trimmed lines of the raw text found in enough of its documents.

    Counted on Spark (lines grouped by a 64-bit hash, so the shuffle carries one copy of each
    line); the result is small (a line must recur in a share of a source's documents) and is
    handed to the cleaning step as a lookup.
    """
    eligible = frame.where(~F.coalesce(F.col("domain"), F.lit("")).isin(list(params.boilerplate_skip_domains)))
    lines = eligible.select(
        "source",
        F.explode(F.array_distinct(F.transform(F.split("text", "\n"), lambda line: F.trim(line)))).alias("line"),
    ).where(F.length("line") >= params.boilerplate_min_chars)
    source_docs = eligible.groupBy("source").agg(F.count("*").alias("source_docs"))
    common = (
        lines.groupBy("source", F.xxhash64("line").alias("line_hash"))
        .agg(F.count("*").alias("docs"), F.min("line").alias("line"))
        .where(F.col("docs") >= params.boilerplate_min_docs)
        .join(source_docs, "source")
        .where(F.col("docs") >= F.col("source_docs") * params.boilerplate_min_fraction)
        .select("source", "line")
    )
    found: dict[str, set[str]] = {}
    for row in common.collect():
        found.setdefault(row["source"], set()).add(row["line"])
    return {source: frozenset(lines) for source, lines in found.items()}


def normalize(frame: DataFrame, params: NormalizeParams) -> DataFrame:
    """Clean every document; drop binary and empty ones with a reason; record what changed."""
    boilerplate = boilerplate_lines(frame, params)
    cleaner = _cleaner(params, boilerplate)
    cleaned = (
        frame.withColumn("_clean", cleaner(F.col("text"), F.col("source"), F.coalesce(F.col("domain"), F.lit(""))))
        .withColumn("text", F.col("_clean.text"))
        .withColumn("_changes", F.col("_clean.changes"))
        .withColumn("_binary", F.col("_clean.binary"))
        .drop("_clean")
    )
    verdict = (
        F.when(F.col("_binary") > params.max_binary_fraction, decision(DROPPED, BINARY_TEXT, F.col("_binary")))
        .when(F.length("text") == 0, decision(DROPPED, EMPTY_AFTER_CLEANING))
        .when(F.col("_changes").isNotNull(), decision(MODIFIED, F.col("_changes")))
        .otherwise(decision(KEPT))
    )
    return cleaned.withColumn(DECISION, verdict).drop("_changes", "_binary")
