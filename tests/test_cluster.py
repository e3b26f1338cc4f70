"""spark-submit to a real standalone cluster (master + worker on 127.0.0.1), then check the table
and the master's own account of the application."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_jsonl, write_manifest
from jobs.submit import spark_home
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DOCUMENTS
from lineage.tables import read_table

pytestmark = pytest.mark.cluster

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Spark standalone master and one worker, started with spark-daemon.sh and stopped after."""
    work = tmp_path_factory.mktemp("standalone")
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_PID_DIR": str(work / "pids"),
        "SPARK_WORKER_DIR": str(work / "worker"),
        "SPARK_IDENT_STRING": f"millpond-test-{os.getpid()}",
    }
    daemon = str(spark_home() / "sbin" / "spark-daemon.sh")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    subprocess.run(
        [daemon, "start", MASTER, "1", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                daemon,
                "start",
                WORKER,
                "1",
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                str(worker_ui),
                url,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        deadline = time.time() + 60
        while True:
            try:
                if _json(f"http://127.0.0.1:{ui}/json/").get("aliveworkers") == 1:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in (work / "logs").glob("*.out"))
                pytest.fail(f"standalone cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield {"url": url, "master_ui": f"http://127.0.0.1:{ui}", "worker_ui": f"http://127.0.0.1:{worker_ui}"}
    finally:
        for cls in (WORKER, MASTER):
            subprocess.run([daemon, "stop", cls, "1"], env=env, capture_output=True)


def test_submit_ingest_to_a_standalone_cluster(standalone_cluster: dict[str, Any], tmp_path: Path) -> None:
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"text": f"cluster doc {i}"} for i in range(40)] + ["{not json"])
    write_jsonl(tmp_path / "raw" / "b.jsonl", [{"text": f"second file {i}"} for i in range(10)])
    manifest = write_manifest(tmp_path / "sources.toml", [{"name": "c", "path": "raw", "format": "jsonl"}])
    lakehouse = tmp_path / "lakehouse"
    config = tmp_path / "millpond.toml"
    config.write_text("[spark]\nshuffle_partitions = 2\nfast_jvm_start = true\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "--lakehouse",
            str(lakehouse),
            "--config",
            str(config),
            "submit",
            "ingest",
            "--master",
            standalone_cluster["url"],
            "--conf",
            "spark.executor.memory=1g",
            "--",
            "--manifest",
            str(manifest),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["read"], summary["ingested"], summary["quarantined"]) == (51, 50, 1)

    rows = read_table(BRONZE_DOCUMENTS, lakehouse).to_pylist()
    assert sorted(r["text"] for r in rows)[:2] == ["cluster doc 0", "cluster doc 1"] and len(rows) == 50

    master = _json(standalone_cluster["master_ui"] + "/json/")
    apps = [a for a in master["completedapps"] if a["name"] == "millpond-ingest"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED"
    worker = _json(standalone_cluster["worker_ui"] + "/json/")
    assert apps[0]["id"] in {e["appid"] for e in worker["finishedexecutors"]}

    # The curate job file runs on the cluster too, and its funnel reconciles.
    curated = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--lakehouse", str(lakehouse), "--config", str(config), "submit", "curate",
         "--master", standalone_cluster["url"], "--conf", "spark.executor.memory=1g", "--", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )  # fmt: skip
    assert curated.returncode == 0, curated.stderr[-5000:]
    funnel = json.loads(curated.stdout.strip().splitlines()[-1])
    assert funnel["in"] == 50 and funnel["stages"][0]["stage"] == "normalize"
    for stage in funnel["stages"]:
        assert stage["in"] == stage["kept"] + stage["modified"] + sum(stage["dropped"].values())
    assert len(read_table(SILVER_DOCUMENTS, lakehouse)) == funnel["out"]
    apps = _json(standalone_cluster["master_ui"] + "/json/")["completedapps"]
    assert [a["state"] for a in apps if a["name"] == "millpond-curate"] == ["FINISHED"]
