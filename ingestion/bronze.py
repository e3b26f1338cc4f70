"""From file tasks to bronze rows and quarantine entries, on Spark.

The readers run on the executors inside `mapInArrow`: each Spark task reads a balanced bucket
of whole files, so every record keeps its exact file and line. One pass over the input yields
either a single frame of both kinds (`kind` = document or quarantine, `read_sources`), which
the job persists once and splits, or, for a first load, the documents written as new data files
of the table by the tasks that read them, with the rest set aside (`write_documents`).
"""

from __future__ import annotations

import hashlib
import heapq
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from ingestion.jsonl_blocks import RecordBlock, block_readable, read_jsonl_blocks
from ingestion.manifest import JSONL_FORMATS, PREFERENCE_FORMAT, FileTask
from ingestion.readers import (
    MAX_RECORD_BYTES,
    Bad,
    Item,
    ReaderParams,
    Reason,
    Record,
    count_newlines,
    first_line_numbers,
    lookup_field,
    read_file,
)
from lineage.data_files import WRITTEN_FILE_SCHEMA, DataFileSettings, DataFileWriter, WrittenFile, files_batch

DOCUMENT = "document"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class IngestParams:
    """The `[ingest]` section of the config."""

    # A record (JSONL line, file, Parquet text value) larger than this is quarantined.
    max_record_bytes: int = MAX_RECORD_BYTES
    # Rows per Arrow batch handed from the Python readers to Spark.
    batch_rows: int = 4096
    # Aim for about this many bytes of input per Spark task; larger plain JSONL files are split.
    task_bytes: int = 128 * 1024 * 1024
    # Parse `jsonl` files a block at a time with Arrow's JSON parser where it gives exactly the
    # line reader's records (`ingestion.jsonl_blocks`); false reads every line in Python.
    arrow_jsonl: bool = True

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


