"""A real, small model registered in MLflow, and a real `millpond serve` process on 127.0.0.1."""

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curation_data import SENTENCES

MODEL_NAME = "millpond-pretrain-served"


def register_tiny_model(lakehouse: Path) -> str:
    """Train a BPE tokenizer on prose, build the `tiny` Llama preset (random weights: serving does
    not care how good it is), log it as a run's `model` artifacts and register it. Returns the run id."""
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from jobs.config import DEFAULTS, Config
    from jobs.tracking import use_experiment
    from trainers.model import llama_config
    from trainers.tokenizer import EOS, PAD, TokenizerSettings, train_bpe

    config = Config(values={**DEFAULTS, "lakehouse": str(lakehouse)}, file=None)
    use_experiment(config, "pretrain")
    tokenizer = train_bpe(SENTENCES * 20, TokenizerSettings(vocab_size=400, min_frequency=1))
    folder = lakehouse / "_runs" / "served-model"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        llama_config("tiny", tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD))
    )
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), eos_token=EOS, pad_token=PAD
    ).save_pretrained(folder)
    with mlflow.start_run(run_name="served-model") as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
        client = mlflow.MlflowClient()
        client.create_registered_model(MODEL_NAME)
        version = client.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return run.info.run_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(lakehouse: Path, config: Path, *args: str, port: int | None = None) -> Iterator[dict[str, Any]]:
    """`millpond serve` in its own process group; yields its base URL and process; stopped after."""
    port = port or free_port()
    log = open(lakehouse.parent / f"serve-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "--lakehouse", str(lakehouse), "--config", str(config), "serve",
         "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    log.flush()
                    tail = Path(log.name).read_text()[-3000:]
                    raise RuntimeError(f"millpond serve did not come up:\n{tail}") from None
                time.sleep(0.3)
        yield {"url": url, "process": process, "health": health, "log": Path(log.name)}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
