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

from lineage.catalog import LINEAGE_RUNS
from lineage.tables import ensure_table, merge_rows

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
    """Write the run's row: appended at the start (a fresh run id cannot collide, and an append
    commits in a fraction of a MERGE's time), updated by a MERGE on run_id at the end."""
    rows = spark.createDataFrame([run.row()], schema=LINEAGE_RUNS.schema)
    table = ensure_table(spark, LINEAGE_RUNS, lakehouse)
    if first:
        rows.write.format("delta").mode("append").save(LINEAGE_RUNS.path(lakehouse))
    else:
        merge_rows(spark, table, LINEAGE_RUNS.key, rows, changed_when="true")


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