class _FileRows:
    """What every row of one file shares, computed once per file rather than once per record."""

    def __init__(self, task: FileTask, file_index: int) -> None:
        source = task.source
        self.task = task
        self.file_index = file_index
        self.source = source.name
        self.source_uri = Path(task.path).as_uri()
        self.consent = list(source.consent)
        self.domain = task.domain or source.domain
        self.license_field = source.license_field
        self.subject_fields = source.subject_fields
        self.fixed_subjects = set(task.subject_ids)
        self.sorted_fixed_subjects = sorted(self.fixed_subjects)
        self.reserved = {source.text_field, source.id_field, source.license_field, *source.subject_fields}
        # preference-jsonl: the rejected dialogue and the prompt under fixed keys, whatever the file calls them
        self.pair_fields = (
            {"rejected": source.rejected_field, "prompt": source.prompt_field}
            if source.format == PREFERENCE_FORMAT
            else {}
        )
        self.reserved |= {f for f in self.pair_fields.values() if f}
        self.file_metadata = dict(task.metadata)
        if source.license:
            self.license: tuple[str | None, str] = (source.license, "declared")
        elif task.inherited_license:
            self.license = (task.inherited_license, "inherited")
        else:
            self.license = (None, "unknown")

    def license_of(self, record: Record) -> tuple[str | None, str]:
        return self._license_from(record.fields.get(self.license_field) if self.license_field else None)

    def _license_from(self, value: object) -> tuple[str | None, str]:
        """The record's own license field when it holds text, else the file's or source's."""
        if isinstance(value, str) and value.strip():
            return value.strip(), "field"
        return self.license

    def subjects_of(self, record: Record) -> list[str]:
        if not self.subject_fields:
            return self.sorted_fixed_subjects
        found = set(self.fixed_subjects)
        for field in self.subject_fields:
            value = record.fields.get(field)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, (str, int)) and not isinstance(item, bool) and str(item).strip():
                    text = str(item).strip()
                    found.add(text.lower() if "@" in text else text)
        return sorted(found)

    def license_columns(self, table: pa.Table) -> tuple[list[str | None], list[str]]:
        """`license_of` for a block's rows."""
        n = table.num_rows
        if not self.license_field or self.license_field not in table.column_names:
            return [self.license[0]] * n, [self.license[1]] * n
        pairs = [self._license_from(value) for value in table.column(self.license_field).to_pylist()]
        return [lic for lic, _ in pairs], [src for _, src in pairs]

    def subject_column(self, table: pa.Table) -> list[list[str]]:
        """`subjects_of` for a block's rows."""
        present = [f for f in self.subject_fields if f in table.column_names]
        if not present:
            return [self.sorted_fixed_subjects] * table.num_rows
        values = [table.column(f).to_pylist() for f in present]
        return [
            self.subjects_of(Record("", "", None, dict(zip(present, row, strict=True)), None, None))
            for row in zip(*values, strict=True)
        ]

    def metadata_column(self, table: pa.Table) -> pa.MapArray:
        """`metadata_of` for a block's rows, built column-wise: the keys in sorted order, a
        field's value where the row has one, else the file's."""
        n = table.num_rows
        kept = {
            f.name: table.column(f.name).cast(pa.string()).combine_chunks()
            for f in table.schema
            if f.name not in self.reserved and not pa.types.is_null(f.type)
        }
        keys = sorted(set(kept) | set(self.file_metadata))
        values, present = [], []
        for key in keys:
            column = kept.get(key)
            if column is None:
                column = pa.array([self.file_metadata[key]] * n, pa.string())
            elif key in self.file_metadata:
                column = pc.coalesce(column, pa.scalar(self.file_metadata[key]))
            values.append(column)
            present.append(column.is_valid().to_numpy(zero_copy_only=False))
        if not keys:
            return pa.MapArray.from_arrays(
                np.zeros(n + 1, dtype=np.int32), pa.array([], pa.string()), pa.array([], pa.string())
            )
        mask = np.stack(present, axis=1)  # rows x keys
        offsets = np.concatenate(([0], np.cumsum(mask.sum(axis=1)))).astype(np.int32)
        order = (np.arange(len(keys))[None, :] * n + np.arange(n)[:, None])[mask]  # row by row, keys sorted
        flat_keys = pa.array(keys, pa.string()).take(order // n)
        flat_values = pa.concat_arrays(values).take(order)
        return pa.MapArray.from_arrays(offsets, flat_keys, flat_values)

    def metadata_of(self, record: Record) -> list[tuple[str, str]]:
        if not record.fields:
            return sorted(self.file_metadata.items())
        meta = dict(self.file_metadata)
        for key, value in record.fields.items():
            if key in self.reserved or value is None:
                continue
            meta[key] = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        for key, field in self.pair_fields.items():
            found, value = lookup_field(record.fields, field) if field else (False, None)
            if found and value is not None:
                meta[key] = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        return sorted(meta.items())


class _Batch:
    """Readers' items gathered for one Arrow batch; columns are built a list at a time."""

    def __init__(self) -> None:
        self.documents: list[tuple[_FileRows, Record, int]] = []
        self.bad: list[tuple[_FileRows, Bad, int]] = []

    @property
    def rows(self) -> int:
        return len(self.documents) + len(self.bad)

    def add(self, item: Item, file: _FileRows, seq: int) -> None:
        if isinstance(item, Bad):
            self.bad.append((file, item, seq))
        else:
            self.documents.append((file, item, seq))

    @staticmethod
    def _common(items: list[tuple[_FileRows, Any, int]]) -> dict[str, list[Any]]:
        return {
            "source": [f.source for f, _, _ in items],
            "source_uri": [f.source_uri for f, _, _ in items],
            "locator": [i.locator for _, i, _ in items],
            "byte_offset": [i.byte_offset for _, i, _ in items],
            "byte_length": [i.byte_length for _, i, _ in items],
            "file_index": [f.file_index for f, _, _ in items],
            "seq": [seq for _, _, seq in items],
        }

    def _document_columns(self) -> dict[str, list[Any]]:
        docs = self.documents
        record_ids = [r.record_key if r.record_key is not None else r.locator for _, r, _ in docs]
        licenses = [f.license_of(r) for f, r, _ in docs]
        return {
            **self._common(docs),
            "kind": [DOCUMENT] * len(docs),
            "doc_id": [doc_id_for(f.source, rid) for (f, _, _), rid in zip(docs, record_ids, strict=True)],
            "record_id": record_ids,
            "text": [r.text for _, r, _ in docs],
            "content_sha256": [hashlib.sha256(r.text.encode("utf-8")).hexdigest() for _, r, _ in docs],
            "license": [lic for lic, _ in licenses],
            "license_source": [src for _, src in licenses],
            "subject_ids": [f.subjects_of(r) for f, r, _ in docs],
            "consent": [f.consent for f, _, _ in docs],
            "domain": [f.domain for f, _, _ in docs],
            "metadata": [f.metadata_of(r) for f, r, _ in docs],
        }

    def _quarantine_columns(self) -> dict[str, list[Any]]:
        bad = self.bad
        return {
            **self._common(bad),
            "kind": [QUARANTINE] * len(bad),
            "quarantine_id": [quarantine_id_for(f.source, b.locator, b.reason) for f, b, _ in bad],
            "reason": [b.reason for _, b, _ in bad],
            "detail": [b.detail for _, b, _ in bad],
        }

    def to_arrow(self) -> Iterator[pa.RecordBatch]:
        for items, build in ((self.documents, self._document_columns), (self.bad, self._quarantine_columns)):
            if not items:
                continue
            columns = build()
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(len(items), f.type)
                    for f in ARROW_SCHEMA
                ],
                schema=ARROW_SCHEMA,
            )


