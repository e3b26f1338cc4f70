"""The single-process baseline of each curation stage: the same functions and rules in one
Python process, no Spark. Each returns a Counter of "action:reason" to set beside Spark's."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from curation.classifier import model_file, one_line, positive_probability
from curation.decontaminate import EvalIndex, matches
from curation.gate import EMAIL, IPV4, PROVENANCE
from curation.language import identify, load_fasttext, model_path
from curation.licensing import NOASSERTION, resolve
from curation.normalize import binary_fraction, clean_text, remove_lines
from curation.quality import failed_rule
from curation.signals import quality_signals

BATCH = 1000


def _normalize(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    line_docs: Counter[tuple[str, str]] = Counter()
    source_docs: Counter[str] = Counter()
    for row in rows:
        if row["domain"] in p.boilerplate_skip_domains:
            continue
        source_docs[row["source"]] += 1
        for line in {ln.strip() for ln in row["text"].split("\n")}:
            if len(line) >= p.boilerplate_min_chars:
                line_docs[(row["source"], line)] += 1
    common: dict[str, set[str]] = {}
    for (source, line), n in line_docs.items():
        if n >= p.boilerplate_min_docs and n >= source_docs[source] * p.boilerplate_min_fraction:
            common.setdefault(source, set()).add(line)
    boilerplate = {k: frozenset(v) for k, v in common.items()}
    out: Counter[str] = Counter()
    for row in rows:
        binary = binary_fraction(row["text"])
        text, changes = clean_text(row["text"], p)
        if row["domain"] not in p.boilerplate_skip_domains:
            text, removed = remove_lines(text, boilerplate.get(row["source"], frozenset()), p.max_blank_lines)
            if removed:
                changes.append("boilerplate_lines")
        if binary > p.max_binary_fraction:
            out["dropped:binary_text"] += 1
        elif not text.strip():
            out["dropped:empty_after_cleaning"] += 1
        elif changes:
            out[f"modified:{','.join(changes)}"] += 1
        else:
            out["kept:None"] += 1
    return out


def _language(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    model = load_fasttext(model_path(p))
    out: Counter[str] = Counter()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        langs, scores = identify([r["text"] for r in batch], model, p.max_chars)
        for row, lang, score in zip(batch, langs, scores, strict=True):
            if row["domain"] in p.skip_domains:
                out["kept:None"] += 1
            elif p.allowed and lang not in p.allowed:
                out["dropped:language_not_allowed"] += 1
            elif score < p.min_score:
                out["dropped:language_score_below_min"] += 1
            else:
                out["kept:None"] += 1
    return out


def _quality(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in rows:
        rule = failed_rule(quality_signals(row["text"]), p.rules_for(row["domain"]))
        out["kept:None" if rule is None else f"dropped:{rule}"] += 1
    return out


def _classifier(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    model = load_fasttext(model_file(p))
    out: Counter[str] = Counter()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        for score in positive_probability(model, [one_line(r["text"], p.max_chars) for r in batch]):
            out["dropped:quality_score_below_threshold" if score < p.threshold else "kept:None"] += 1
    return out


def _license(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in rows:
        license_, source, _ = resolve(row["text"], row["license"], row["license_source"], p)
        if license_ in p.deny:
            out["dropped:license_denied"] += 1
        elif license_ == NOASSERTION:
            out["kept:license_unknown"] += 1
        elif (license_, source) != (row["license"], row["license_source"]):
            out[f"modified:license_{source}"] += 1
        else:
            out["kept:None"] += 1
    return out


def _exact_dedup(rows: list[dict[str, Any]], p: Any) -> Counter[str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(hashlib.sha256(row["text"].encode()).hexdigest(), []).append(row)
    out: Counter[str] = Counter()
    for copies in groups.values():
        copies.sort(key=lambda r: (r["ingested_at"], r["doc_id"]))  # no scores or policies in the input
        out["kept:None"] += 1
        out["dropped:exact_duplicate"] += len(copies) - 1
    return out


def _decontaminate(rows: list[dict[str, Any]], p: Any, index: EvalIndex) -> Counter[str]:
    out: Counter[str] = Counter()
    cache: dict[str, int] = {}
    for row in rows:
        sets, _ = matches(row["text"], index, p.ngram, cache)
        out[f"dropped:{sets[0]}" if sets else "kept:None"] += 1
    return out


def _gate(rows: list[dict[str, Any]]) -> Counter[str]:
    email, ip = re.compile(EMAIL), re.compile(IPV4)
    failures: Counter[str] = Counter()
    seen: Counter[str] = Counter(r["doc_id"] for r in rows)
    for row in rows:
        for column in PROVENANCE:
            failures[f"null:{column}"] += row.get(column) is None
        failures["license"] += row.get("license") is None
        failures["unique"] += seen[row["doc_id"]] > 1
        failures["email"] += bool(email.search(row["text"]))
        failures["ip"] += bool(ip.search(row["text"]))
    return Counter({"passed" if not sum(failures.values()) else "failed": 1})


def run(stage: str, rows: list[dict[str, Any]], params: dict[str, Any], index: EvalIndex) -> Counter[str]:
    if stage == "normalize":
        return _normalize(rows, params[stage])
    if stage == "language":
        return _language(rows, params[stage])
    if stage == "quality":
        return _quality(rows, params[stage])
    if stage == "classifier":
        return _classifier(rows, params[stage])
    if stage == "license":
        return _license(rows, params[stage])
    if stage == "exact_dedup":
        return _exact_dedup(rows, params[stage])
    if stage == "decontaminate":
        return _decontaminate(rows, params[stage], index)
    if stage == "gate":
        return _gate(rows)
    raise ValueError(f"no baseline for stage {stage!r}")
