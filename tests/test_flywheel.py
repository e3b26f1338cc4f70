"""`millpond flywheel`: served interactions and feedback become pairs, DPO trains a challenger from
the champion, the gate decides, a promoted challenger reaches the running server without a
restart, a losing one is not promoted, and a turn without new pairs ends early."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from curation_data import SENTENCES
from serving_support import serving

from conftest import make_config
from jobs.cli import cli
from jobs.flywheel import KEPT_CHAMPION, PROMOTED, TOO_FEW_PAIRS, turn
from serving.smoke import register_untrained_model

QUESTIONS = ["Where is the mill?", "What does the weir do?", "Who built the wheel?", "When is it open?",
             "How old is the race?", "Why does the river rise?", "What is in the loft?", "Is the yard open?"]  # fmt: skip


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return json.loads(response.read())


def test_a_turn_promotes_a_winner_that_the_server_follows_and_keeps_a_loser_out(spark, tmp_path: Path) -> None:
    from openai import OpenAI

    lakehouse = tmp_path / "lakehouse"
    base_run = register_untrained_model(lakehouse, "millpond-base", SENTENCES * 20 + QUESTIONS * 20)
    runner = CliRunner()
    first = runner.invoke(cli, ["--lakehouse", str(lakehouse), "flywheel", "promote", "millpond-base/1", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {
        "name": "millpond-chat", "version": "1", "alias": "champion", "run_id": base_run}  # fmt: skip
    served_config = tmp_path / "millpond.toml"
    served_config.write_text("[serve]\ndefault_consent = ['preference']\nroll_seconds = 1.0\n"
                             "model_refresh_seconds = 1.0\nmax_tokens = 16\n")  # fmt: skip
    config = make_config(lakehouse)
    config.values["flywheel"] |= {"min_new_pairs": 8, "min_winrate": 0.0, "test": 0.3}
    config.values["dpo"] |= {"max_steps": 4, "checkpoint_every": 4}
    config.values["eval"] |= {"prompts": 6, "max_new_tokens": 8}

    with serving(lakehouse, served_config, "--model", "millpond-chat@champion") as server:
        assert server["health"]["model"] == f"millpond-chat/1:{base_run}"
        client = OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0)
        http = httpx.Client(base_url=server["url"], timeout=30)
        # Simulated users: each picks the shorter of two answers, with their consent to preference use.
        for i, question in enumerate(QUESTIONS * 3):
            chat = client.chat.completions.create(model="millpond-chat", messages=[{"role": "user", "content": question}],
                                                  n=2, max_tokens=12, temperature=1.0, seed=i, user=f"u-{i % 5}")  # fmt: skip
            a, b = (c.message.content for c in chat.choices)
            if a != b:
                given = http.post("/v1/feedback", json={"interaction_id": chat.id, "choice": int(len(b) < len(a))})
                assert given.status_code == 200, given.text
        time.sleep(2.5)  # the landing file rolls (roll_seconds) and becomes readable for the stream

        promoted = turn(spark, config)
        assert promoted.decision == PROMOTED and promoted.challenger == "millpond-chat/2", promoted.reasons
        assert promoted.stream["ingested"] > 0 and promoted.new_pairs >= 8 and "winrate" in promoted.figures
        assert any("min_winrate 0.0" in r for r in promoted.reasons)
        deadline = time.time() + 60
        while _health(server["url"])["model"].split(":")[0] != "millpond-chat/2":  # no restart
            assert time.time() < deadline, "the server never followed the alias"
            time.sleep(0.5)
        answered = client.chat.completions.create(model="millpond-chat", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4, user="u-1")  # fmt: skip
        assert answered.model == f"millpond-chat/2:{promoted.dpo['run_id']}"

    import mlflow

    from jobs.tracking import tracking_uri

    tracking = mlflow.MlflowClient(tracking_uri(config))
    turn_run = tracking.get_run(promoted.run_id)
    assert turn_run.data.tags["decision"] == PROMOTED and turn_run.data.tags["challenger"] == "millpond-chat/2"
    dpo_run = tracking.get_run(promoted.dpo["run_id"])
    assert dpo_run.data.tags["mlflow.parentRunId"] == promoted.run_id  # the turn holds its step runs
    assert dpo_run.data.params["init.model"] == "millpond-chat/1" and "winrate" in dpo_run.data.metrics

    # Nothing new since: the turn ends early and says so.
    idle = turn(spark, config)
    assert idle.decision == TOO_FEW_PAIRS and idle.new_pairs == 0 and "min_new_pairs 8" in idle.reasons[0]

    # A challenger that does not clear the bar is registered but not promoted.
    strict = copy.deepcopy(config.values)
    strict["flywheel"] |= {"min_new_pairs": 0, "min_winrate": 1.01}
    losing = turn(spark, type(config)(values=strict, file=None))
    assert losing.decision == KEPT_CHAMPION and losing.challenger == "millpond-chat/3"
    assert str(tracking.get_model_version_by_alias("millpond-chat", "champion").version) == "2"


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
