"""`millpond curate` end to end on a real lakehouse: funnel, decision log, incremental runs, the gate,
a run that dies half way, and the commands around it (why, evalset)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from curation_data import prose

from conftest import make_config, write_jsonl, write_manifest
from curation.gate import GateFailedError
from curation.language import ModelMissingError
from curation.pii import PiiKeyMissingError
from jobs.cli import cli
from jobs.config import Config
from jobs.curate import CurateError, plan_stages, run_curate
from jobs.ingest import run_ingest
from lineage.catalog import LINEAGE_RUNS, SILVER_DECISIONS, SILVER_DOCUMENTS, SILVER_MINHASH
from lineage.tables import read_table

QUESTION = (
    "Which of the following best explains why the mill wheel turns faster in spring when the river "
    "rises after the snow melts in the northern hills?"
)
FRENCH = "Le moulin se trouve au bord de la rivière, et le meunier y travaille depuis trente ans avec sa famille."


def _batch_one(folder: Path) -> Path:
    mill = [{"id": f"p{i}", "text": prose(i)} for i in range(6)]
    mill += [
        {"id": "copy_of_p0", "text": prose(0)},
        {"id": "fr", "text": FRENCH},
        {"id": "short", "text": "Far too short to be kept."},
        {"id": "leak", "text": prose(10) + " " + QUESTION},
        {"id": "spdx", "text": "SPDX-License-Identifier: Apache-2.0\n\n" + prose(12)},
    ]
    write_jsonl(folder / "mill" / "a.jsonl", mill)
    write_jsonl(folder / "gpl" / "a.jsonl", [{"id": "g1", "text": prose(30)}])
    return write_manifest(
        folder / "sources.toml",
        [
            {"name": "mill", "format": "jsonl", "path": "mill/*.jsonl", "id_field": "id", "license": "MIT",
             "domain": "prose"},
            {"name": "gpl", "format": "jsonl", "path": "gpl/*.jsonl", "id_field": "id",
             "license": "GPL-3.0-only", "domain": "prose"},
        ],
    )  # fmt: skip


def _batch_two(folder: Path) -> Path:
    write_jsonl(
        folder / "mill" / "b.jsonl",
        [
            {"id": "p6", "text": prose(6)},
            {"id": "p2_again", "text": prose(2)},  # a later copy of a silver document: dropped
            {"id": "g1_permissive", "text": prose(30)},  # an MIT copy of the GPL document: displaces it
        ],
    )
    return folder / "sources.toml"


def _ids_by_record(lakehouse: Path) -> dict[str, str]:
    from lineage.catalog import BRONZE_DOCUMENTS

    return {r["record_id"]: r["doc_id"] for r in read_table(BRONZE_DOCUMENTS, lakehouse).to_pylist()}


def _silver(lakehouse: Path) -> dict[str, tuple[Any, ...]]:
    rows = read_table(SILVER_DOCUMENTS, lakehouse).to_pylist()
    return {r["doc_id"]: (r["text"], r["text_sha256"], r["license"], r["lang"], r["source"]) for r in rows}


def _decisions(lakehouse: Path) -> list[dict[str, Any]]:
    return read_table(SILVER_DECISIONS, lakehouse).to_pylist()


def _register_eval_set(lakehouse: Path, folder: Path) -> None:
    items = write_jsonl(folder / "eval.jsonl", [{"question": QUESTION, "answer": "B"}, {"question": "Short?"}])
    runner = CliRunner()
    result = runner.invoke(
        cli, ["--lakehouse", str(lakehouse), "evalset", "add", "mill-qa", str(items), "--text-field", "question"]
    )
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["--lakehouse", str(lakehouse), "evalset", "list", "--json"])
    assert json.loads(listed.output)[0]["name"] == "mill-qa"
    assert json.loads(listed.output)[0]["items"] == 2


@dataclass(frozen=True)
class CuratedBatchOne:
    """Batch one and the eval set in a lakehouse, as ingested (a copy) and then curated once."""

    inbox: Path
    ingested: Path
    curated: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def batch_one(spark, tmp_path_factory: pytest.TempPathFactory) -> CuratedBatchOne:
    """One ingest and one curate of batch one for the tests of this module: the funnel test goes on
    from a copy of the curated lakehouse, the half-way test redoes the curate from a copy of the
    ingested one and compares with this run."""
    root = tmp_path_factory.mktemp("batch-one")
    curated = root / "lakehouse"
    config = make_config(curated)
    run_ingest(spark, config, _batch_one(root / "in"))
    _register_eval_set(curated, root)
    shutil.copytree(curated, root / "ingested")
    report = run_curate(spark, config).as_json()
    return CuratedBatchOne(inbox=root / "in", ingested=root / "ingested", curated=curated, report=report)


def test_curate_funnel_decisions_incremental_and_full(batch_one: CuratedBatchOne, spark, lakehouse: Path) -> None:
    shutil.copytree(batch_one.curated, lakehouse)
    config = make_config(lakehouse)
    report = batch_one.report
    ids = _ids_by_record(lakehouse)
    # The funnel reconciles stage by stage and ends with what silver holds.
    assert report["in"] == 12
    stages = report["stages"]
    assert [s["stage"] for s in stages] == ["normalize", "language", "quality", "license", "exact_dedup",
                                            "fuzzy_dedup", "decontaminate", "pii", "gate"]  # fmt: skip
    for before, after in zip(stages, stages[1:], strict=False):
        assert after["in"] == before["kept"] + before["modified"]
    for stage in stages:
        assert stage["in"] == stage["kept"] + stage["modified"] + sum(stage["dropped"].values())
    assert report["out"] == stages[-1]["kept"] + stages[-1]["modified"] == 8
    assert stages[1]["dropped"] == {"language_not_allowed": 1}
    assert stages[2]["dropped"] == {"min_word_count": 1}
    assert stages[4]["dropped"] == {"exact_duplicate": 1}
    assert stages[5]["dropped"] == {}
    assert stages[6]["dropped"] == {"mill-qa": 1}
    assert report["overlap"]["mill-qa"] == {"items": 2, "too_short": 1, "items_found": 1, "documents_dropped": 1}
    assert set(report["skipped"]) == {"classifier"}
    silver = _silver(lakehouse)
    assert len(silver) == 8 and report["silver"] == {"inserted": 8, "updated": 0, "deleted": 0}
    assert silver[ids["spdx"]][2] == "Apache-2.0"

    # Every dropped document has exactly one dropped decision, with its reason.
    decisions = _decisions(lakehouse)
    dropped = {r["doc_id"]: r for r in decisions if r["action"] == "dropped"}
    assert len(dropped) == len([r for r in decisions if r["action"] == "dropped"]) == 4
    assert {dropped[ids[k]]["reason"] for k in ("fr", "short", "leak")} == {
        "language_not_allowed",
        "min_word_count",
        "mill-qa",
    }
    twins = sorted([ids["p0"], ids["copy_of_p0"]])
    assert dropped[twins[1]]["duplicate_of"] == twins[0]  # same score, license and ingest: smallest id kept
    assert set(silver) | set(dropped) == set(ids.values())

    # `why` shows the path through every stage; the run keeps its funnel.
    why = CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "why", twins[1], "--json"])
    path = json.loads(why.output)
    assert [d["stage"] for d in path["decisions"]] == ["normalize", "language", "quality", "license", "exact_dedup"]
    assert path["in_silver"] is False and path["bronze"]["source"] == "mill"
    text = CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "why", twins[1]]).output
    assert f"duplicate of {twins[0]}" in text
    run_row = next(r for r in read_table(LINEAGE_RUNS, lakehouse).to_pylist() if r["run_id"] == report["run_id"])
    assert run_row["status"] == "succeeded"
    assert json.loads(dict(run_row["reports"])["funnel"])["stages"] == stages

    # The near-duplicate index holds every document that reached fuzzy_dedup, kept = in silver.
    index = read_table(SILVER_MINHASH, lakehouse).to_pylist()
    assert {r["doc_id"] for r in index if r["status"] == "kept"} == set(silver)
    assert all(len(r["signature"]) == 128 for r in index)

    # Nothing new: nothing changes.
    versions = report["versions"]
    again = run_curate(spark, config).as_json()
    assert again["mode"] == "nothing_new" and again["in"] == 0
    assert again["versions"] == versions

    # A second batch is curated alone, against what silver holds.
    run_ingest(spark, config, _batch_two(batch_one.inbox))  # beside batch one's file, as a new file lands
    ids = _ids_by_record(lakehouse)
    second = run_curate(spark, config).as_json()
    assert second["mode"] == "incremental" and second["in"] == 3
    assert second["stages"][4]["dropped"] == {"exact_duplicate": 1}
    assert second["superseded"] == 1
    silver = _silver(lakehouse)
    assert ids["g1_permissive"] in silver and ids["g1"] not in silver and ids["p2_again"] not in silver
    assert ids["p6"] in silver and len(silver) == 9
    ousted = [r for r in _decisions(lakehouse) if r["doc_id"] == ids["g1"] and r["run_id"] == second["run_id"]]
    assert [(r["action"], r["duplicate_of"]) for r in ousted] == [("dropped", ids["g1_permissive"])]

    index = {r["doc_id"]: r["status"] for r in read_table(SILVER_MINHASH, lakehouse).to_pylist()}
    assert index[ids["g1"]] == "dropped" and index[ids["g1_permissive"]] == "kept"
    assert {k for k, v in index.items() if v == "kept"} == set(silver)

    # Recomputing everything gives the same silver.
    full = run_curate(spark, config, full=True).as_json()
    assert full["mode"] == "full" and full["in"] == 15
    assert _silver(lakehouse) == silver


def test_stage_requests_are_checked_before_anything_runs(tmp_path: Path, monkeypatch) -> None:
    config = make_config(tmp_path / "lh")
    with monkeypatch.context() as patched:
        patched.delenv("MILLPOND_PII_KEY")
        with pytest.raises(PiiKeyMissingError, match="set MILLPOND_PII_KEY"):
            plan_stages(["normalize", "pii"], config)
        with pytest.raises(PiiKeyMissingError):
            plan_stages(None, config)  # the default run scrubs PII: no key, no run
    missing = _with(config, pii={"spacy_model": "en_core_web_nonexistent"})
    with pytest.raises(ModelMissingError, match="en_core_web_nonexistent.*pattern_only"):
        plan_stages(["pii"], missing)
    with pytest.raises(CurateError, match="unknown stage"):
        plan_stages(["normalise"], config)
    with pytest.raises(Exception, match="millpond classifier train"):
        plan_stages(["classifier"], config)
    chosen, skipped = plan_stages(None, config)
    assert "classifier" in skipped and "gate" in chosen


def _with(config: Config, **sections: dict[str, Any]) -> Config:
    values = json.loads(json.dumps(config.values))
    for name, settings in sections.items():
        values["curate"][name].update(settings)
    return Config(values=values, file=None)


def test_a_failing_gate_commits_nothing_and_keeps_its_result(spark, tmp_path: Path, lakehouse: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": prose(1) + " Write to miller@example.com for a tour."}])
    manifest = write_manifest(tmp_path / "in" / "sources.toml", [{"name": "s", "format": "jsonl", "path": "*.jsonl"}])
    config = _with(make_config(lakehouse), gate={"residual_pii": "on"})
    run_ingest(spark, config, manifest)
    with pytest.raises(GateFailedError, match="not_match_regex.*on 1 row"):
        run_curate(spark, config, ["normalize", "gate"])
    assert read_table(SILVER_DOCUMENTS, lakehouse).num_rows == 0
    assert read_table(SILVER_DECISIONS, lakehouse).num_rows == 0
    failed = [r for r in read_table(LINEAGE_RUNS, lakehouse).to_pylist() if r["job"] == "curate"]
    assert failed[0]["status"] == "failed"
    gate = json.loads(dict(failed[0]["reports"])["gate"])
    assert gate["success"] is False and "miller@example.com" not in json.dumps(gate)


def test_a_run_that_dies_half_way_is_redone_exactly(
    batch_one: CuratedBatchOne, spark, lakehouse: Path, monkeypatch
) -> None:
    import curation.commit

    shutil.copytree(batch_one.ingested, lakehouse)
    config = make_config(lakehouse)
    twin = batch_one.curated  # the same batch curated straight through (read only here)

    def die(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt("killed between the decisions and the silver MERGE")

    with monkeypatch.context() as patched:
        patched.setattr(curation.commit, "silver_rows", die)
        with pytest.raises(KeyboardInterrupt):
            run_curate(spark, config)
    assert read_table(SILVER_DOCUMENTS, lakehouse).num_rows == 0
    assert read_table(SILVER_DECISIONS, lakehouse).num_rows > 0  # the dead run's decisions

    redone = run_curate(spark, config).as_json()
    straight = batch_one.report
    assert _silver(lakehouse) == _silver(twin)
    assert {r["run_id"] for r in _decisions(lakehouse)} == {redone["run_id"]}
    strip = {"run_id", "decided_at"}
    ours = sorted(tuple(v for k, v in r.items() if k not in strip) for r in _decisions(lakehouse))
    theirs = sorted(tuple(v for k, v in r.items() if k not in strip) for r in _decisions(twin))
    assert ours == theirs
    untimed = [[{k: v for k, v in s.items() if k != "seconds"} for s in r["stages"]] for r in (redone, straight)]
    assert untimed[0] == untimed[1]


def test_a_batch_cut_into_small_partitions_is_curated_the_same(
    batch_one: CuratedBatchOne, spark, lakehouse: Path, monkeypatch
) -> None:
    """A batch larger than `[spark] partition_rows` is cut into more partitions, and its stages
    shuffle into more, than the session's setting (so that a task's share of 1M documents stays
    small): the outcome is the same, and the session's setting is back afterwards."""
    import curation.batch

    shutil.copytree(batch_one.ingested, lakehouse)
    values = json.loads(json.dumps(make_config(lakehouse).values))
    values["spark"]["partition_rows"] = 2
    before = spark.conf.get("spark.sql.shuffle.partitions")
    seen: dict[str, int] = {}

    def watched(batch: Any, *args: Any, **kwargs: Any) -> Any:
        seen["batch"] = batch.rdd.getNumPartitions()
        seen["shuffle"] = int(spark.conf.get("spark.sql.shuffle.partitions"))
        return original(batch, *args, **kwargs)

    original = curation.batch.run_stages
    monkeypatch.setattr(curation.batch, "run_stages", watched)
    report = run_curate(spark, Config(values=values, file=None)).as_json()
    assert seen == {"batch": 6, "shuffle": 6}  # 12 documents, 2 a partition
    assert spark.conf.get("spark.sql.shuffle.partitions") == before
    assert _silver(lakehouse) == _silver(batch_one.curated)
    strip = {"run_id", "decided_at"}
    ours = sorted(tuple(v for k, v in r.items() if k not in strip) for r in _decisions(lakehouse))
    theirs = sorted(tuple(v for k, v in r.items() if k not in strip) for r in _decisions(batch_one.curated))
    assert ours == theirs
    assert [s["kept"] for s in report["stages"]] == [s["kept"] for s in batch_one.report["stages"]]
