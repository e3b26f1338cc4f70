"""`millpond preferences build`: each rule with known answers, consent and duplicates refused with
a reason, texts scrubbed, a preference snapshot split by prompt, and a user's data found and erased."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_lineage import _files_text

from conftest import make_config
from curation.preferences import normalized_prompt, pair_id, prompt_key
from ingestion.interactions import event_row
from jobs.cli import cli
from jobs.preferences import build_preferences
from jobs.snapshot import create_snapshot
from lineage.catalog import (
    BRONZE_INTERACTIONS,
    GOLD_SNAPSHOT_MEMBERS,
    SILVER_DECISIONS,
    SILVER_INTERACTIONS,
    SILVER_PREFERENCES,
)
from lineage.snapshots import SnapshotSpec
from lineage.tables import ensure_table, read_table
from serving.events import event
from serving.landing import LandingSettings, LandingWriter

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MODEL = {"name": "millpond-pretrain-demo", "version": "1", "run_id": "r1"}
EVAL_QUESTION = (
    "Which of the following best explains why the mill wheel turns faster in spring when the river "
    "rises after the snow melts in the northern hills?"
)


def _interaction(n: int, user: str | None, consent: list[str], question: str, answers: list[str],
                 **feedback: Any) -> list[dict[str, Any]]:  # fmt: skip
    """The events of one interaction: request, response and (optionally) feedback."""
    iid = f"chatcmpl-{n:02d}"
    at = (T0 + timedelta(minutes=n)).isoformat()
    common = {"user": user, "consent": consent, "model": MODEL, "created_at": at}
    events = [
        event("request", iid, messages=[{"role": "user", "content": question}], **common),
        event("response", iid, responses=answers, **common),
    ]
    if feedback:
        events.append(event("feedback", iid, feedback={"rating": None, "choice": None, "edit": None, **feedback},
                            **{**common, "created_at": (T0 + timedelta(minutes=n, seconds=30)).isoformat()}))  # fmt: skip
    return events


def _write_bronze(spark: Any, lakehouse: Path, events: list[dict[str, Any]]) -> None:
    rows = []
    for number, e in enumerate(events, start=1):
        row = event_row(e)
        for name in ("consent", "messages", "responses", "finish_reasons", "usage", "metadata"):
            row[name] = json.loads(row.pop(f"{name}_json") or "null")
        rows.append(row | {"source_uri": "file:/landing/a.jsonl", "locator": f"file:/landing/a.jsonl:{number}",
                           "ingested_at": datetime.now(UTC), "ingest_run_id": "stream-test"})  # fmt: skip
    ensure_table(spark, BRONZE_INTERACTIONS, lakehouse)
    frame = spark.createDataFrame([{f: r.get(f) for f in BRONZE_INTERACTIONS.schema.fieldNames()} for r in rows],
                                  BRONZE_INTERACTIONS.schema)  # fmt: skip
    frame.write.format("delta").mode("append").save(BRONZE_INTERACTIONS.path(lakehouse))


def test_prompt_keys_ignore_case_and_spacing() -> None:
    assert normalized_prompt("  What is\n a WEIR? ") == "what is a weir?"
    assert prompt_key("What is a weir?") == prompt_key("what is  a WEIR?")
    assert pair_id("p", "a", "b") != pair_id("p", "b", "a")


def test_rules_consent_duplicates_scrubbing_snapshot_and_erasure(spark, lakehouse: Path) -> None:
    ok = ["preference"]
    events = [
        *_interaction(1, "u-ann", ok, "Name three rivers.", ["Thames", "Severn", "Trent"], choice=1),
        *_interaction(2, "u-ann", ok, "What does a mill do?", ["Mills grind grain."], edit="Mills grind grain into flour."),
        *_interaction(3, "u-bob", ok, "What is a weir?", ["A low dam across a river."], rating="up"),
        *_interaction(4, "u-cat", ok, "what is  a WEIR?", ["A kind of fish."], rating="down"),
        *_interaction(5, "u-dan", ["pretraining"], "Name a mill.", ["Abbey Mill", "Town Mill"], choice=0),
        *_interaction(6, "u-eve", ok, "Say yes.", ["yes", "yes"], choice=0),
        *_interaction(7, "u-fay", ok, "Name three rivers.", ["Thames", "Severn", "Trent"], choice=1),
        *_interaction(8, "u-ann", ok, "Who runs the museum?", ["The society."],
                      edit="Write to ann.lee@example.com, the society's secretary."),
        *_interaction(9, None, [], "Pick one.", ["left", "right"], choice=1),
        *_interaction(10, "u-bob", ok, EVAL_QUESTION, ["The snow melt.", "The moon."], choice=0),
    ]  # fmt: skip
    _write_bronze(spark, lakehouse, events)
    items = lakehouse.parent / "eval.jsonl"
    items.write_text(json.dumps({"question": EVAL_QUESTION}) + "\n")
    added = CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "evalset", "add", "mill-qa", str(items),
                                     "--text-field", "question"])  # fmt: skip
    assert added.exit_code == 0, added.output
    # The same events in the server's landing folder: a closed file, and a file a killed server left
    # open with a torn last line of hers.
    landing = lakehouse / "_landing" / "interactions"
    landing.mkdir(parents=True)
    (landing / "replica-a-000001.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    torn = json.dumps(events[3])
    (landing / "replica-b-000001.part").write_text(json.dumps(events[0]) + "\n" + torn[: torn.index('"consent"')])
    config = make_config(lakehouse)
    report = build_preferences(spark, config).as_json()

    assert report["interactions"] == 10 and report["with_feedback"] == 10
    assert report["candidates"] == {"choice": 8, "edit": 2, "rating": 1}
    assert report["kept"] == {"choice": 2, "edit": 2, "rating": 1} and report["pairs"] == 5
    assert report["refused"] == {"no_preference_consent": 2, "identical_responses": 1, "exact_duplicate": 2,
                                 "eval_item:mill-qa": 1}  # fmt: skip
    pairs = {(r["rule"], r["chosen"], r["rejected"]): r for r in read_table(SILVER_PREFERENCES, lakehouse).to_pylist()}
    assert set(pairs) == {
        ("choice", "Severn", "Thames"), ("choice", "Severn", "Trent"), ("edit", "Mills grind grain into flour.", "Mills grind grain."),
        ("rating", "A low dam across a river.", "A kind of fish."),
        ("edit", "Write to <EMAIL_ADDRESS>, the society's secretary.", "The society."),
    }  # fmt: skip
    rated = pairs[("rating", "A low dam across a river.", "A kind of fish.")]
    assert (rated["interaction_id"], rated["other_interaction_id"]) == ("chatcmpl-03", "chatcmpl-04")
    assert rated["prompt"] == "<|user|>\nWhat is a weir?\n<|assistant|>\n" and len(rated["subject_ids"]) == 2
    assert pairs[("choice", "Severn", "Thames")]["interaction_id"] == "chatcmpl-01"  # the first of the two copies
    assert all("u-" not in json.dumps(r["subject_ids"]) for r in pairs.values())  # keyed, never clear

    # Every candidate has its decision; the scrubbed interaction keeps no e-mail address.
    decisions = [r for r in read_table(SILVER_DECISIONS, lakehouse).to_pylist() if r["stage"] == "preferences"]
    assert len(decisions) == 11 and sum(r["action"] == "dropped" for r in decisions) == 6
    assert {r["duplicate_of"] for r in decisions if r["reason"] == "exact_duplicate"} == {
        pairs[("choice", "Severn", "Thames")]["doc_id"], pairs[("choice", "Severn", "Trent")]["doc_id"]}  # fmt: skip
    scrubbed = {r["interaction_id"]: r for r in read_table(SILVER_INTERACTIONS, lakehouse).to_pylist()}
    assert "ann.lee@example.com" not in json.dumps(scrubbed, default=str) and len(scrubbed) == 10
    assert scrubbed["chatcmpl-08"]["pii_counts"] == [("EMAIL_ADDRESS", 1)]

    # `why` answers for an interaction id and for a pair id.
    base = ["--lakehouse", str(lakehouse)]
    refused = json.loads(CliRunner().invoke(cli, [*base, "why", "chatcmpl-05", "--json"]).output)
    assert [(d["action"], d["reason"]) for d in refused["decisions"]] == [("dropped", "no_preference_consent")]
    assert [e["event_type"] for e in refused["events"]] == ["request", "response", "feedback"]
    severn = pairs[("choice", "Severn", "Thames")]["doc_id"]
    explained = json.loads(CliRunner().invoke(cli, [*base, "why", severn, "--json"]).output)
    assert explained["in_silver"] and explained["pair"]["interaction_id"] == "chatcmpl-01"
    assert sorted(d["reason"] for d in explained["decisions"]) == ["exact_duplicate", "rule:choice"]
    text = CliRunner().invoke(cli, [*base, "why", "chatcmpl-01"]).output
    assert "interaction chatcmpl-01" in text and f"pair {severn} (choice)" in text

    # Nothing new, nothing done; the CLI prints the funnel.
    assert build_preferences(spark, config).mode == "nothing_new"
    shown = CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "preferences", "build", "--full"])
    assert shown.exit_code == 0, shown.output
    assert "refused: no_preference_consent 2" in shown.output and "silver.preferences: 5 pairs" in shown.output

    # A preference snapshot: one prompt never sits in two splits.
    snap = create_snapshot(spark, config, SnapshotSpec("prefs-v1", "silver.preferences", purpose="preference",
                                                       validation=0.0, test=0.4))  # fmt: skip
    members = read_table(GOLD_SNAPSHOT_MEMBERS, lakehouse).to_pylist()
    assert snap["rows"] == 5 and len(members) == 5
    by_pair = {r["doc_id"]: r["split_key"] for r in read_table(SILVER_PREFERENCES, lakehouse).to_pylist()}
    splits: dict[str, set[str]] = {}
    for m in members:
        splits.setdefault(by_pair[m["doc_id"]], set()).add(m["split"])
    assert all(len(s) == 1 for s in splits.values()) and {"train"} <= set().union(*splits.values())

    # A data subject request for u-ann finds her interactions and pairs, and erases them.
    found = CliRunner().invoke(cli, [*base, "lineage", "find", "--subject", "u-ann", "--json"])
    assert found.exit_code == 0, found.output
    rows = json.loads(found.stdout.strip().splitlines()[-1])["rows"]
    assert rows["bronze.interactions"] and rows["silver.interactions"] and rows["silver.preferences"]
    live = LandingWriter(landing, LandingSettings(roll_seconds=1.0), replica="replica-c")
    live.write(
        [event("request", "chatcmpl-10", user="u-ann", consent=ok, messages=[{"role": "user", "content": "hi"}])]
    )
    subject = ["--subject", "u-ann", "--subject", "ann.lee@example.com"]
    erased = CliRunner().invoke(cli, [*base, "lineage", "erase", *subject, "--reason", "art. 17", "--json"])
    assert erased.exit_code == 0, erased.output
    certificate = json.loads(erased.stdout.strip().splitlines()[-1])
    assert (
        certificate["landing"]["pending"] == [] and certificate["landing"]["lines_removed"] == 3 * 3 + 2 + 1
    )  # closed, open and torn, live
    live.close()
    # No byte under the lakehouse names her any more; everyone else's landed events are still there.
    assert not [p for p, text in _files_text(lakehouse).items() if "u-ann" in text or "ann.lee@example.com" in text]
    others = [json.loads(line) for line in (landing / "replica-a-000001.jsonl").read_text().splitlines()]
    assert len(others) == len(events) - 9 and {e["user"] for e in others} == {
        "u-bob",
        "u-cat",
        "u-dan",
        "u-eve",
        "u-fay",
        None,
    }
    assert not [r for r in read_table(BRONZE_INTERACTIONS, lakehouse).to_pylist() if r["user"] == "u-ann"]
    left = read_table(SILVER_PREFERENCES, lakehouse).to_pylist()
    assert {r["rule"] for r in left} == {"rating"}  # her two choice pairs and two edits are gone
    assert "chatcmpl-08" not in {r["interaction_id"] for r in read_table(SILVER_INTERACTIONS, lakehouse).to_pylist()}


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