# The columns whose change makes a re-ingested record an update rather than unchanged.
CHANGE_COLUMNS = (
    "record_id",
    "source_uri",
    "locator",
    "content_sha256",
    "license",
    "license_source",
    "subject_ids",
    "consent",
    "domain",
    "metadata",
)


def change_digest(alias: str | None = None) -> Column:
    """A digest of what a user would call the record's content and provenance.

    `alias` qualifies the columns, e.g. "t" or "s" inside a MERGE condition.
    """
    prefix = f"{alias}." if alias else ""
    return F.sha2(F.to_json(F.struct(*[F.col(prefix + c).alias(c) for c in CHANGE_COLUMNS])), 256)


def read_bucket(files: list[tuple[int, FileTask]], params: IngestParams) -> Iterator[pa.RecordBatch]:
    """Read a bucket of files into Arrow batches of at most `params.batch_rows` rows."""
    batch = _Batch()
    for file_index, task in files:
        file = _FileRows(task, file_index)
        seq = 0
        for item in _read(task, params):
            if isinstance(item, RecordBlock):
                whole = _block_batch(file, item, seq)
                for start in range(0, whole.num_rows, params.batch_rows):
                    yield whole.slice(start, params.batch_rows)
                seq += item.rows
                continue
            batch.add(item, file, seq)
            seq += 1
            if batch.rows >= params.batch_rows:
                yield from batch.to_arrow()
                batch = _Batch()
    yield from batch.to_arrow()


def _read(task: FileTask, params: IngestParams) -> Iterator[Item | RecordBlock]:
    if params.arrow_jsonl and block_readable(task):
        return read_jsonl_blocks(task, params.reader)
    return read_file(task, params.reader)


def _block_batch(file: _FileRows, block: RecordBlock, first_seq: int) -> pa.RecordBatch:
    """A block of records as bronze rows: the same values `_Batch` gives record by record."""
    n = block.rows
    table = block.table
    source = file.task.source
    locators = [f"{file.task.relpath}:{line}" for line in block.line_numbers.tolist()]
    if source.id_field:
        ids = table.column(source.id_field)
        record_ids = (ids if pa.types.is_string(ids.type) else ids.cast(pa.string())).to_pylist()
    else:
        record_ids = locators
    texts = table.column(source.text_field)
    columns: dict[str, Any] = {
        "kind": [DOCUMENT] * n,
        "source": [file.source] * n,
        "source_uri": [file.source_uri] * n,
        "locator": locators,
        "byte_offset": block.byte_offsets,
        "byte_length": block.byte_lengths,
        "file_index": [file.file_index] * n,
        "seq": np.arange(first_seq, first_seq + n),
        "doc_id": [doc_id_for(file.source, rid) for rid in record_ids],
        "record_id": record_ids,
        "text": texts.combine_chunks(),
        "content_sha256": [hashlib.sha256(t).hexdigest() for t in texts.cast(pa.binary()).to_pylist()],
        "consent": [file.consent] * n,
        "domain": [file.domain] * n,
        "metadata": file.metadata_column(table),
    }
    columns["license"], columns["license_source"] = file.license_columns(table)
    columns["subject_ids"] = file.subject_column(table)
    return pa.RecordBatch.from_arrays(
        [
            (columns[f.name] if isinstance(columns[f.name], pa.Array) else pa.array(columns[f.name], type=f.type))
            if f.name in columns
            else pa.nulls(n, f.type)
            for f in ARROW_SCHEMA
        ],
        schema=ARROW_SCHEMA,
    )


