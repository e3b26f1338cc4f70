"""From file tasks to bronze rows and quarantine entries, on Spark.

The readers run on the executors inside `mapInArrow`: each Spark task reads a balanced bucket
of whole files, so every record keeps its exact file and line. One pass over the input yields
a single frame of both kinds (`kind` = document or quarantine), which the job persists once
and splits.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from ingestion.manifest import FileTask
from ingestion.readers import Bad, Item, Reason, ReaderParams, Record, read_file

DOCUMENT = "document"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class IngestParams:
    """The `[ingest]` section of the config."""

    max_record_bytes: int = 8 * 1024 * 1024
    batch_rows: int = 4096
    task_bytes: int = 128 * 1024 * 1024

    @property
    def reader(self) -> ReaderParams:
        return ReaderParams(max_record_bytes=self.max_record_bytes)


ARROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("doc_id", pa.string()),
        ("record_id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("source_uri", pa.string()),
        ("locator", pa.string()),
        ("content_sha256", pa.string()),
        ("license", pa.string()),
        ("license_source", pa.string()),
        ("subject_ids", pa.list_(pa.string())),
        ("consent", pa.list_(pa.string())),
        ("domain", pa.string()),
        ("metadata", pa.map_(pa.string(), pa.string())),
        ("quarantine_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("byte_offset", pa.int64()),
        ("byte_length", pa.int64()),
        ("file_index", pa.int64()),
        ("seq", pa.int64()),
    ]
)

SPARK_SCHEMA: T.StructType = from_arrow_schema(ARROW_SCHEMA)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def doc_id_for(source: str, record_id: str) -> str:
    """The stable id of a record: the same source and record give the same id on every run."""
    return _digest("doc", source, record_id)[:32]


def quarantine_id_for(source: str, locator: str, reason: str) -> str:
    return _digest("quarantine", source, locator, reason)[:32]


def _subjects(record: Record, task: FileTask) -> list[str]:
    found: set[str] = set(task.subject_ids)
    for field in task.source.subject_fields:
        value = record.fields.get(field)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, int)) and str(item).strip():
                text = str(item).strip()
                found.add(text.lower() if "@" in text else text)
    return sorted(found)


def _license(record: Record, task: FileTask) -> tuple[str | None, str]:
    source = task.source
    if source.license_field:
        value = record.fields.get(source.license_field)
        if isinstance(value, str) and value.strip():
            return value.strip(), "field"
    if source.license:
        return source.license, "declared"
    if task.inherited_license:
        return task.inherited_license, "inherited"
    return None, "unknown"


def _metadata(record: Record, task: FileTask) -> list[tuple[str, str]]:
    source = task.source
    reserved = {source.text_field, source.id_field, source.license_field, *source.subject_fields}
    meta = dict(task.metadata)
    for key, value in record.fields.items():
        if key in reserved or value is None:
            continue
        meta[key] = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return sorted(meta.items())


def item_row(item: Item, task: FileTask, file_index: int, seq: int) -> dict[str, Any]:
    """One output row (document or quarantine) for a reader's item."""
    source = task.source
    base = {
        "source": source.name,
        "source_uri": Path(task.path).as_uri(),
        "locator": item.locator,
        "byte_offset": item.byte_offset,
        "byte_length": item.byte_length,
        "file_index": file_index,
        "seq": seq,
    }
    if isinstance(item, Bad):
        return {
            **base,
            "kind": QUARANTINE,
            "quarantine_id": quarantine_id_for(source.name, item.locator, item.reason),
            "reason": item.reason,
            "detail": item.detail,
        }
    record_id = item.record_key if item.record_key is not None else item.locator
    license_expr, license_source = _license(item, task)
    return {
        **base,
        "kind": DOCUMENT,
        "doc_id": doc_id_for(source.name, record_id),
        "record_id": record_id,
        "text": item.text,
        "content_sha256": hashlib.sha256(item.text.encode("utf-8")).hexdigest(),
        "license": license_expr,
        "license_source": license_source,
        "subject_ids": _subjects(item, task),
        "consent": list(source.consent),
        "domain": task.domain or source.domain,
        "metadata": _metadata(item, task),
    }


