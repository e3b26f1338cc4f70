"""Each curation stage on small inline data with known answers (real Spark, real models)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import spdx
from curation_data import bronze_row, decided, frame, prose

from curation.classifier import ClassifierParams, TrainSettings, classifier, train_quality_model
from curation.decontaminate import DecontaminateParams, build_index, decontaminate, ngram_hashes, overlap_report
from curation.exact_dedup import ExactDedupParams, displaced, exact_dedup, with_text_hash
from curation.gate import validate
from curation.language import LanguageParams, ModelMissingError, language
from curation.licensing import LicenseParams, allowed_under, detect_license, license_stage, spdx_header
from curation.normalize import NormalizeParams, clean_text, normalize
from curation.pipeline import run_stages
from curation.quality import QualityParams, failed_rule, quality
from curation.signals import quality_signals

# --- normalize ---------------------------------------------------------------------------------


def test_clean_text_repairs_and_reports_each_change() -> None:
    assert clean_text("The caf\u00c3\u00a9 opens at nine.") == ("The café opens at nine.", ["mojibake"])
    assert clean_text("e\u0301te\u0301") == ("été", ["nfc"])
    assert clean_text("bell\x07 and\x00 null") == ("bell and null", ["control_chars"])
    assert clean_text("a\u00a0b  \r\n\r\n\r\n\r\n\r\nc\n") == ("a b\n\n\nc\n", ["whitespace"])
    assert clean_text("def a():\n    pass\n\n\ndef b():\n    pass\n") == (
        "def a():\n    pass\n\n\ndef b():\n    pass\n",
        [],
    )
    assert clean_text("already clean\n") == ("already clean\n", [])


def test_normalize_drops_binary_and_empty_with_reasons_and_removes_boilerplate(spark) -> None:
    footer = "Subscribe to our newsletter for weekly updates from the mill"
    rows = [bronze_row(f"web{i}", f"{prose(i)}\n{footer}\n", domain="web") for i in range(12)]
    rows += [
        bronze_row("code", f"# {footer}\nprint('x')\n", domain="code"),  # code keeps its repeated lines
        bronze_row("other", f"{prose(99)}\n{footer}\n", source="elsewhere", domain="web"),  # one doc of its source
        bronze_row("binary", "\x00\x01\x02\x03PNG\x1a\x00\x00IHDR\x00\x10" * 20),
        bronze_row("blank", " \n\t\n \u3000 "),
        bronze_row("emoji", "🙂🙂🚀✨"),
        bronze_row("mojibake", "The caf\u00c3\u00a9 opens at nine."),
    ]
    out = decided(normalize(frame(spark, rows), NormalizeParams()))
    assert out["binary"]["decision"]["action"] == "dropped"
    assert out["binary"]["decision"]["reason"] == "binary_text"
    assert out["blank"]["decision"] == {
        **out["blank"]["decision"],
        "action": "dropped",
        "reason": "empty_after_cleaning",
    }
    assert out["emoji"]["decision"]["action"] == "kept"  # not empty: quality decides about it
    assert out["mojibake"]["text"] == "The café opens at nine."
    assert out["mojibake"]["decision"]["reason"] == "mojibake"
    for i in range(12):
        assert footer not in out[f"web{i}"]["text"]
        assert out[f"web{i}"]["text"].strip() == prose(i)
        assert "boilerplate_lines" in out[f"web{i}"]["decision"]["reason"]
    assert footer in out["code"]["text"]
    assert footer in out["other"]["text"]


# --- language ----------------------------------------------------------------------------------


def test_language_identifies_and_applies_the_allowlist(spark) -> None:
    rows = [
        bronze_row("en", prose(1)),
        bronze_row("fr", "Le moulin se trouve au bord de la rivière, et le meunier y travaille depuis trente ans."),
        bronze_row("de", "Die Mühle steht am Fluss, und der Müller arbeitet dort seit dreißig Jahren.", domain="code"),
    ]
    out = decided(language(frame(spark, rows), LanguageParams()))
    assert (out["en"]["lang"], out["en"]["decision"]["action"]) == ("en", "kept")
    assert out["en"]["lang_score"] > 0.9
    assert out["fr"]["lang"] == "fr"
    assert out["fr"]["decision"]["action"] == "dropped"
    assert out["fr"]["decision"]["reason"] == "language_not_allowed"
    assert out["de"]["lang"] == "de" and out["de"]["decision"]["action"] == "kept"  # code: identified, not filtered
    everyone = decided(language(frame(spark, rows), LanguageParams(allowed=())))
    assert all(r["decision"]["action"] == "kept" for r in everyone.values())


def test_language_names_a_missing_model(spark) -> None:
    with pytest.raises(ModelMissingError, match="no fastText model at /nowhere/lid.bin"):
        language(frame(spark, [bronze_row("a", "x")]), LanguageParams(model="/nowhere/lid.bin"))


# --- quality -----------------------------------------------------------------------------------


def test_quality_rules_are_per_domain_and_name_the_rule(spark) -> None:
    code = "def grind(grain):\n    return [g * 2 for g in grain]\n\nprint(grind([1, 2, 3]))\n"
    huge = " ".join(prose(i) for i in range(3000)) * 5  # ~10 MB of words: too long, not a crash
    rows = [
        bronze_row("good", prose(1)),
        bronze_row("short", "Too short to be a document."),
        bronze_row("lorem", prose(2) + " Lorem ipsum dolor sit amet."),
        bronze_row("code_as_code", code, domain="code"),
        bronze_row("code_as_prose", code, domain="prose"),
        bronze_row("huge", huge),
        bronze_row("emoji", "🙂🙂🚀✨"),
    ]
    out = decided(quality(frame(spark, rows), QualityParams()))
    assert out["good"]["decision"]["action"] == "kept"
    assert out["good"]["signals"]["word_count"] == float(len(prose(1).split()))
    assert out["short"]["decision"]["reason"] == "min_word_count"
    assert out["short"]["decision"]["score"] == 6.0
    assert out["lorem"]["decision"]["reason"] == "max_has_lorem_ipsum"
    assert out["code_as_code"]["decision"]["action"] == "kept"
    assert out["code_as_prose"]["decision"]["action"] == "dropped"
    assert out["huge"]["decision"]["action"] == "dropped"
    assert out["emoji"]["decision"]["reason"] == "min_word_count"


def test_a_rule_set_to_nan_is_off_and_unknown_rules_are_refused() -> None:
    signals = quality_signals("Too short.")
    rules = QualityParams().rules_for("prose")
    assert failed_rule(signals, rules) == "min_word_count"
    assert failed_rule(signals, {**rules, "min_word_count": math.nan}) != "min_word_count"
    assert failed_rule(signals, {"min_word_count": math.nan}) is None
    with pytest.raises(ValueError, match="unknown rule 'min_wordcount'"):
        QualityParams(rules={"prose": {"min_wordcount": 3.0}})


# --- classifier --------------------------------------------------------------------------------

SPAM = [
    "BUY NOW cheap pills best price click here click here free free free",
    "win money fast!!! click the link >>> best casino bonus 100% free spins",
    "hot deals hot deals hot deals limited offer act now act now",
    "free followers free likes cheap cheap cheap visit our site now",
]


def test_classifier_trains_evaluates_and_scores(spark, tmp_path: Path) -> None:
    good = [prose(i, 6) for i in range(200)]
    bad = [f"{SPAM[i % 4]} {SPAM[(i * 7) % 4]} offer {i}" for i in range(200)]
    model = tmp_path / "quality.bin"
    figures = train_quality_model(good, bad, model, TrainSettings(epoch=5, threads=1))
    assert model.is_file() and model.stat().st_size < 30_000_000
    assert figures["test_examples"] > 10
    assert figures["precision"] > 0.9 and figures["recall"] > 0.9
    rows = [bronze_row("good", prose(1000)), bronze_row("spam", SPAM[0] + " " + SPAM[1])]
    out = decided(classifier(frame(spark, rows), ClassifierParams(model=str(model), threshold=0.5)))
    assert out["good"]["quality_score"] > 0.5 and out["good"]["decision"]["action"] == "kept"
    assert out["spam"]["quality_score"] < 0.5
    assert out["spam"]["decision"]["reason"] == "quality_score_below_threshold"


def test_classifier_training_that_diverges_is_retried_at_half_the_rate_in_a_fresh_process(tmp_path: Path) -> None:
    good = [prose(i, 6) for i in range(100)]
    bad = [f"{SPAM[i % 4]} offer {i}" for i in range(100)]
    figures = train_quality_model(good, bad, tmp_path / "m.bin", TrainSettings(epoch=5, threads=1, lr=200.0))
    assert figures["lr"] < 200.0 and figures["accuracy"] > 0.9  # fastText hit NaN at 200 and the caller survived
    with pytest.raises(RuntimeError, match="diverged .* from 1000000.0 down to 125000.0"):
        train_quality_model(good, bad, tmp_path / "m.bin", TrainSettings(epoch=5, threads=1, lr=1e6))


def test_classifier_without_a_model_says_how_to_get_one(spark) -> None:
    with pytest.raises(ModelMissingError, match="millpond classifier train"):
        classifier(frame(spark, [bronze_row("a", "x")]), ClassifierParams())


# --- license -----------------------------------------------------------------------------------


def test_license_detection_from_headers_and_full_texts() -> None:
    assert spdx_header("#!/usr/bin/env python\n# SPDX-License-Identifier: Apache-2.0 OR mit\n") == "Apache-2.0 OR MIT"
    assert spdx_header("/* SPDX-License-Identifier: GPL-2.0 */\nint x;") == "GPL-2.0-only"
    assert spdx_header("# SPDX-License-Identifier: not a license at all") is None
    texts = Path(spdx.__file__).parent / "data"
    for ident, expected in [("MIT", "MIT"), ("BSD-3-Clause", "BSD-3-Clause"), ("BSD-2-Clause", "BSD-2-Clause"),
                            ("Apache-2.0", "Apache-2.0"), ("GPL-3.0", "GPL-3.0-only")]:  # fmt: skip
        body = (texts / f"{ident}.txt").read_text(encoding="utf-8").replace("<year>", "2024")
        assert detect_license(f"Copyright (c) 2024 The Mill Society\n\n{body}") == expected, ident
    assert detect_license("def f():\n    return 'no license here, only a copyright line'\n") is None
    allow = {"MIT", "Apache-2.0"}
    assert allowed_under("MIT OR GPL-3.0-only", allow) == "allowed"
    assert allowed_under("MIT AND GPL-3.0-only", allow) == "not_allowed"
    assert allowed_under("NOASSERTION", allow) == "unknown"


def test_license_stage_combines_declared_and_detected_and_applies_policy(spark) -> None:
    rows = [
        bronze_row("header", "# SPDX-License-Identifier: GPL-3.0-or-later\nimport os\n", license="MIT"),
        bronze_row("declared", "import os\n", license="Apache-2.0"),
        bronze_row("unknown", "import os\n", license=None, license_source="unknown"),
        bronze_row("denied", "import sys\n", license="LicenseRef-Proprietary"),
    ]
    params = LicenseParams(deny=("LicenseRef-Proprietary",))
    out = decided(license_stage(frame(spark, rows), params))
    assert (out["header"]["license"], out["header"]["license_source"]) == ("GPL-3.0-or-later", "detected")
    assert out["header"]["decision"] == {
        **out["header"]["decision"],
        "action": "modified",
        "reason": "license_detected",
    }
    # every purpose (pretraining, preference, sft) answers to the same default allowlist
    assert (
        set(out["header"]["license_policy"].values()) == {"not_allowed"} and len(out["header"]["license_policy"]) == 3
    )
    assert out["declared"]["license_policy"] == {"pretraining": "allowed", "preference": "allowed", "sft": "allowed"}
    assert out["declared"]["decision"]["action"] == "kept"
    assert out["unknown"]["license"] == "NOASSERTION"
    assert out["unknown"]["decision"] == {**out["unknown"]["decision"], "action": "kept", "reason": "license_unknown"}
    assert out["denied"]["decision"]["reason"] == "license_denied"


# --- exact dedup -------------------------------------------------------------------------------


def _scored(doc_id: str, text: str, score: float | None, policy: str | None = "allowed", hours: int = 0) -> dict:
    row = bronze_row(doc_id, text, ingested_after_hours=hours)
    row["_score"], row["_policy"] = score, policy
    return row


def _dedup_frame(spark, rows: list[dict]):
    from pyspark.sql import functions as F

    scores = {r["doc_id"]: (r.pop("_score"), r.pop("_policy")) for r in rows}
    df = frame(spark, rows)
    score = F.create_map(*[x for k, (s, _) in scores.items() for x in (F.lit(k), F.lit(s).cast("double"))])
    policy = F.create_map(*[x for k, (_, p) in scores.items() for x in (F.lit(k), F.lit(p))])
    return df.withColumn("quality_score", score[F.col("doc_id")]).withColumn(
        "license_policy", F.create_map(F.lit("pretraining"), policy[F.col("doc_id")])
    )


def test_exact_dedup_keep_rule_is_deterministic(spark) -> None:
    rows = [
        _scored("c", "same text A", 0.5),
        _scored("b", "same text A", 0.9),  # best quality wins
        _scored("a", "same text A", 0.2),
        _scored("y", "same text B", 0.7, policy="not_allowed"),
        _scored("z", "same text B", 0.7, policy="allowed"),  # same quality: the allowed license wins
        _scored("late", "same text C", None, hours=5),
        _scored("early", "same text C", None, hours=1),  # no score: the earliest ingest wins
        _scored("n2", "same text D", 0.1),
        _scored("n1", "same text D", 0.1),  # all equal: the smallest doc_id wins
        _scored("single", "unique text", 0.1),
    ]
    out = decided(exact_dedup(_dedup_frame(spark, rows), ExactDedupParams()))
    kept = {k for k, r in out.items() if r["decision"]["action"] == "kept"}
    assert kept == {"b", "z", "early", "n1", "single"}
    assert out["a"]["decision"]["duplicate_of"] == "b" and out["c"]["decision"]["duplicate_of"] == "b"
    assert out["a"]["decision"]["reason"] == "exact_duplicate"
    assert out["b"]["decision"]["cluster_id"] == out["a"]["decision"]["cluster_id"] is not None
    assert out["single"]["decision"]["cluster_id"] is None


def test_exact_dedup_against_silver_keeps_what_one_run_would(spark) -> None:
    silver = with_text_hash(
        _dedup_frame(spark, [_scored("old_good", "text X", 0.9), _scored("old_bad", "text Y", 0.1)])
    )
    batch = _dedup_frame(spark, [_scored("new_bad", "text X", 0.5), _scored("new_good", "text Y", 0.8)])
    existing = silver.select("doc_id", "text_sha256", "quality_score", "license_policy", "ingested_at")
    out = decided(exact_dedup(batch, ExactDedupParams(), existing))
    assert out["new_bad"]["decision"]["duplicate_of"] == "old_good"
    assert out["new_good"]["decision"]["action"] == "kept"
    ousted = decided(displaced(batch, ExactDedupParams(), existing))
    assert set(ousted) == {"old_bad"}
    assert ousted["old_bad"]["decision"]["duplicate_of"] == "new_good"


# --- decontaminate -----------------------------------------------------------------------------

QUESTION = (
    "Which of the following best explains why the mill wheel turns faster in spring when the river "
    "rises after the snow melts in the northern hills?"
)


def test_ngram_hashes_ignore_case_and_punctuation() -> None:
    a = ngram_hashes("Hello, World! one two three", 3)
    b = ngram_hashes("hello world ONE two... three", 3)
    assert list(a) == list(b) and len(a) == 3
    assert len(ngram_hashes("too few words", 13)) == 0


def test_decontaminate_drops_overlaps_and_reports_per_eval_set(spark) -> None:
    index = build_index(
        [
            ("q1", "mill-qa", QUESTION),
            ("q2", "mill-qa", "Too short."),
            ("q3", "other", "An unrelated item about ships, harbours and the tides that move them twice a day."),
        ],
        13,
    )
    words = QUESTION.split()
    rows = [
        bronze_row("leak", prose(1) + " " + " ".join(words[3:16]).upper() + " " + prose(2)),
        bronze_row("near", prose(3) + " " + " ".join(words[3:15])),  # only 12 shared words
        bronze_row("clean", prose(4, 4)),
    ]
    out = decontaminate(frame(spark, rows), DecontaminateParams(ngram=13), index).persist()
    got = decided(out)
    assert got["leak"]["decision"]["action"] == "dropped"
    assert got["leak"]["decision"]["reason"] == "mill-qa"
    assert got["near"]["decision"]["action"] == "kept"
    assert got["clean"]["decision"]["action"] == "kept"
    report = overlap_report(index, out)
    assert report["mill-qa"] == {"items": 2, "too_short": 1, "items_found": 1, "documents_dropped": 1}
    assert report["other"]["documents_dropped"] == 0


# --- gate and pipeline -------------------------------------------------------------------------


def test_gate_reports_failed_expectations_by_count_without_values(spark) -> None:
    rows = [bronze_row("a", "write to alice@example.com"), bronze_row("a", "ok"), bronze_row("b", "ok")]
    df = frame(spark, rows)
    result = validate(df, check_lang=True, check_license=True, check_pii=True)
    assert not result.success
    failed = {(r["expectation"], r["column"]): r["unexpected_count"] for r in result.results if not r["success"]}
    assert failed[("expect_column_values_to_be_unique", "doc_id")] == 2
    assert failed[("expect_column_values_to_not_be_null", "lang")] == 3
    assert failed[("expect_column_values_to_not_match_regex", "text")] == 1
    assert "alice" not in str(result.as_json())
    passing = validate(df.where("doc_id = 'b'"), check_lang=False, check_license=True, check_pii=True)
    assert passing.success and passing.rows == 1


def test_the_gate_counts_the_ips_the_pii_stage_scrubs_and_no_others(spark) -> None:
    """`127.0.0.1` in a config stays in the text (it points at no one); the gate agrees."""
    local = ["bind = 127.0.0.1", "listen 0.0.0.0:80", "mdns 224.0.0.251", "link 169.254.1.7"]
    rows = [bronze_row(f"l{i}", text) for i, text in enumerate(local)]
    rows += [bronze_row("p", "login from 203.0.113.9"), bronze_row("q", "lan 192.168.10.27")]
    result = validate(frame(spark, rows), check_lang=False, check_license=False, check_pii=True)
    failed = {r["column"]: r["unexpected_count"] for r in result.results if not r["success"]}
    assert failed == {"text": 2}


def test_pipeline_funnel_reconciles_and_logs_every_decision(spark) -> None:
    rows = [bronze_row(f"d{i}", prose(i)) for i in range(4)]
    rows += [
        bronze_row("fr", "Le moulin se trouve au bord de la rivière et le meunier y travaille."),
        bronze_row("short", "This sentence is far too short to keep."),
    ]
    run = run_stages(
        frame(spark, rows),
        [
            ("normalize", lambda df: normalize(df, NormalizeParams())),
            ("language", lambda df: language(df, LanguageParams())),
            ("quality", lambda df: quality(df, replace(QualityParams()))),
        ],
    )
    try:
        funnel = [c.as_json() for c in run.funnel]
        assert [s["in"] for s in funnel] == [6, 6, 5]
        assert funnel[1]["dropped"] == {"language_not_allowed": 1}
        assert run.rows_out == 4 and run.survivors.count() == 4
        logged = run.decisions.collect()
        assert len(logged) == 6 + 6 + 5
        assert {r["doc_id"] for r in logged if r["action"] == "dropped"} == {"fr", "short"}
    finally:
        run.release()


def test_nasty_documents_get_a_reasoned_decision_from_every_stage(spark) -> None:
    """Binary, whitespace, emoji, a 10 MB document: each ends with a reason, no stage crashes."""
    rows = [
        bronze_row("binary", "\x00\x01\x02\x03PNG\x1a\x00\x00IHDR\x00\x10" * 200),
        bronze_row("spaces", " \n\t\n \u3000 "),
        bronze_row("emoji", "🙂🙂🚀✨ 🎉🎉"),
        bronze_row("huge", " ".join(prose(i) for i in range(3000)) * 5),  # about 10 MB
        bronze_row("fine", prose(3)),
    ]
    index = build_index([("q", "set", QUESTION)], 13)
    run = run_stages(
        frame(spark, rows),
        [
            ("normalize", lambda df: normalize(df, NormalizeParams())),
            ("language", lambda df: language(df, LanguageParams())),
            ("quality", lambda df: quality(df, QualityParams())),
            ("license", lambda df: license_stage(df, LicenseParams())),
            ("exact_dedup", lambda df: exact_dedup(df, ExactDedupParams())),
            ("decontaminate", lambda df: decontaminate(df, DecontaminateParams(), index)),
        ],
    )
    try:
        dropped = {r["doc_id"]: (r["stage"], r["reason"]) for r in run.decisions.collect() if r["action"] == "dropped"}
        assert dropped["binary"] == ("normalize", "binary_text")
        assert dropped["spaces"] == ("normalize", "empty_after_cleaning")
        assert dropped["emoji"][0] in ("language", "quality") and dropped["emoji"][1]
        assert dropped["huge"][0] == "quality" and dropped["huge"][1].startswith("max_")
        assert "fine" not in dropped and run.rows_out == 1
    finally:
        run.release()
