"""Stream the closed landing files of `millpond serve` into `bronze.interactions`, exactly once.

Runs in-process (`millpond stream interactions`) or as a spark-submit application
(`spark-submit jobs/stream_interactions.py --once`). Spark Structured Streaming's file source
reads `<lakehouse>/_landing/interactions/*.jsonl` (never an open `.part`); each micro-batch is
`ingestion.interactions.land_batch`. The checkpoint lives under the lakehouse; a stream killed at
any moment and started again neither loses nor duplicates an event.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from pyspark.sql import DataFrame, SparkSession

from curation.pii import PiiParams, pii_key
from ingestion.interactions import BatchReport, land_batch
from jobs.config import Config, ConfigError, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from lineage.catalog import BRONZE_INTERACTIONS
from lineage.locations import landing_folder, stream_checkpoint
from serving.settings import StreamSettings

APP_ID_FILE = "millpond_app_id"
# The binaryFile source's own columns (a streaming source must be told them).
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


@dataclass
class StreamReport:
    batches: list[BatchReport] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        total = {k: sum(getattr(b, k) for b in self.batches)
                 for k in ("files", "read", "ingested", "duplicates", "quarantined", "tombstoned")}  # fmt: skip
        versions = [b.version for b in self.batches if b.version is not None]
        return {"batches": len(self.batches), **total, "version": max(versions) if versions else None}


def app_id(checkpoint: Path) -> str:
    """The stream's idempotent-writer id: one per checkpoint (a new checkpoint restarts batch ids)."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    path = checkpoint / APP_ID_FILE
    if not path.is_file():
        path.write_text(f"millpond-interactions-{uuid.uuid4().hex}\n")
    return path.read_text().strip()


def _trigger_seconds(trigger: str) -> str:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds|m|min|minutes)?\s*", trigger)
    if not match:
        raise ConfigError(f"--trigger {trigger!r}: expected a duration such as 30s or 2m")
    value = float(match[1]) * (60 if (match[2] or "s").startswith("m") else 1)
    return f"{value:g} seconds"


def run_stream(
    spark: SparkSession, config: Config, once: bool = True, trigger: str | None = None, timeout: float | None = None
) -> StreamReport:
    """Read every closed landing file not read before (`once`), or keep reading on a trigger."""
    settings = params_from(StreamSettings, config.section("stream"))
    folder = landing_folder(config.lakehouse)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = stream_checkpoint(config.lakehouse)
    writer_id = app_id(checkpoint)
    # Events of erased subjects are recognized by their keyed hash, under the pii stage's key.
    pii = params_from(PiiParams, config.section("curate").get("pii") or {})
    report = StreamReport()

    def write(batch: DataFrame, batch_id: int) -> None:
        done = land_batch(spark, config.lakehouse, batch, batch_id, writer_id, settings.max_event_bytes,
                          lambda: pii_key(pii), config.digest())  # fmt: skip
        report.batches.append(done)
        progress(f"batch {batch_id}: {done.files} file(s), {done.read} lines: {done.ingested} ingested, "
                 f"{done.duplicates} already there, {done.quarantined} quarantined, {done.tombstoned} tombstoned")  # fmt: skip

    source = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", "*.jsonl")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .load(str(folder))
    )
    writer = source.writeStream.foreachBatch(write).option("checkpointLocation", str(checkpoint / "query"))
    if once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=_trigger_seconds(trigger or settings.trigger))
    progress(f"streaming {folder} into {BRONZE_INTERACTIONS.name} ({'once' if once else 'continuously'})")
    query = writer.queryName("millpond-interactions").start()
    try:
        query.awaitTermination(timeout)
    finally:
        if query.isActive:
            query.stop()
    return report


@click.group("stream")
def stream_group() -> None:
    """Structured Streaming jobs: landing files into bronze tables."""


@stream_group.command("interactions")
@click.option("--once", is_flag=True, help="Read what has landed, then stop (trigger availableNow: for schedulers).")
@click.option("--trigger", default=None, help="Keep running, a micro-batch every DURATION (default: [stream] trigger).")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON (with --once).")
@spark_options
@lakehouse_options
def interactions_command(
    once: bool, trigger: str | None, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Stream the server's closed landing files into bronze.interactions, exactly once."""
    config = effective_config(lakehouse, config_file)
    if once and trigger:
        raise ConfigError("--once and --trigger exclude each other")
    if trigger:
        _trigger_seconds(trigger)
    spark = open_spark(config, master, app_name="millpond-stream-interactions")
    report = run_stream(spark, config, once=once, trigger=trigger)
    totals = report.as_json()
    if as_json:
        click.echo(json.dumps(totals, sort_keys=True))
    else:
        click.echo(f"{totals['batches']} batch(es), {totals['read']} lines read: {totals['ingested']} ingested, "
                   f"{totals['duplicates']} already there, {totals['quarantined']} quarantined, "
                   f"{totals['tombstoned']} tombstoned ({BRONZE_INTERACTIONS.name} v{totals['version']})")  # fmt: skip


if __name__ == "__main__":  # spark-submit jobs/stream_interactions.py --once [--lakehouse ...]
    from jobs.cli import run_job_file

    run_job_file(["stream", "interactions"], sys.argv[1:])