# The columns whose change makes a re-ingested record an update rather than unchanged.
CHANGE_COLUMNS = (
    "record_id", "source_uri", "locator", "content_sha256", "license", "license_source",
    "subject_ids", "consent", "domain", "metadata",
)


def change_digest() -> Column:
    """A digest of what a user would call the record's content and provenance."""
    return F.sha2(F.to_json(F.struct(*CHANGE_COLUMNS)), 256)


def read_bucket(files: list[tuple[int, FileTask]], params: IngestParams) -> Iterator[pa.RecordBatch]:
    """Read a bucket of files into Arrow batches of at most `params.batch_rows` rows."""
    rows: list[dict[str, Any]] = []
    for file_index, task in files:
        for seq, item in enumerate(read_file(task, params.reader)):
            rows.append(item_row(item, task, file_index, seq))
            if len(rows) >= params.batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=ARROW_SCHEMA)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=ARROW_SCHEMA)


def plan_buckets(tasks: list[FileTask], parallelism: int, task_bytes: int) -> list[list[tuple[int, FileTask]]]:
    """Spread files over Spark tasks, biggest first onto the least loaded bucket (LPT)."""
    total = sum(t.size for t in tasks)
    count = max(1, min(len(tasks), max(parallelism, -(-total // max(task_bytes, 1)))))
    heap = [(0, i) for i in range(count)]
    buckets: list[list[tuple[int, FileTask]]] = [[] for _ in range(count)]
    order = sorted(range(len(tasks)), key=lambda i: (-tasks[i].size, i))
    for index in order:
        load, bucket = heapq.heappop(heap)
        buckets[bucket].append((index, tasks[index]))
        heapq.heappush(heap, (load + max(tasks[index].size, 1), bucket))
    return [sorted(b, key=lambda pair: pair[0]) for b in buckets]


def read_sources(spark: SparkSession, tasks: list[FileTask], params: IngestParams) -> DataFrame:
    """Every record and quarantine entry of `tasks` as one lazy DataFrame (see `SPARK_SCHEMA`)."""
    buckets = plan_buckets(tasks, spark.sparkContext.defaultParallelism * 2, params.task_bytes)

    def read_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for bucket in batch.column("id").to_pylist():
                yield from read_bucket(buckets[bucket], params)

    return spark.range(len(buckets), numPartitions=len(buckets)).mapInArrow(read_partition, SPARK_SCHEMA)


def mark_duplicate_ids(rows: DataFrame) -> DataFrame:
    """Within one batch, a second record with an id already seen goes to quarantine.

    Only sources with an `id_field` can repeat a doc_id (locator ids are unique), so the job
    calls this only for them. The first record in file order wins, deterministically.
    """
    by_id = Window.partitionBy("doc_id").orderBy("file_index", "seq")
    marked = rows.withColumn(
        "_duplicate", (F.col("kind") == DOCUMENT) & (F.row_number().over(by_id) > 1)
    ).withColumn("_first", F.first("locator").over(by_id))
    reason = F.lit(Reason.DUPLICATE_RECORD_ID)
    replaced = {
        "kind": F.lit(QUARANTINE),
        "reason": reason,
        "detail": F.concat(F.lit("same id as "), F.col("_first")),
        # the same digest as quarantine_id_for(source, locator, reason)
        "quarantine_id": F.substring(
            F.sha2(F.concat_ws("\x1f", F.lit("quarantine"), "source", "locator", reason), 256), 1, 32
        ),
    }
    return marked.select(
        *[
            F.when(F.col("_duplicate"), replaced[c]).otherwise(F.col(c)).alias(c) if c in replaced else F.col(c)
            for c in SPARK_SCHEMA.fieldNames()
        ]
    )
