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
    # Repeated lines are structure, not boilerplate, in code (imports, closing braces, licence headers).
    boilerplate_skip_domains: tuple[str, ...] = ("code",)
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


def _cleaner(params: NormalizeParams):  # noqa: ANN202 - a pandas UDF
    @F.pandas_udf(_CLEANED)
    def clean(texts: pd.Series) -> pd.DataFrame:
        out_text, out_changes, out_binary = [], [], []
        for text in texts:
            binary = binary_fraction(text)
            cleaned, changes = clean_text(text, params)
            out_text.append(cleaned)
            out_changes.append(",".join(changes) or None)
            out_binary.append(binary)
        return pd.DataFrame({"text": out_text, "changes": out_changes, "binary": out_binary})

    return clean


def boilerplate_lines(frame: DataFrame, params: NormalizeParams) -> DataFrame:
    """(doc_id, boilerplate: array of the document's trimmed lines that are its source's boilerplate)."""
    eligible = frame.where(~F.coalesce(F.col("domain"), F.lit("")).isin(list(params.boilerplate_skip_domains)))
    lines = eligible.select(
        "doc_id",
        "source",
        F.explode(F.array_distinct(F.transform(F.split("text", "\n"), lambda line: F.trim(line)))).alias("line"),
    ).where(F.length("line") >= params.boilerplate_min_chars)
    source_docs = eligible.groupBy("source").agg(F.count("*").alias("source_docs"))
    common = (
        lines.groupBy("source", "line")
        .agg(F.count("*").alias("docs"))
        .join(source_docs, "source")
        .where(
            (F.col("docs") >= params.boilerplate_min_docs)
            & (F.col("docs") >= F.col("source_docs") * params.boilerplate_min_fraction)
        )
        .select("source", "line")
    )
    return lines.join(common, ["source", "line"]).groupBy("doc_id").agg(F.collect_set("line").alias("boilerplate"))


def normalize(frame: DataFrame, params: NormalizeParams) -> DataFrame:
    """Clean every document; drop binary and empty ones with a reason; record what changed."""
    cleaned = (
        frame.withColumn("_clean", _cleaner(params)(F.col("text")))
        .withColumn("text", F.col("_clean.text"))
        .withColumn("_changes", F.col("_clean.changes"))
        .withColumn("_binary", F.col("_clean.binary"))
        .drop("_clean")
    )
    boilerplate = boilerplate_lines(cleaned, params)
    marked = cleaned.join(boilerplate, "doc_id", "left")
    blank_runs = "\n" * (params.max_blank_lines + 1)
    without = F.regexp_replace(
        F.array_join(
            F.filter(F.split("text", "\n"), lambda line: ~F.array_contains(F.col("boilerplate"), F.trim(line))), "\n"
        ),
        blank_runs + "\n+",
        blank_runs,
    )
    has_boilerplate = F.col("boilerplate").isNotNull() & (F.size("boilerplate") > 0)
    marked = marked.withColumn("text", F.when(has_boilerplate, F.trim(without, F.lit("\n"))).otherwise(F.col("text")))
    reasons = F.concat_ws(",", "_changes", F.when(has_boilerplate, F.lit(BOILERPLATE)))
    verdict = (
        F.when(F.col("_binary") > params.max_binary_fraction, decision(DROPPED, BINARY_TEXT, F.col("_binary")))
        .when(F.length(F.trim("text")) == 0, decision(DROPPED, EMPTY_AFTER_CLEANING))
        .when(reasons != "", decision(MODIFIED, reasons))
        .otherwise(decision(KEPT))
    )
    return marked.withColumn(DECISION, verdict).drop("_changes", "_binary", "boilerplate")
