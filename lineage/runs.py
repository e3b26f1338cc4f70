"""`lineage.runs`: one row per job run, written when it starts and again when it ends.

A run killed half way stays `running` in the table: its start is on record even though it
never reached its end.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from lineage.catalog import BRONZE_DOCUMENTS, LINEAGE_RUNS
from lineage.tables import read_table, write_few_rows

ERASE_JOB = "erase"  # the job name `millpond lineage erase` records its runs under


def new_run_id(job: str) -> str:
    """A unique, time-ordered run id, e.g. `ingest-20261128T101500-3f9a1c2b`."""
    return f"{job}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class Run:
    """A job run as recorded in `lineage.runs`."""

    job: str
    config_digest: str
    params: dict[str, Any]
    run_id: str = ""
    status: str = "running"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    spark_master: str | None = None
    spark_app_id: str | None = None
    input_versions: dict[str, int] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    reports: dict[str, str] = field(default_factory=dict)  # name -> JSON

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = new_run_id(self.job)

    def row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status,
            "config_digest": self.config_digest,
            "params": json.dumps(self.params, sort_keys=True, default=str),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "spark_master": self.spark_master,
            "spark_app_id": self.spark_app_id,
            "input_versions": self.input_versions,
            "output_versions": self.output_versions,
            "counts": self.counts,
            "error": self.error,
            "reports": self.reports,
        }


def record_run(spark: SparkSession, lakehouse: str | Path, run: Run, *, first: bool = False) -> None:
    """Write the run's row: appended at the start (a fresh run id cannot collide), updated by a
    MERGE on run_id at the end. One row each time, so delta-rs writes it (`write_few_rows`): the
    record costs a job tens of milliseconds, not a Spark MERGE's seconds."""
    write_few_rows(spark, LINEAGE_RUNS, lakehouse, [run.row()], append=first)


def start_run(spark: SparkSession, lakehouse: str | Path, run: Run) -> Run:
    run.spark_master = spark.sparkContext.master
    run.spark_app_id = spark.sparkContext.applicationId
    record_run(spark, lakehouse, run, first=True)
    return run


def finish_run(spark: SparkSession, lakehouse: str | Path, run: Run, *, error: BaseException | None = None) -> Run:
    run.status = "failed" if error is not None else "succeeded"
    run.error = f"{type(error).__name__}: {error}"[:4000] if error is not None else None
    run.ended_at = datetime.now(UTC)
    record_run(spark, lakehouse, run)
    return run


@contextlib.contextmanager
def recorded_run(
    spark: SparkSession,
    lakehouse: str | Path,
    run: Run,
    on_failure: Callable[[BaseException], None] | None = None,
) -> Iterator[Run]:
    """Record `run` in `lineage.runs` around a job's work: `running` at the start, `succeeded` when
    the block ends, `failed` with the error when it raises. The error propagates unchanged:
    `on_failure` (to keep a report with the run) and the record itself never hide it."""
    start_run(spark, lakehouse, run)
    try:
        yield run
    except BaseException as err:
        with contextlib.suppress(Exception):
            if on_failure is not None:
                on_failure(err)
            finish_run(spark, lakehouse, run, error=err)
        raise
    finish_run(spark, lakehouse, run)


def curated_version(lakehouse: str | Path) -> int | None:
    """The bronze version the last successful curate run read (the incremental watermark)."""
    columns = ["job", "status", "input_versions", "output_versions", "started_at"]
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=columns)
    if runs is None:
        return None
    watermark = None
    for r in sorted(runs.to_pylist(), key=lambda r: r["started_at"]):
        if r["status"] != "succeeded":
            continue
        read = dict(r["input_versions"] or []).get(BRONZE_DOCUMENTS.name)
        if r["job"] == "curate" and read is not None:
            watermark = read
        elif r["job"] == ERASE_JOB and read is not None and read == watermark:
            # An erasure already removed its rows from silver, and vacuumed the change data of its
            # own commits: a curate run that was up to date before it is up to date after it.
            watermark = dict(r["output_versions"] or []).get(BRONZE_DOCUMENTS.name, watermark)
    return watermark


def last_read_version(lakehouse: str | Path, job: str, table_name: str) -> int | None:
    """The version of `table_name` the latest successful run of `job` read (None: never ran)."""
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=["job", "status", "input_versions", "started_at"])
    done = [] if runs is None else [r for r in runs.to_pylist() if r["job"] == job and r["status"] == "succeeded"]
    if not done:
        return None
    latest = max(done, key=lambda r: r["started_at"])
    return dict(latest["input_versions"] or []).get(table_name)


def abandoned_runs(lakehouse: str | Path, job: str, current: str) -> list[str]:
    """Runs of `job` other than `current` that never succeeded (killed or failed): their partial
    writes are redone by the next run."""
    runs = read_table(LINEAGE_RUNS, lakehouse, columns=["run_id", "job", "status"])
    if runs is None:
        return []
    return [
        r["run_id"]
        for r in runs.to_pylist()
        if r["job"] == job and r["status"] != "succeeded" and r["run_id"] != current
    ]
