"""Landing files into `bronze.interactions`: each line an event row or a quarantine row.

`parse_landing_file` is the plain-Python reader (exact line numbers and byte offsets, the
schema check of `serving.events.problem`, erased subjects left out); `land_batch` is the thin
Spark glue one micro-batch of `millpond stream interactions` runs: an insert-only MERGE on
event_id and a quarantine MERGE, both committed with Delta's idempotent transaction ids, and the
batch recorded in `lineage.runs` with counts that reconcile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ingestion.bronze import quarantine_id_for
from lineage.catalog import BRONZE_INTERACTIONS, GOVERNANCE_TOMBSTONES, QUARANTINE_RECORDS
from lineage.errors import MillpondError
from lineage.runs import Run, record_run
from lineage.tables import ensure_table, latest_version, load_delta, merge_rows, session_conf
from serving.events import created_at, problem

SOURCE = "interactions"  # the `source` of quarantined landing lines
EVENT, QUARANTINED, TOMBSTONED = "event", "quarantine", "tombstoned"
TXN_APP_ID, TXN_VERSION = "spark.databricks.delta.write.txnAppId", "spark.databricks.delta.write.txnVersion"

# What the parser hands Spark: nested values as JSON text, typed by `from_json` afterwards.
PARSED_SCHEMA = T.StructType(
    [
        T.StructField("kind", T.StringType(), False),
        T.StructField("reason", T.StringType(), True),
        T.StructField("detail", T.StringType(), True),
        T.StructField("source_uri", T.StringType(), False),
        T.StructField("locator", T.StringType(), False),
        T.StructField("byte_offset", T.LongType(), False),
        T.StructField("byte_length", T.LongType(), False),
        T.StructField("quarantine_id", T.StringType(), True),
        T.StructField("event_id", T.StringType(), True),
        T.StructField("event_type", T.StringType(), True),
        T.StructField("interaction_id", T.StringType(), True),
        T.StructField("conversation_id", T.StringType(), True),
        T.StructField("user", T.StringType(), True),
        T.StructField("consent_json", T.StringType(), True),
        T.StructField("model_name", T.StringType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("model_run_id", T.StringType(), True),
        T.StructField("messages_json", T.StringType(), True),
        T.StructField("prompt", T.StringType(), True),
        T.StructField("responses_json", T.StringType(), True),
        T.StructField("finish_reasons_json", T.StringType(), True),
        T.StructField("params", T.StringType(), True),
        T.StructField("rating", T.StringType(), True),
        T.StructField("choice", T.LongType(), True),
        T.StructField("edit", T.StringType(), True),
        T.StructField("comment", T.StringType(), True),
        T.StructField("latency_ms", T.DoubleType(), True),
        T.StructField("usage_json", T.StringType(), True),
        T.StructField("metadata_json", T.StringType(), True),
        T.StructField("created_at", T.TimestampType(), True),
        T.StructField("replica", T.StringType(), True),
        T.StructField("schema_version", T.LongType(), True),
    ]
)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def event_row(record: dict[str, Any]) -> dict[str, Any]:
    """The columns of a valid event (`problem(record) is None`)."""
    model = record.get("model") or {}
    feedback = record.get("feedback") or {}
    choice = feedback.get("choice")
    return {
        "event_id": record["event_id"], "event_type": record["event_type"],
        "interaction_id": record["interaction_id"], "conversation_id": _text(record.get("conversation_id")),
        "user": _text(record.get("user")), "consent_json": _json([str(c) for c in record.get("consent") or []]),
        "model_name": _text(model.get("name")), "model_version": _text(model.get("version")),
        "model_run_id": _text(model.get("run_id")), "messages_json": _json(record.get("messages")),
        "prompt": _text(record.get("prompt")), "responses_json": _json(record.get("responses")),
        "finish_reasons_json": _json(record.get("finish_reasons")), "params": _json(record.get("params")),
        "rating": _text(feedback.get("rating")), "choice": choice if isinstance(choice, int) else None,
        "edit": _text(feedback.get("edit")), "comment": _text(feedback.get("comment")),
        "latency_ms": record.get("latency_ms") if isinstance(record.get("latency_ms"), int | float) else None,
        "usage_json": _json(record.get("usage")), "metadata_json": _json(record.get("metadata")),
        "created_at": created_at(record).astimezone(UTC).replace(tzinfo=None),
        "replica": _text(record.get("replica")), "schema_version": record["schema_version"],
    }  # fmt: skip


def parse_landing_file(
    uri: str, data: bytes, max_event_bytes: int, erased: Callable[[str, datetime], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """Every line of a landing file as a row: an event, a quarantined line with its reason, or an
    event an erasure covers (`erased(user, created_at)`), with file:line and byte offsets."""
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        length = len(raw)
        where = {"source_uri": uri, "locator": f"{uri}:{number}", "byte_offset": offset, "byte_length": length}
        offset += length + 1
        last = number == len(lines)
        if not raw.strip():
            continue  # the empty string after the final newline, or a blank line
        reason, detail, record = None, None, None
        if length > max_event_bytes:
            reason, detail = "too_large", f"{length} bytes, over {max_event_bytes}"
        else:
            try:
                record = json.loads(raw)
                reason = problem(record)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                # A last line without its newline is an event whose write was cut: never acknowledged.
                reason, detail = ("torn_line" if last else "bad_json"), str(err)[:200]
        if reason is not None:
            qid = quarantine_id_for(SOURCE, where["locator"], reason)
            yield {"kind": QUARANTINED, "reason": reason, "detail": detail, "quarantine_id": qid, **where}
            continue
        assert isinstance(record, dict)
        row = {"kind": EVENT, "reason": None, "detail": None, **where, **event_row(record)}
        if erased is not None and row["user"] is not None and erased(row["user"], row["created_at"]):
            row["kind"], row["reason"] = TOMBSTONED, "subject_erased"
        yield row


def _parser(
    max_event_bytes: int, key: bytes | None, labels: dict[str, datetime]
) -> Callable[..., Iterator[pd.DataFrame]]:
    """The mapInPandas function over binaryFile rows (path, content)."""
    columns = PARSED_SCHEMA.fieldNames()

    def parse(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        erased = None
        if labels and key is not None:
            from lineage.subjects import subject_forms

            def erased(user: str, created: datetime) -> bool:
                # What the person had sent by the time of the erasure, not what they send afterwards.
                erased_at = labels.get(subject_forms(user, key).label)
                return erased_at is not None and created <= erased_at

        for frame in frames:
            rows = [r for path, content in zip(frame["path"], frame["content"], strict=True)
                    for r in parse_landing_file(path, bytes(content), max_event_bytes, erased)]  # fmt: skip
            yield pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)

    return parse


class StreamKeyMissingError(MillpondError, RuntimeError):
    """Subjects were erased, and the key that recognizes them is not set."""


@dataclass
class BatchReport:
    """One micro-batch: read = ingested + duplicates + quarantined + tombstoned."""

    batch_id: int
    run_id: str
    files: int = 0
    read: int = 0
    ingested: int = 0
    duplicates: int = 0  # already in bronze.interactions (a replayed file)
    quarantined: int = 0
    tombstoned: int = 0
    version: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def erased_subjects(spark: SparkSession, lakehouse: str | Path) -> dict[str, datetime]:
    """Keyed subject -> when it was erased (UTC, naive, as event times are compared)."""
    stones = load_delta(spark, GOVERNANCE_TOMBSTONES, lakehouse)
    if stones is None:
        return {}
    rows = stones.where(F.col("kind") == "subject").groupBy("value").agg(F.max(F.unix_micros("created_at"))).collect()
    return {r[0]: datetime.fromtimestamp(r[1] / 1e6, UTC).replace(tzinfo=None) for r in rows}


def land_batch(
    spark: SparkSession,
    lakehouse: str | Path,
    files: DataFrame,
    batch_id: int,
    app_id: str,
    max_event_bytes: int,
    key_source: Callable[[], bytes],
    config_digest: str,
) -> BatchReport:
    """Write one micro-batch of landing files (binaryFile rows) into the bronze and quarantine tables."""
    run = Run(job="stream_interactions", config_digest=config_digest, params={"app_id": app_id, "batch": batch_id},
              run_id=f"stream-interactions-{app_id.rsplit('-', 1)[-1][:12]}-{batch_id:08d}")  # fmt: skip
    run.spark_master, run.spark_app_id = spark.sparkContext.master, spark.sparkContext.applicationId
    # Recorded once, when the batch ends (a MERGE on its id): a batch killed half way is replayed
    # by the restarted stream under the same id, and its row then says how the replay went.
    report = BatchReport(batch_id, run.run_id)
    try:
        labels = erased_subjects(spark, lakehouse)
        key = None
        if labels:
            try:
                key = key_source()
            except MillpondError as err:
                raise StreamKeyMissingError(
                    f"subjects were erased; recognizing their events needs the key: {err}"
                ) from None
        parsed = files.select("path", "content").mapInPandas(_parser(max_event_bytes, key, labels), PARSED_SCHEMA)
        parsed = parsed.localCheckpoint(eager=True)
        now = datetime.now(UTC)
        tally: dict[tuple[str, str | None], int] = {}
        files: set[str] = set()
        for r in parsed.groupBy("kind", "reason").agg(F.count("*"), F.collect_set("source_uri")).collect():
            tally[(r[0], r[1])] = r[2]
            files.update(r[3])
        report.files = len(files)
        report.read = sum(tally.values())
        report.quarantined = sum(v for (k, _), v in tally.items() if k == QUARANTINED)
        report.tombstoned = sum(v for (k, _), v in tally.items() if k == TOMBSTONED)
        events = parsed.where(F.col("kind") == EVENT)
        table = ensure_table(spark, BRONZE_INTERACTIONS, lakehouse)
        quarantine = ensure_table(spark, QUARANTINE_RECORDS, lakehouse)
        # Delta skips a write whose (table, app, batch) it committed before: a replayed batch.
        with session_conf(spark, {TXN_APP_ID: app_id, TXN_VERSION: str(batch_id)}):
            merged = merge_rows(spark, table, BRONZE_INTERACTIONS.key, _bronze_rows(events, run.run_id, now))
            bad = parsed.where(F.col("kind") == QUARANTINED)
            if report.quarantined:
                merge_rows(spark, quarantine, QUARANTINE_RECORDS.key, _quarantine_rows(bad, run.run_id, now))
        report.ingested = merged.inserted
        report.duplicates = report.read - report.quarantined - report.tombstoned - report.ingested
        report.version = latest_version(BRONZE_INTERACTIONS.path(lakehouse))
        if report.duplicates < 0:
            raise RuntimeError(f"batch {batch_id}: the MERGE inserted more events than it was given")
        run.counts = {
            k: v for k, v in report.as_json().items() if isinstance(v, int) and k not in ("batch_id", "version")
        }
        run.counts |= {f"{kind}:{reason}": v for (kind, reason), v in tally.items() if reason}
        run.output_versions = {BRONZE_INTERACTIONS.name: report.version}
    except BaseException as err:
        run.status, run.error, run.ended_at = "failed", f"{type(err).__name__}: {err}"[:4000], datetime.now(UTC)
        record_run(spark, lakehouse, run)
        raise
    run.status, run.ended_at = "succeeded", datetime.now(UTC)
    record_run(spark, lakehouse, run)
    return report


def _bronze_rows(events: DataFrame, run_id: str, now: datetime) -> DataFrame:
    schema = {f.name: f.dataType for f in BRONZE_INTERACTIONS.schema.fields}
    decoded = {
        "consent": F.from_json("consent_json", schema["consent"]),
        "messages": F.from_json("messages_json", schema["messages"]),
        "responses": F.from_json("responses_json", schema["responses"]),
        "finish_reasons": F.from_json("finish_reasons_json", schema["finish_reasons"]),
        "usage": F.from_json("usage_json", schema["usage"]),
        "metadata": F.from_json("metadata_json", schema["metadata"]),
        "ingested_at": F.lit(now).cast("timestamp"),
        "ingest_run_id": F.lit(run_id),
    }
    columns = [
        (decoded[name] if name in decoded else F.col(name)).cast(schema[name]).alias(name)
        for name in BRONZE_INTERACTIONS.schema.fieldNames()
    ]
    # One row per event id, even when a file was copied into the landing folder twice.
    return events.dropDuplicates(["event_id"]).select(*columns)


def _quarantine_rows(bad: DataFrame, run_id: str, now: datetime) -> DataFrame:
    return bad.select(
        "quarantine_id",
        "reason",
        "detail",
        F.lit(SOURCE).alias("source"),
        "source_uri",
        "locator",
        "byte_offset",
        "byte_length",
        F.lit(run_id).alias("ingest_run_id"),
        F.lit(now).cast("timestamp").alias("quarantined_at"),
    )
