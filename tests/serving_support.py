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

from serving.smoke import register_untrained_model

MODEL_NAME = "millpond-pretrain-served"


def register_tiny_model(lakehouse: Path) -> str:
    """The `tiny` preset, untrained, registered as MODEL_NAME with the alias `champion`; its run id."""
    return register_untrained_model(lakehouse, MODEL_NAME, SENTENCES * 20, alias="champion")


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
