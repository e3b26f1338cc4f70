"""`millpond serve` with the official OpenAI client, feedback, limits and durable landing."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import MODEL_NAME, register_tiny_model, serving

from serving.events import problem
from serving.landing import LandingSettings, LandingWriter, close_orphans

KEY = "sk-millpond-test-0123456789"


@pytest.fixture(scope="module")
def served_lakehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("serve")
    lakehouse = root / "lakehouse"
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run_id = register_tiny_model(lakehouse)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    keys = root / "keys.txt"
    keys.write_text(f"sk-other-key\n{KEY}\n")
    config = root / "millpond.toml"
    config.write_text(
        f"[serve]\napi_keys_file = '{keys}'\ndefault_consent = ['preference']\nmax_body_bytes = 20000\n"
        "max_tokens = 64\n"
    )
    return {"lakehouse": lakehouse, "config": config, "run_id": run_id}


def _landed(lakehouse: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted((lakehouse / "_landing" / "interactions").glob("*")):
        for line in path.read_bytes().splitlines():
            events.append(json.loads(line))
    return events


def test_openai_client_chat_stream_feedback_and_limits(served_lakehouse: dict[str, Any]) -> None:
    from openai import APIStatusError, AuthenticationError, OpenAI

    lakehouse, config = served_lakehouse["lakehouse"], served_lakehouse["config"]
    secret = "my allergy is to hazelnuts, says patient 4471"
    with serving(lakehouse, config, "--model", f"{MODEL_NAME}@champion") as server:
        client = OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)
        listed = client.models.list().data
        assert [m.id for m in listed] == [f"{MODEL_NAME}/1:{served_lakehouse['run_id']}"]

        chat = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": secret}], max_tokens=12, seed=3, user="u-ann"
        )
        assert chat.id.startswith("chatcmpl-") and chat.model.startswith(f"{MODEL_NAME}/1:")
        assert chat.choices[0].message.role == "assistant" and isinstance(chat.choices[0].message.content, str)
        assert 0 < chat.usage.completion_tokens <= 12
        again = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": secret}], max_tokens=12, seed=3, user="u-ann"
        )
        assert again.choices[0].message.content == chat.choices[0].message.content  # a seed repeats

        two = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The mill?"}],
            n=2, max_tokens=8, temperature=0.9, user="u-bob", metadata={"consent": "preference,sft"},
        )  # fmt: skip
        assert [c.index for c in two.choices] == [0, 1]

        pieces = list(client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "Tell me of rivers."}], max_tokens=10, seed=1,
            stream=True,
        ))  # fmt: skip
        streamed = "".join(p.choices[0].delta.content or "" for p in pieces)
        assert pieces[-1].choices[0].finish_reason in ("stop", "length") and len({p.id for p in pieces}) == 1
        plain = client.completions.create(model=MODEL_NAME, prompt="The river", max_tokens=5)
        assert plain.id.startswith("cmpl-") and isinstance(plain.choices[0].text, str)

        # Feedback names an interaction; an unknown one is refused, never stored.
        http = httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        up = http.post("/v1/feedback", json={"interaction_id": chat.id, "rating": "up", "comment": "ok"})
        assert up.status_code == 200, up.text
        picked = http.post("/v1/feedback", json={"interaction_id": two.id, "choice": 1, "edit": "The mill turns."})
        assert picked.status_code == 200, picked.text
        assert http.post("/v1/feedback", json={"interaction_id": "chatcmpl-nope", "rating": "up"}).status_code == 404
        assert http.post("/v1/feedback", json={"interaction_id": two.id, "choice": 5}).status_code == 400

        # Keys, sizes and malformed bodies.
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server["url"] + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        assert httpx.get(server["url"] + "/v1/models").status_code == 401
        with pytest.raises(APIStatusError) as too_big:
            client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x" * 30000}])
        assert too_big.value.status_code == 413
        bad = http.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
        wrong = http.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "hi"}]})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "messages[0]"
        over = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 1000})  # fmt: skip
        assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
        anonymous = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert anonymous.status_code == 200
        assert httpx.get(server["url"] + "/health").json()["status"] == "ok"

    # Every event landed, valid, in closed files; nothing of the prompt reached the log.
    assert secret not in server["log"].read_text()
    folder = lakehouse / "_landing" / "interactions"
    assert not list(folder.glob("*.part")) and list(folder.glob("*.jsonl"))
    events = _landed(lakehouse)
    assert all(problem(e) is None for e in events)
    by_interaction: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_interaction.setdefault(e["interaction_id"], []).append(e)
    asked = by_interaction[chat.id]
    assert [e["event_type"] for e in asked] == ["request", "response", "feedback"]
    assert asked[0]["messages"] == [{"role": "user", "content": secret}] and asked[0]["user"] == "u-ann"
    assert asked[0]["consent"] == ["preference"]  # [serve] default_consent
    assert asked[1]["responses"] == [chat.choices[0].message.content]
    assert asked[2]["feedback"] == {"rating": "up", "choice": None, "edit": None, "comment": "ok"}
    assert asked[0]["model"] == {"name": MODEL_NAME, "version": "1", "run_id": served_lakehouse["run_id"]}
    assert by_interaction[two.id][0]["consent"] == ["preference", "sft"]
    assert by_interaction[two.id][2]["feedback"]["choice"] == 1 and len(by_interaction[two.id][1]["responses"]) == 2
    assert streamed == by_interaction[pieces[0].id][1]["responses"][0]
    nobody = by_interaction[anonymous.json()["id"]][0]
    assert nobody["user"] is None and nobody["consent"] == []
    assert len(events) == 2 * 6 + 2  # six interactions, two feedbacks


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_no_acknowledged_event(spark, served_lakehouse: dict[str, Any]) -> None:
    lakehouse, config = served_lakehouse["lakehouse"], served_lakehouse["config"]
    before = {e["event_id"] for e in _landed(lakehouse)}
    acknowledged: list[str] = []
    lock = threading.Lock()
    with serving(lakehouse, config, "--run", served_lakehouse["run_id"]) as server:

        def client(worker: int) -> None:
            with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
                for i in range(25):
                    try:
                        answer = http.post("/v1/chat/completions", json={
                            "messages": [{"role": "user", "content": f"burst {worker}-{i}"}], "max_tokens": 4,
                            "user": f"u-{worker}"})  # fmt: skip
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 200:
                        with lock:
                            acknowledged.append(answer.json()["id"])
                            if len(acknowledged) == 60:
                                os.killpg(server["process"].pid, signal.SIGKILL)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert 60 <= len(acknowledged) < 200
    folder = lakehouse / "_landing" / "interactions"
    assert list(folder.glob("*.part"))  # the killed replica's open file
    # The next start closes it; every acknowledged interaction has its request and response on disk.
    with serving(lakehouse, config, "--run", served_lakehouse["run_id"]):
        pass
    assert not list(folder.glob("*.part"))
    landed: dict[str, set[str]] = {}
    for e in _landed(lakehouse):
        if e["event_id"] not in before:
            landed.setdefault(e["interaction_id"], set()).add(e["event_type"])
    assert all(landed.get(i) == {"request", "response"} for i in acknowledged)

    # `stream --once` brings every acknowledged event into bronze.interactions, once.
    from conftest import make_config
    from jobs.stream_interactions import run_stream
    from lineage.catalog import BRONZE_INTERACTIONS
    from lineage.tables import read_table

    streamed = run_stream(spark, make_config(lakehouse)).as_json()
    rows = read_table(BRONZE_INTERACTIONS, lakehouse).to_pylist()
    assert len({r["event_id"] for r in rows}) == len(rows) == streamed["ingested"]
    in_bronze: dict[str, list[str]] = {}
    for r in rows:
        in_bronze.setdefault(r["interaction_id"], []).append(r["event_type"])
    assert all(sorted(in_bronze[i]) == ["request", "response"] for i in acknowledged)
    assert streamed["read"] == streamed["ingested"] + streamed["quarantined"]  # at most a torn last line


def test_landing_group_commits_rolls_and_closes_orphans(tmp_path: Path) -> None:
    from serving.events import event

    folder = tmp_path / "landing"
    writer = LandingWriter(folder, LandingSettings(roll_bytes=2000), replica="r1")
    for wave in range(2):  # each wave is over roll_bytes: the file rolls after it
        futures = [writer.submit([event("request", f"i{wave}-{n}", messages=[])]) for n in range(20)]
        for f in futures:
            f.result(10)
    assert writer.events_written == 40 and writer.fsyncs < 40  # concurrent writes shared fsyncs
    writer.close()
    closed = sorted(folder.glob("*.jsonl"))
    assert len(closed) > 1 and not list(folder.glob("*.part"))  # rolled by size
    assert sum(len(p.read_bytes().splitlines()) for p in closed) == 40

    # A writer that died mid-line: its .part is closed by the next start, the torn line kept for quarantine.
    (folder / "r9-000001.part").write_bytes(b'{"a": 1}\n{"torn')
    live = LandingWriter(folder, replica="r2")
    live.write([event("request", "x", messages=[])])
    assert (folder / "r9-000001.jsonl").read_bytes().endswith(b'{"torn') and live.recovered
    assert close_orphans(folder) == []  # r2's open file is locked: left alone
    assert len(list(folder.glob("r2-*.part"))) == 1
    live.close()