def plan_buckets(tasks: list[FileTask], parallelism: int, task_bytes: int) -> list[list[tuple[int, FileTask]]]:
    """Spread files over Spark tasks, biggest first onto the least loaded bucket (LPT)."""
    total = sum(t.bytes_to_read for t in tasks)
    count = max(1, min(len(tasks), max(parallelism, -(-total // max(task_bytes, 1)))))
    heap = [(0, i) for i in range(count)]
    buckets: list[list[tuple[int, FileTask]]] = [[] for _ in range(count)]
    order = sorted(range(len(tasks)), key=lambda i: (-tasks[i].bytes_to_read, i))
    for index in order:
        load, bucket = heapq.heappop(heap)
        buckets[bucket].append((index, tasks[index]))
        heapq.heappush(heap, (load + max(tasks[index].bytes_to_read, 1), bucket))
    return [sorted(b, key=lambda pair: pair[0]) for b in buckets]


def _splittable(task: FileTask, task_bytes: int) -> bool:
    plain = not task.path.lower().endswith((".gz", ".zst"))
    return task.source.format in JSONL_FORMATS and plain and task.end is None and task.size > task_bytes


def split_large_files(spark: SparkSession, tasks: list[FileTask], task_bytes: int) -> list[FileTask]:
    """Cut large uncompressed JSON Lines files into byte ranges that Spark reads in parallel.

    A first, cheap Spark pass counts the line ends in every range, so each range knows the
    number of its first line and locators stay `file:line` whatever the split.
    """
    ranges: list[tuple[int, FileTask]] = []
    for index, task in enumerate(tasks):
        if _splittable(task, task_bytes):
            for start in range(0, task.size, task_bytes):
                ranges.append((index, replace(task, start=start, end=min(start + task_bytes, task.size))))
    if not ranges:
        return tasks
    counts = (
        spark.sparkContext.parallelize([t for _, t in ranges], len(ranges))
        .map(lambda t: count_newlines(t.path, t.start, t.end))
        .collect()
    )
    by_file: dict[int, list[tuple[FileTask, int]]] = {}
    for (index, task), newlines in zip(ranges, counts, strict=True):
        by_file.setdefault(index, []).append((task, newlines))
    split: dict[int, list[FileTask]] = {}
    for index, pieces in by_file.items():
        numbers = first_line_numbers([t.start for t, _ in pieces], [n for _, n in pieces])
        split[index] = [replace(t, first_line=n) for (t, _), n in zip(pieces, numbers, strict=True)]
    return [piece for index, task in enumerate(tasks) for piece in split.get(index, [task])]


def read_sources(spark: SparkSession, tasks: list[FileTask], params: IngestParams) -> tuple[DataFrame, int]:
    """Every record and quarantine entry of `tasks` as one lazy DataFrame (see `SPARK_SCHEMA`),
    and the number of Spark tasks that read them."""
    buckets = _buckets(spark, tasks, params)

    def read_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for bucket in batch.column("id").to_pylist():
                yield from read_bucket(buckets[bucket], params)

    frame = spark.range(len(buckets), numPartitions=len(buckets)).mapInArrow(read_partition, SPARK_SCHEMA)
    return frame, len(buckets)


def _buckets(spark: SparkSession, tasks: list[FileTask], params: IngestParams) -> list[list[tuple[int, FileTask]]]:
    """The files (or byte ranges of large files) each Spark task reads."""
    tasks = split_large_files(spark, tasks, params.task_bytes)
    return plan_buckets(tasks, spark.sparkContext.defaultParallelism * 2, params.task_bytes)


def write_documents(
    spark: SparkSession,
    tasks: list[FileTask],
    params: IngestParams,
    set_aside: Path,
    table: DataFileSettings,
    stamps: dict[str, Any],
) -> tuple[list[WrittenFile], int]:
    """Read `tasks` and write their documents as new data files of the table (not committed), one
    file per Spark task, with the run's `stamps` (e.g. `ingested_at`) in their columns. Returns
    the files and the number of tasks. Arrow writes the rows in the worker that read them, so
    they never pass through Spark's rows (see `lineage.data_files`).

    Each task writes its quarantine entries and its count of documents per source to
    `set_aside` (a folder every executor can write; `read_set_aside` gathers them), so that
    nothing but documents goes into the table and nothing else is lost. A retried task writes
    the same set-aside files again."""
    buckets = _buckets(spark, tasks, params)

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for bucket in batch.column("id").to_pylist():
                writer = DataFileWriter(table, bucket)
                try:
                    rows = read_bucket(buckets[bucket], params)
                    for documents in _documents_only(rows, set_aside / f"task-{bucket:05d}"):
                        writer.write(_table_rows(documents, table.schema, stamps))
                    written = writer.close()
                except BaseException:
                    writer.abort()
                    raise
                yield files_batch([written] if written else [])

    spark_schema = from_arrow_schema(WRITTEN_FILE_SCHEMA)
    frame = spark.range(len(buckets), numPartitions=len(buckets)).mapInArrow(write_partition, spark_schema)
    return [WrittenFile(**row.asDict()) for row in frame.collect()], len(buckets)


def _table_rows(batch: pa.RecordBatch, schema: pa.Schema, stamps: dict[str, Any]) -> pa.RecordBatch:
    """Reader rows (`ARROW_SCHEMA`) as rows of a table's schema, the run's stamps filled in."""
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [
            pa.array([stamps[f.name]] * n, f.type) if f.name in stamps else batch.column(f.name).cast(f.type)
            for f in schema
        ],
        schema=schema,
    )


def _documents_only(batches: Iterator[pa.RecordBatch], aside: Path) -> Iterator[pa.RecordBatch]:
    """Yield the document batches; stream the quarantine batches to `aside.arrow` (Arrow IPC)
    and, once the last batch is read, write the documents counted per source to `aside.json`,
    whose presence says the task finished. Each file appears whole (written aside, renamed)."""
    documents: dict[str, int] = {}
    writer, partial = None, aside.with_name(f"{aside.name}.{uuid.uuid4().hex}.part")
    aside.parent.mkdir(parents=True, exist_ok=True)
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if batch.column("kind")[0].as_py() == QUARANTINE:  # a batch holds one kind (see `_Batch`)
                writer = writer or pa.ipc.new_file(str(partial), ARROW_SCHEMA)
                writer.write_batch(batch)
                continue
            for count in pc.value_counts(batch.column("source")).to_pylist():
                documents[count["values"]] = documents.get(count["values"], 0) + count["counts"]
            yield batch
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        partial.replace(aside.with_suffix(".arrow"))
    partial.write_bytes(orjson.dumps(documents))
    partial.replace(aside.with_suffix(".json"))


def read_set_aside(folder: Path) -> tuple[pa.Table, dict[str, int], int]:
    """The quarantine entries and the documents per source that the reading tasks set aside
    (see `write_documents`), and how many tasks finished: the caller checks that every task did."""
    finished = sorted(folder.glob("task-*.json"))
    tables, documents = [pa.table({f.name: pa.array([], f.type) for f in ARROW_SCHEMA})], {}
    for path in finished:
        for name, count in orjson.loads(path.read_bytes()).items():
            documents[name] = documents.get(name, 0) + count
        quarantined = path.with_suffix(".arrow")
        if quarantined.exists():
            with pa.memory_map(str(quarantined)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
    return pa.concat_tables(tables), documents, len(finished)


def mark_duplicate_ids(rows: DataFrame) -> DataFrame:
    """Within one batch, a second record with an id already seen goes to quarantine.

    Only sources with an `id_field` can repeat a doc_id (locator ids are unique), so the job
    calls this only when a source has one. The first record in file order wins, deterministically.
    """
    by_id = Window.partitionBy("doc_id").orderBy("file_index", "seq")
    marked = rows.withColumn("_duplicate", (F.col("kind") == DOCUMENT) & (F.row_number().over(by_id) > 1)).withColumn(
        "_first", F.first("locator").over(by_id)
    )
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
