"""One real local Spark session with Delta for the whole test run, and small real inputs."""

from __future__ import annotations

import copy
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
# The pii stage hashes what it finds under this key (a test key: never use a fixed key for real data).
os.environ.setdefault("MILLPOND_PII_KEY", "millpond-test-key-0123456789abcdef")

from jobs.config import DEFAULTS, Config, cache_dir  # noqa: E402
from jobs.spark import SparkSettings, get_spark  # noqa: E402

# Small enough that the oversized line in the nasty corpus trips it.
TEST_MAX_RECORD_BYTES = 4096

# Spark's interpreted expression evaluation instead of generated Java code. Tests run thousands of
# small queries on a few rows: compiling each query's code with Janino, then JIT-compiling the new
# classes, cost more than evaluating the rows (`tests/test_curate.py` and `tests/test_snapshots.py`:
# 282 s against 390 s, the JIT's compiler threads 147 CPU-s against 188). Spark's own test suites
# run both modes; `tests/test_cluster.py` keeps generated code, the default, end to end.
INTERPRETED_SPARK = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
# The same for a `millpond` subprocess, as a millpond.toml section.
INTERPRETED_SPARK_TOML = "[spark.conf]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in INTERPRETED_SPARK.items())

TEST_SPARK = SparkSettings(
    master="local[2]",
    app_name="millpond-tests",
    shuffle_partitions=2,
    driver_memory="2g",
    ui=False,
    # The one session lives for the whole run: the full JIT (C2) pays for itself after a minute
    # (curate of 60 documents: 32 s against 44 s with C1 only).
    fast_jvm_start=False,
    conf=INTERPRETED_SPARK,
)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    settings = SparkSettings(**{**TEST_SPARK.__dict__, "log_dir": str(tmp_path_factory.mktemp("spark-logs"))})
    session = get_spark(settings, cache_dir())
    yield session
    session.stop()


def make_config(lakehouse: Path, **ingest: Any) -> Config:
    values = copy.deepcopy(DEFAULTS)
    values["lakehouse"] = str(lakehouse.resolve())
    values["ingest"].update({"max_record_bytes": TEST_MAX_RECORD_BYTES, **ingest})
    values["mlflow"]["log_data_jobs"] = False  # an MLflow store per test lakehouse costs seconds; test_sft logs them
    return Config(values=values, file=None)


@pytest.fixture
def lakehouse(tmp_path: Path) -> Path:
    return tmp_path / "lakehouse"


def write_jsonl(path: Path, records: list[Any], opener: Callable[..., Any] = open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def write_manifest(path: Path, sources: list[dict[str, Any]]) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps({"source": sources}), encoding="utf-8")
    return path


def gzip_open(path: Path, mode: str, encoding: str) -> Any:
    return gzip.open(path, mode, encoding=encoding)
