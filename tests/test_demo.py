"""`millpond demo --quick`: the data plane, then the loop (pretrain, serve, simulated users
through the `openai` client, stream, pairs, DPO, evaluation, promotion, the running server
following the alias). Then two more turns on its lakehouse: one with nothing new ends early, one
whose challenger misses the bar leaves the champion in place.

The demo runs in this test run's Spark session, whose JVM and Python workers are warm (a demo in
a fresh process spent about a minute more starting Spark and warming it up); the server and the
simulated users are separate processes as in `make demo`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import INTERPRETED_SPARK_TOML, make_config
from jobs.config import load_config
from jobs.demo import run_demo
from jobs.flywheel import KEPT_CHAMPION, TOO_FEW_PAIRS, turn


def test_the_quick_demo_turns_the_flywheel_and_the_gate_holds(spark, tmp_path: Path, capsys) -> None:
    lakehouse = tmp_path / "lakehouse"
    config_file = tmp_path / "millpond.toml"
    # Promote whatever wins: the path is what is tested, not the quick demo's few steps (its
    # perplexity moves by more or less than 10% from one run to the next).
    config_file.write_text("[flywheel]\nmin_winrate = 0.0\nmax_perplexity_increase = 10.0\n" + INTERPRETED_SPARK_TOML)
    run_demo(load_config(str(config_file), str(lakehouse)), quick=True, spark=spark)
    out = capsys.readouterr().out
    for step in ("== 1. ingest", "== 2. curate", "== 3. snapshot", "== 4. lineage", "== 5. pretrain", "== 6. serve",
                 "== 7. the flywheel turns", "== 8. the runs side by side"):  # fmt: skip
        assert step in out, step
    assert "millpond-chat@champion -> version 1 (the first champion)" in out
    turned = out[out.find("== 7. the flywheel turns") :]
    assert ": promoted" in out and "the running server now answers with millpond-chat/2:" in out, turned[:3000]

    import mlflow

    from jobs.tracking import tracking_uri

    config = make_config(lakehouse)
    config.values["flywheel"] |= {"min_new_pairs": 4}
    config.values["dpo"] |= {"max_steps": 3, "checkpoint_every": 1000}
    config.values["eval"] |= {"judge": "jobs.demo:plain_words", "prompts": 4, "max_new_tokens": 8}
    client = mlflow.MlflowClient(tracking_uri(config))
    assert str(client.get_model_version_by_alias("millpond-chat", "champion").version) == "2"
    turns = client.search_runs([client.get_experiment_by_name("millpond-flywheel").experiment_id],
                               filter_string="tags.`millpond.kind` = 'flywheel-turn'")  # fmt: skip
    assert len(turns) == 1 and turns[0].data.tags["decision"] == "promoted"
    dpo = client.search_runs([turns[0].info.experiment_id], filter_string="tags.`millpond.kind` = 'dpo'")
    assert dpo[0].data.tags["mlflow.parentRunId"] == turns[0].info.run_id  # the turn holds its step runs
    assert {"winrate", "preference_accuracy", "val_perplexity"} <= set(dpo[0].data.metrics)

    # Nothing new since: the turn ends early and says so.
    idle = turn(spark, config)
    assert idle.decision == TOO_FEW_PAIRS and idle.new_pairs == 0 and "min_new_pairs 4" in idle.reasons[0]
    # With `[flywheel] sft`: SFT on the chosen answers first, DPO from the SFT model. A challenger
    # that misses the bar is registered, and the champion stays.
    strict = copy.deepcopy(config.values)
    strict["flywheel"] |= {"min_new_pairs": 0, "min_winrate": 1.01, "sft": True}
    strict["sft"] |= {"max_steps": 3, "checkpoint_every": 1000}
    losing = turn(spark, type(config)(values=strict, file=None))
    assert losing.decision == KEPT_CHAMPION and losing.challenger == "millpond-chat/3"
    assert any("< [flywheel] min_winrate 1.01" in r for r in losing.reasons)
    assert str(client.get_model_version_by_alias("millpond-chat", "champion").version) == "2"
    assert losing.sft["demonstrations"]["train"] > 0 and losing.sft["snapshot"].startswith("flywheel-sft-")
    tuned = client.get_run(losing.sft["run_id"])
    assert (
        tuned.data.tags["mlflow.parentRunId"] == losing.run_id and tuned.data.params["init.model"] == "millpond-chat/2"
    )
    assert client.get_run(losing.dpo["run_id"]).data.params["init.run_id"] == losing.sft["run_id"]


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
