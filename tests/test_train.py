"""Pretraining with real DeepSpeed on the CPU: MLflow tracking, an exact resume, a model transformers can load."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from curation_data import silver_row, write_silver

from conftest import make_config
from jobs.cli import cli
from jobs.snapshot import create_snapshot
from jobs.train import prepare_tokens, pretrain
from lineage.snapshots import SnapshotSpec, snapshot_row
from trainers.loop import TrainSettings


def _history(client: Any, run_id: str) -> dict[int, float]:
    """loss by step; a step logged twice (before a crash and after the resume) keeps its last value."""
    history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


@pytest.fixture
def mlflow_server(lakehouse: Path) -> Iterator[str]:
    """`millpond mlflow` on a free port of 127.0.0.1, serving the lakehouse's store; stopped after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (lakehouse.parent / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "millpond"), "--lakehouse", str(lakehouse), "mlflow", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the MLflow server did not start: {(lakehouse.parent / 'mlflow-server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_pretrain_tracks_resumes_exactly_and_saves_a_loadable_model(
    spark, lakehouse: Path, mlflow_server: str, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # runs go to the real server, as a user's would
    ok = ["pretraining"]
    write_silver(spark, lakehouse, [silver_row(i, "books", "allowed", ok) for i in range(60)])
    config = make_config(lakehouse)
    create_snapshot(spark, config, SnapshotSpec("train-v1", validation=0.1, test=0.1))

    runner = CliRunner()
    result = runner.invoke(
        cli, ["--lakehouse", str(lakehouse), "train", "pretrain", "--snapshot", "train-v1", "--max-steps", "12",
              "--seq-len", "32", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["steps"] == 12 and figures["final_loss"] < figures["first_loss"]
    assert figures["tokens_per_s"] > 0 and figures["val_perplexity"] > 1
    assert figures["tracking_uri"] == mlflow_server

    import mlflow

    mlflow.set_tracking_uri(figures["tracking_uri"])
    client = mlflow.MlflowClient()
    run = client.get_run(figures["run_id"])
    assert run.data.params["snapshot"] == "train-v1" and run.data.params["train.max_steps"] == "12"
    assert run.data.params["config.curate.pii.score_threshold"] == "0.4"  # the whole config, flattened
    pinned = snapshot_row(lakehouse, "train-v1")["source_version"]
    assert run.data.params["snapshot.source_version"] == str(pinned)
    source = json.loads(run.inputs.dataset_inputs[0].dataset.source)
    assert source["path"].endswith("silver/documents") and run.data.tags["snapshot"] == "train-v1"
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "val_perplexity"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(figures["run_id"])}
    assert {"deepspeed_config.json", "model", "tokenizer", "shards"} <= artifacts
    registered = figures["registered_model"]
    assert client.get_model_version(registered["name"], registered["version"]).run_id == figures["run_id"]
    # The link `millpond mlflow` prints opens the experiment on its runs table (the UI's model-training
    # view: `?workflowType=machine_learning`), not on the GenAI overview the UI opens by default.
    from trainers.tracking import experiment_pages

    pages = dict(experiment_pages(mlflow_server, mlflow_server))
    page = f"{mlflow_server}/#/experiments/{run.info.experiment_id}?workflowType=machine_learning"
    assert pages["millpond-pretrain"] == page and "Default" not in pages  # experiments with runs only

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(figures["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(figures["model_dir"])
    prompt = tokenizer("The river that feeds the mill", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5

    # `millpond eval RUN_ID` re-runs the validation perplexity and logs it to the run.
    again = runner.invoke(cli, ["--lakehouse", str(lakehouse), "eval", figures["run_id"], "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["val_perplexity"] == pytest.approx(
        figures["val_perplexity"], rel=1e-4
    )

    # A run killed after its step-10 checkpoint, resumed, gives the uninterrupted run's losses.
    settings = TrainSettings(max_steps=20, checkpoint_every=10, seq_len=32, warmup=3)
    manifest = prepare_tokens(config, "train-v1", None, None)
    straight = pretrain(config, "train-v1", settings, manifest)

    real_log = mlflow.log_metrics

    def crash_at_14(metrics: dict[str, float], step: int | None = None, **kw: Any) -> None:
        if step == 14:
            raise KeyboardInterrupt("killed at step 14")
        real_log(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", crash_at_14)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, "train-v1", settings, manifest)
    monkeypatch.setattr(mlflow, "log_metrics", real_log)
    crashed = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time DESC"])[0]
    resumed = pretrain(config, "train-v1", settings, manifest, resume_run=crashed.info.run_id)
    assert resumed["start_step"] == 10 and resumed["steps"] == 20
    ours, theirs = _history(client, resumed["run_id"]), _history(client, straight["run_id"])
    assert sorted(ours) == list(range(1, 21))
    for step in range(1, 21):
        assert ours[step] == pytest.approx(theirs[step], rel=1e-5), step

    # Two processes under the deepspeed launcher (gloo on the CPU): both train, rank 0 tracks.
    launcher = Path(sys.executable).parent / "deepspeed"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": mlflow_server}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None), env.pop("MASTER_PORT", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = subprocess.run(
        [str(launcher), "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
         str(Path(__file__).resolve().parents[1] / "jobs" / "train.py"), "pretrain", "--snapshot", "train-v1",
         "--max-steps", "12", "--seq-len", "32", "--json", "--lakehouse", str(lakehouse)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    reports = [json.loads(line[line.index("{") :]) for line in two.stdout.splitlines() if '{"final_loss"' in line]
    assert len(reports) == 1  # rank 0 only
    run = client.get_run(reports[0]["run_id"])
    assert reports[0]["steps"] == 12 and reports[0]["final_loss"] < reports[0]["first_loss"]
    assert run.data.params["snapshot"] == "train-v1" and "loss" in run.data.metrics


def test_training_does_not_build_the_inference_all_reduce_op(monkeypatch) -> None:
    """DeepSpeed's CPU backend would compile `deepspeed_shm_comm` (a minute of C++ on a fresh
    machine) as it starts; training never calls it, so joining the process group skips it."""
    import importlib

    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    from trainers.loop import skip_inference_comm_op

    ds_comm = importlib.import_module("deepspeed.comm.torch")  # `deepspeed.comm.torch` is also torch itself
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", True)
    built: list[str] = []
    found = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if found is None:
        pytest.skip(f"{get_accelerator().device_name()}: DeepSpeed has no shared-memory op to build here")
    builder = type(found)
    monkeypatch.setattr(builder, "load", lambda self, *a, **k: built.append(self.NAME) or self)
    assert ds_comm.build_shm_op() is not None and built == ["deepspeed_shm_comm"]  # what DeepSpeed would do
    built.clear()
    skip_inference_comm_op()
    assert ds_comm.build_shm_op() is None and built == []


def test_compiled_training_takes_the_steps_eager_training_takes(tmp_path: Path) -> None:
    """`[train] compile = true` runs the model through torch.compile (a third more tokens/s on an
    H200, benchmarks/README.md) and must not change what training computes."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    from trainers.data import TokenWindows
    from trainers.loop import NextToken, train
    from trainers.model import llama_config

    ids = np.tile(np.arange(2, 50, dtype=np.uint16), 400)  # a pattern the model learns in a few steps
    ids.tofile(tmp_path / "train-00000.bin")
    manifest = {"snapshot": "t", "dtype": "uint16",
                "shards": [{"file": "train-00000.bin", "split": "train", "tokens": len(ids)}]}  # fmt: skip
    data = TokenWindows(tmp_path, manifest, "train", 32)
    losses: dict[bool, list[float]] = {}
    for compiled in (False, True):
        settings = TrainSettings(
            seq_len=32, micro_batch=2, max_steps=4, warmup=1, checkpoint_every=100, compile=compiled
        )
        torch.manual_seed(settings.seed)
        model = LlamaForCausalLM(llama_config("tiny", 512, 0, 1))
        steps: list[float] = []
        trained, _, _ = train(model, NextToken(data, settings), settings, tmp_path / f"ckpt-{compiled}", False,
                              lambda report, steps=steps: steps.append(report.loss))  # fmt: skip
        losses[compiled] = steps
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert losses[False][-1] < losses[False][0]
    trained.save_pretrained(tmp_path / "model")  # the compiled model saves as the job saves it, under its own names
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "model")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values(), strict=True)
    )


def test_training_runs_without_spark() -> None:
    """A training process on a GPU node reads token shards and pairs; it imports nothing of Spark."""
    code = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['delta'] = None\n"
        "import trainers.loop, trainers.data, trainers.dpo, trainers.sft, trainers.preference, trainers.shards"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
