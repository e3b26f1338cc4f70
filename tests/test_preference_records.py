"""`preference-jsonl`: chosen/rejected records (hh-rlhf's layout) ingested with provenance, routed
past the document stages, and made pairs (rule `external`) under their license and consent."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_config, write_jsonl, write_manifest
from curation.preferences import dialogue_turns, external_pair
from jobs.cli import cli
from jobs.curate import run_curate
from jobs.ingest import run_ingest
from jobs.preferences import build_preferences
from jobs.snapshot import create_snapshot
from lineage.catalog import (
    BRONZE_DOCUMENTS,
    LINEAGE_EDGES,
    QUARANTINE_RECORDS,
    SILVER_DECISIONS,
    SILVER_DOCUMENTS,
    SILVER_PREFERENCES,
)
from lineage.snapshots import SnapshotSpec
from lineage.tables import read_table

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


LONG = " ".join(
    "The mill on the river was built in the twelfth century by the monks of the abbey, rebuilt after the "
    "great flood, and ground grain for the town until the last miller retired; its wheel still turns on "
    "open days when volunteers lift the sluice and the water runs through the race under the old wooden "
    "floor where the stones once sat and the sacks were hoisted to the loft above the yard".split()
)


def _dialogue(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def test_dialogues_split_into_prompt_and_answers() -> None:
    chosen = _dialogue("How do I sharpen a mill stone?", "Dress it with a mill bill.", "Thanks!", "You're welcome.")
    rejected = _dialogue("How do I sharpen a mill stone?", "Dress it with a mill bill.", "Thanks!", "Whatever.")
    pair = external_pair(chosen, rejected)
    assert pair.refused is None and (pair.chosen, pair.rejected) == ("You're welcome.", "Whatever.")
    assert [m["role"] for m in pair.messages] == ["user", "assistant", "user"]
    assert dialogue_turns("no turns here") is None
    other = _dialogue("How do I sharpen a knife?", "Dress it with a mill bill.", "Thanks!", "Whatever.")
    assert external_pair(chosen, other).refused == "prompts_differ"
    # Plain texts: the shared leading words are the prompt; a separate prompt wins.
    plain = external_pair("The weir holds water back well.", "The weir holds fish.")
    assert (plain.messages[0]["content"], plain.chosen, plain.rejected) == (
        "The weir holds",
        "water back well.",
        "fish.",
    )
    assert external_pair("Yes.", "No.").refused == "no_prompt"
    assert external_pair("Yes.", "No.", prompt="Is it a weir?").messages == [
        {"role": "user", "content": "Is it a weir?"}
    ]


@pytest.mark.skipif(not HH.is_file(), reason="the shared hh-rlhf file is not on this machine")
def test_hh_rlhf_records_split_as_their_authors_meant() -> None:
    records = [json.loads(line) for line in gzip.open(HH, "rt", encoding="utf-8")]
    pairs = [external_pair(r["chosen"], r["rejected"]) for r in records]
    usable = [p for p in pairs if p.refused is None]
    assert len(records) == 2312 and len(usable) / len(records) > 0.97
    assert all(p.messages[-1]["role"] == "user" and p.messages[0]["role"] == "user" for p in usable)
    assert sum(p.chosen != p.rejected for p in usable) / len(usable) > 0.97


def test_preference_records_ingest_route_and_pair(spark, lakehouse: Path, tmp_path: Path) -> None:
    same_prompt = ("Where is the nearest mill?", "Which one do you mean?", "The water mill.")
    records = [
        {"chosen": _dialogue(*same_prompt, "Two miles up the river."), "rejected": _dialogue(*same_prompt, "No idea.")},
        {"chosen": _dialogue("Write to me", "Write to ann.lee@example.com any time."),
         "rejected": _dialogue("Write to me", "No.")},
        {"chosen": _dialogue("Hi", "Hello!"), "rejected": _dialogue("Hey", "Go away.")},  # prompts differ
        {"chosen": _dialogue("Same?", "Same."), "rejected": _dialogue("Same?", "Same.")},  # identical answers
        {"chosen": _dialogue("Q", "A")},  # no rejected: quarantined
        {"chosen": _dialogue("Tell me about the mill.", LONG + " Thanks."), "rejected": _dialogue("Tell me about the mill.", "No.")},
        # a near duplicate of the record before: the same but for the last word of the chosen answer
        {"chosen": _dialogue("Tell me about the mill.", LONG + " Cheers."), "rejected": _dialogue("Tell me about the mill.", "No.")},
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "raw" / "hh.jsonl", records)
    manifest = write_manifest(tmp_path / "manifest.toml", [
        {"name": "hh", "path": str(data), "format": "preference-jsonl", "license": "MIT", "consent": ["preference"]},
        {"name": "hh-private", "path": str(data), "format": "preference-jsonl", "license": "MIT", "consent": []},
    ])  # fmt: skip
    config = make_config(lakehouse)
    report = run_ingest(spark, config, manifest).as_json()
    assert report["quarantined"] == 2 and report["ingested"] == 12
    quarantined = read_table(QUARANTINE_RECORDS, lakehouse).to_pylist()
    assert {(r["reason"], r["locator"].rsplit("/", 1)[-1]) for r in quarantined} == {("missing_rejected", "hh.jsonl:5")}
    bronze = read_table(BRONZE_DOCUMENTS, lakehouse).to_pylist()
    assert {r["domain"] for r in bronze} == {"preference"} and all(dict(r["metadata"])["rejected"] for r in bronze)

    # Curate routes them past the document stages, each with its reason.
    curated = run_curate(spark, config, ["normalize"]).as_json()
    assert curated["stages"][0]["stage"] == "route" and curated["stages"][0]["dropped"] == {"preference_record": 12}
    assert read_table(SILVER_DOCUMENTS, lakehouse).num_rows == 0

    built = build_preferences(spark, config).as_json()
    assert built["records"] == 12 and built["kept"] == {"external": 3}
    assert built["refused"] == {
        "no_preference_consent": 6, "prompts_differ": 1, "identical_responses": 1, "near_duplicate": 1}  # fmt: skip
    pairs = {r["chosen"]: r for r in read_table(SILVER_PREFERENCES, lakehouse).to_pylist()}
    river = pairs["Two miles up the river."]
    assert river["rejected"] == "No idea." and river["rule"] == "external" and river["source"] == "hh"
    assert river["prompt"] == (
        "<|user|>\nWhere is the nearest mill?\n<|assistant|>\nWhich one do you mean?\n<|user|>\nThe water mill.\n"
        "<|assistant|>\n"
    )
    assert river["license"] == "MIT" and dict(river["license_policy"])["preference"] == "allowed"
    assert "Write to <EMAIL_ADDRESS> any time." in pairs  # scrubbed like every other text
    edges = [e for e in read_table(LINEAGE_EDGES, lakehouse).to_pylist() if e["relation"] == "pair_of"]
    assert {(e["parent_table"], e["parent_id"]) for e in edges if e["child_id"] == river["doc_id"]} == {
        ("bronze.documents", river["interaction_id"])}  # fmt: skip

    # `why` on the record shows its routing and its pair; a preference snapshot takes the pairs.
    why = json.loads(CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "why", river["interaction_id"],
                                              "--json"]).output)  # fmt: skip
    assert [(d["stage"], d["reason"]) for d in why["decisions"]] == [("route", "preference_record")]
    assert [p["doc_id"] for p in why["preference"]["pairs"]] == [river["doc_id"]]
    snap = create_snapshot(spark, config, SnapshotSpec("hh-v1", "silver.preferences", purpose="preference",
                                                       validation=0.0, test=0.0))  # fmt: skip
    assert snap["rows"] == 3 and snap["excluded"] == {}
    near = [d for d in read_table(SILVER_DECISIONS, lakehouse).to_pylist() if d["reason"] == "near_duplicate"]
    kept = [p for c, p in pairs.items() if c.startswith(LONG)]
    assert len(near) == 1 and len(kept) == 1 and near[0]["duplicate_of"] == kept[0]["doc_id"]
