"""`license`: detect a document's license, combine it with the declared one, apply the policy.

Detection, most specific first: an `SPDX-License-Identifier:` header (parsed and normalized
with license-expression, so `GPL-3.0` becomes `GPL-3.0-only`), then a full license text
matched against the SPDX license list's texts (the `spdx` package's data files) by word
6-gram containment. Otherwise the declared license stays; with none, `NOASSERTION`
(SPDX's word for "unknown").

Policy: for each purpose (e.g. pretraining) an allowlist; a compound expression is allowed
when `OR` offers an allowed choice and every part of an `AND` is allowed. Unknown licenses
stay in silver, flagged; snapshots refuse them by default. A denied license is dropped.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, DROPPED, KEPT, MODIFIED, decision

NOASSERTION = "NOASSERTION"
ALLOWED, NOT_ALLOWED, UNKNOWN = "allowed", "not_allowed", "unknown"
DETECTED = "detected"
DENIED = "license_denied"
FLAGGED_UNKNOWN = "license_unknown"

PERMISSIVE = (
    "0BSD",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    "CC-BY-4.0",
    "HPND",
    "ISC",
    "LicenseRef-Public-Domain",
    "MIT",
    "MIT-0",
    "MPL-2.0",
    "PSF-2.0",
    "Python-2.0",
    "Unlicense",
    "Zlib",
)


def _default_purposes() -> dict[str, list[str]]:
    # preference pairs and demonstrations from external sources answer to the same allowlist
    return {purpose: list(PERMISSIVE) for purpose in ("pretraining", "preference", "sft")}


@dataclass(frozen=True)
class LicenseParams:
    """The `[curate.license]` section."""

    # purpose -> allowed SPDX ids (`[curate.license.purposes] pretraining = [...]`)
    purposes: dict[str, list[str]] = field(default_factory=_default_purposes)
    deny: tuple[str, ...] = ()  # documents under these licenses are dropped outright
    # A full license text counts as found when this share of its word 6-grams is in the document.
    min_text_containment: float = 0.6
    header_lines: int = 40  # SPDX-License-Identifier headers are looked for in the first lines only


_HEADER = re.compile(r"SPDX-License-Identifier:\s*(.+?)\s*(?:\*/|-->|#\}|$)", re.MULTILINE)
_WORDS = re.compile(r"[a-z0-9]+")
_SHINGLE = 6


@functools.cache
def _licensing():  # noqa: ANN202
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def normalize_expression(expression: str) -> str | None:
    """An SPDX expression in canonical form, or None when it is not one."""
    from license_expression import ExpressionError

    try:
        return _licensing().parse(expression, validate=True).render()
    except ExpressionError:
        # Our own LicenseRef-* ids are valid SPDX but unknown to the list.
        try:
            parsed = _licensing().parse(expression)
        except ExpressionError:
            return None
        if parsed is None:
            return None
        unknown = _licensing().unknown_license_keys(parsed)
        return parsed.render() if all(k.startswith("LicenseRef-") for k in unknown) else None
    except Exception:  # noqa: BLE001 - license-expression raises plain errors on odd input
        return None


def spdx_header(text: str, lines: int = 40) -> str | None:
    """The expression of the first valid `SPDX-License-Identifier:` header in the first lines."""
    head = "\n".join(text.split("\n", lines)[:lines])
    for match in _HEADER.finditer(head):
        expression = normalize_expression(match.group(1).strip().strip("\"'"))
        if expression:
            return expression
    return None


def _shingles(text: str) -> set[str]:
    words = _WORDS.findall(text.lower())
    return {" ".join(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


@functools.cache
def _license_index() -> tuple[dict[str, list[str]], dict[str, int]]:
    """shingle -> SPDX ids whose text has it; SPDX id -> number of its shingles."""
    import spdx

    folder = Path(spdx.__file__).parent / "data"
    records = json.loads((folder / "db.json").read_text(encoding="utf-8"))["licenses"]
    index: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for record in records:
        ident = normalize_expression(record["id"])
        # Deprecated ids that license-expression maps onto another license (BSD-2-Clause-FreeBSD
        # onto BSD-2-Clause) would count that license twice; GPL-3.0 -> GPL-3.0-only is kept.
        if ident is None or ident in sizes or not ident.startswith(record["id"]):
            continue
        try:
            body = (folder / record["template"]).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            body = (folder / record["template"]).read_text(encoding="latin-1")
        shingles = _shingles(body)
        if len(shingles) < 10:
            continue
        sizes[ident] = len(shingles)
        for shingle in shingles:
            index.setdefault(shingle, []).append(ident)
    return index, sizes


_MENTIONS = re.compile(r"licen[cs]e|copyright|permission", re.IGNORECASE)


def license_text(text: str, min_containment: float = 0.6) -> str | None:
    """The SPDX id of a full license text the document contains, if any."""
    if not _MENTIONS.search(text):
        return None
    index, sizes = _license_index()
    hits: Counter[str] = Counter()
    for shingle in _shingles(text):
        for ident in index.get(shingle, ()):
            hits[ident] += 1
    found = [(hits[i] / sizes[i], hits[i], i) for i in hits if hits[i] / sizes[i] >= min_containment]
    if not found:
        return None
    best = max(found)
    # A longer license that contains a shorter one's text (BSD-3 over BSD-2) matches about as well
    # and covers more of the document: prefer it.
    close = [f for f in found if f[0] >= best[0] - 0.05]
    return max(close, key=lambda f: (f[1], f[0], -len(f[2])))[2]  # identical texts: the plain id


def detect_license(text: str, params: LicenseParams = LicenseParams()) -> str | None:
    """The license the text itself states: an SPDX header, else a full license text."""
    return spdx_header(text, params.header_lines) or license_text(text[:200_000], params.min_text_containment)


def allowed_under(expression: str | None, allowlist: set[str]) -> str:
    """allowed / not_allowed / unknown for one purpose's allowlist."""
    if not expression or expression == NOASSERTION:
        return UNKNOWN
    from license_expression import AND, OR, LicenseSymbol, LicenseWithExceptionSymbol

    try:
        parsed = _licensing().parse(expression)
    except Exception:  # noqa: BLE001
        return UNKNOWN

    def check(node: object) -> bool:
        if isinstance(node, LicenseWithExceptionSymbol):
            return check(node.license_symbol)
        if isinstance(node, LicenseSymbol):
            return node.key in allowlist
        if isinstance(node, OR):
            return any(check(arg) for arg in node.args)
        if isinstance(node, AND):
            return all(check(arg) for arg in node.args)
        return False

    return ALLOWED if check(parsed) else NOT_ALLOWED


def resolve(
    text: str, declared: str | None, declared_source: str | None, params: LicenseParams
) -> tuple[str, str, dict[str, str]]:
    """(license, license_source, policy by purpose) of one document."""
    detected = detect_license(text, params)
    if detected:
        license_, source = detected, DETECTED
    elif declared:
        license_, source = normalize_expression(declared) or declared, declared_source or "declared"
    else:
        license_, source = NOASSERTION, UNKNOWN
    return license_, source, policy_of(license_, params.purposes)


def policy_of(expression: str | None, purposes: dict[str, list[str]]) -> dict[str, str]:
    """allowed / not_allowed / unknown by purpose for a (normalized) license expression."""
    return {purpose: allowed_under(expression, set(ids)) for purpose, ids in purposes.items()}


def carry_license(frame: DataFrame, params: LicenseParams) -> DataFrame:
    """`license_policy` from the license a row already has (declared in the manifest or read from a
    field), for a run without the `license` stage: skipping the stage that refines a license must
    not turn a known one into `unknown` for the snapshot policy. No detection, no decision."""
    purposes = {purpose: list(ids) for purpose, ids in params.purposes.items()}
    cache: dict[str | None, str] = {}

    @F.pandas_udf(T.StringType())
    def policies(licenses: pd.Series) -> pd.Series:
        out = []
        for lic in licenses:
            key = lic if isinstance(lic, str) else None
            if key not in cache:
                cache[key] = json.dumps(policy_of(key and (normalize_expression(key) or key), purposes))
            out.append(cache[key])
        return pd.Series(out)

    carried = F.from_json(policies(F.col("license")), T.MapType(T.StringType(), T.StringType()))
    return frame.withColumn("license_policy", F.coalesce(F.col("license_policy"), carried))


_RESOLVED = T.StructType(
    [
        T.StructField("license", T.StringType()),
        T.StructField("license_source", T.StringType()),
        T.StructField("policy", T.StringType()),  # JSON, turned into a map in Spark
    ]
)


def license_stage(frame: DataFrame, params: LicenseParams) -> DataFrame:
    """Set `license`, `license_source` and `license_policy`; drop denied licenses; flag unknown ones."""

    @F.pandas_udf(_RESOLVED)
    def resolve_all(texts: pd.Series, declared: pd.Series, sources: pd.Series) -> pd.DataFrame:
        rows = []
        for text, lic, src in zip(texts, declared, sources, strict=True):
            license_, source, policy = resolve(text, lic if isinstance(lic, str) else None, src, params)
            rows.append((license_, source, json.dumps(policy)))
        return pd.DataFrame(rows, columns=["license", "license_source", "policy"])

    out = frame.withColumn("_was", F.struct("license", "license_source")).withColumn(
        "_lic", resolve_all(F.col("text"), F.col("license"), F.col("license_source"))
    )
    out = (
        out.withColumn("license", F.col("_lic.license"))
        .withColumn("license_source", F.col("_lic.license_source"))
        .withColumn("license_policy", F.from_json("_lic.policy", T.MapType(T.StringType(), T.StringType())))
    )
    changed = ~F.col("license").eqNullSafe(F.col("_was.license")) | ~F.col("license_source").eqNullSafe(
        F.col("_was.license_source")
    )
    verdict = (
        F.when(F.col("license").isin(list(params.deny)), decision(DROPPED, DENIED))
        .when(F.col("license") == NOASSERTION, decision(KEPT, FLAGGED_UNKNOWN))
        .when(changed, decision(MODIFIED, F.concat(F.lit("license_"), F.col("license_source"))))
        .otherwise(decision(KEPT))
    )
    return out.withColumn(DECISION, verdict).drop("_was", "_lic")
