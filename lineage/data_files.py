"""New rows written as a Delta table's data files by Arrow, then committed in one transaction.

Spark's Parquet writer turns every value into its row format before it encodes it: at 1M bronze
rows of seventeen columns that is most of a first load's write. When the rows are Arrow columns
already (the ingest readers build them in Spark's Python workers), Arrow's own writer in the same
worker writes them as they come (`DataFileWriter`), and the driver commits every task's files in
one Delta transaction (`commit_new_files`, by delta-rs) that fails, rather than duplicates rows,
when another writer committed after the table was read. The files carry the same Delta
statistics Spark's writer gives them, on the table's `delta.dataSkippingStatsColumns` only.

A file that is never committed (a failed task, a killed job) is not part of the table: readers
go by the log, and `VACUUM` removes it. A failed commit removes its own files.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lineage.errors import MillpondError

# Spark's Parquet writer closes a row group at about this many bytes (`parquet.block.size`).
ROW_GROUP_BYTES = 128 * 1024 * 1024
# Delta keeps string statistics to this many characters (`dataSkippingStringPrefixLength`).
STRING_PREFIX = 32


class ConcurrentWriteError(MillpondError, RuntimeError):
    """Another writer committed to the table after this job read it; nothing was committed."""


@dataclass(frozen=True)
class DataFileSettings:
    """What a task needs to write files the way the table wants them: its folder and schema, the
    columns that get statistics, the session's Parquet codec, and the columns whose values all
    differ (no dictionary: it never pays for them)."""

    table_path: str
    schema: pa.Schema
    stats_columns: tuple[str, ...]
    codec: str = "snappy"
    plain_columns: tuple[str, ...] = ()
    row_group_bytes: int = ROW_GROUP_BYTES


@dataclass(frozen=True)
class WrittenFile:
    """A data file written into a table's folder and not yet committed."""

    path: str  # relative to the table's folder
    size: int
    rows: int
    modification_time: int  # milliseconds since the epoch
    stats: str  # Delta's statistics, as JSON


WRITTEN_FILE_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), False),
        pa.field("size", pa.int64(), False),
        pa.field("rows", pa.int64(), False),
        pa.field("modification_time", pa.int64(), False),
        pa.field("stats", pa.string(), False),
    ]
)


def table_settings(table_path: str, **settings: Any) -> DataFileSettings:
    """`DataFileSettings` for the Delta table at `table_path`, its schema and statistics columns
    read from its log (`delta.dataSkippingStatsColumns`, else its first
    `delta.dataSkippingNumIndexedCols` columns, 32 by default, as Delta's writers do)."""
    from deltalake import DeltaTable as RsDeltaTable

    table = RsDeltaTable(table_path)
    schema = pa.schema(table.schema().to_arrow())
    configuration = table.metadata().configuration
    named = configuration.get("delta.dataSkippingStatsColumns")
    if named:
        stats_columns = tuple(c.strip() for c in named.split(",") if c.strip())
    else:
        stats_columns = tuple(schema.names[: int(configuration.get("delta.dataSkippingNumIndexedCols", "32"))])
    return DataFileSettings(table_path, schema, stats_columns, **settings)


class ColumnStatistics:
    """Delta's per-file statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) of some
    top-level columns, gathered batch by batch. Minimum and maximum are kept for strings,
    numbers, dates and timestamps (timestamps cut to milliseconds, as Spark's and delta-rs'
    writers write them; their readers allow for the cut); other types, and a float column that
    holds a NaN, get a null count only."""

    def __init__(self, schema: pa.Schema, columns: tuple[str, ...]) -> None:
        self.columns = [c for c in columns if c in schema.names and not pa.types.is_nested(schema.field(c).type)]
        self.rows = 0
        self.nulls = dict.fromkeys(self.columns, 0)
        self.low: dict[str, Any] = {}
        self.high: dict[str, Any] = {}
        self.unbounded: set[str] = set()

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.rows += batch.num_rows
        for name in self.columns:
            column = batch.column(name)
            self.nulls[name] += column.null_count
            if name in self.unbounded or not _ordered(column.type) or column.null_count == len(column):
                continue
            if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
                # Spark orders NaN above every number; bounds without it would skip wrongly
                self.unbounded.add(name)
                self.low.pop(name, None)
                self.high.pop(name, None)
                continue
            bounds = pc.min_max(column)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            self.low[name] = low if name not in self.low else min(self.low[name], low)
            self.high[name] = high if name not in self.high else max(self.high[name], high)

    def to_json(self) -> str:
        # Strings are kept to Delta's 32-character prefix: a prefix is still a lower bound, but
        # not an upper one, so a longer maximum is left out (that column then skips no file).
        low = {k: v[:STRING_PREFIX] if isinstance(v, str) else v for k, v in self.low.items()}
        high = {k: v for k, v in self.high.items() if not (isinstance(v, str) and len(v) > STRING_PREFIX)}
        return json.dumps(
            {
                "numRecords": self.rows,
                "minValues": {k: _stat_value(v) for k, v in low.items()},
                "maxValues": {k: _stat_value(v) for k, v in high.items()},
                "nullCount": self.nulls,
            },
            separators=(",", ":"),
        )


def _ordered(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )


def _stat_value(value: Any) -> Any:
    """A bound as Delta's statistics write it."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


class DataFileWriter:
    """One new Parquet file in a table's folder, written batch by batch in row groups of about
    `row_group_bytes`, with the table's schema (non-nullable columns checked) and statistics."""

    def __init__(self, settings: DataFileSettings, task: int) -> None:
        self.settings = settings
        # Spark's names for its codecs, and its file names (`part-00000-<uuid>-c000.snappy.parquet`)
        self.compression = {"uncompressed": "none", "lz4_raw": "lz4"}.get(settings.codec, settings.codec)
        suffix = "" if self.compression == "none" else f".{settings.codec}"
        self.name = f"part-{task:05d}-{uuid.uuid4()}-c000{suffix}.parquet"
        self.path = Path(settings.table_path) / self.name
        self.statistics = ColumnStatistics(settings.schema, settings.stats_columns)
        self.required = [f.name for f in settings.schema if not f.nullable]
        self.pending: list[pa.RecordBatch] = []
        self.pending_bytes = 0
        self.writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Add rows (in the table's schema, by name); they reach the file a row group at a time."""
        if batch.num_rows == 0:
            return
        for name in self.required:
            if batch.column(name).null_count:
                raise ValueError(f"column {name} of {self.settings.table_path} may not hold nulls")
        self.statistics.update(batch)
        self.pending.append(batch)
        self.pending_bytes += batch.nbytes
        if self.pending_bytes >= self.settings.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                str(self.path),
                self.settings.schema,
                compression=self.compression,
                use_dictionary=[c for c in self.settings.schema.names if c not in self.settings.plain_columns],
                write_statistics=list(self.settings.stats_columns),
            )
        rows = pa.Table.from_batches(self.pending, schema=self.settings.schema)
        self.writer.write_table(rows, row_group_size=rows.num_rows)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> WrittenFile | None:
        """Finish the file; None when no row was written (and no file made)."""
        self._flush()
        if self.writer is None:
            return None
        self.writer.close()
        stat = self.path.stat()
        return WrittenFile(
            self.name, stat.st_size, self.statistics.rows, int(stat.st_mtime * 1000), self.statistics.to_json()
        )

    def abort(self) -> None:
        """Drop the file: the task failed and its rows will come from another attempt."""
        if self.writer is not None:
            self.writer.close()
        self.path.unlink(missing_ok=True)


def files_batch(files: list[WrittenFile]) -> pa.RecordBatch:
    """Written files as rows of `WRITTEN_FILE_SCHEMA`, for a Spark task to hand to the driver."""
    return pa.RecordBatch.from_pylist([vars(f) for f in files], schema=WRITTEN_FILE_SCHEMA)


def commit_new_files(
    table_path: str, files: list[WrittenFile], read_version: int, metadata: dict[str, str] | None = None
) -> int:
    """Add `files` to the table in one commit, the version after `read_version`, and return it.

    The commit fails with `ConcurrentWriteError` (and the files are removed) when another writer
    committed after `read_version`: the rows were made for the table as it was then."""
    from deltalake import CommitProperties
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction

    table = RsDeltaTable(table_path, version=read_version)
    now = int(time.time() * 1000)
    actions = [AddAction(f.path, f.size, {}, f.modification_time or now, True, f.stats) for f in files]
    # the metrics Spark's own writer records for a WRITE, so `DESCRIBE HISTORY` reads alike
    written = {
        "numFiles": str(len(files)),
        "numOutputRows": str(sum(f.rows for f in files)),
        "numOutputBytes": str(sum(f.size for f in files)),
    }
    try:
        table.create_write_transaction(
            actions,
            mode="append",
            schema=table.schema(),
            commit_properties=CommitProperties(
                custom_metadata={**(metadata or {}), "operationMetrics": written}, max_commit_retries=0
            ),
        )
    except CommitFailedError as error:
        remove_files(table_path, files)
        raise ConcurrentWriteError(
            f"{table_path} changed while this job wrote to it (it read version {read_version}; another "
            f"writer committed since): nothing was committed; run the job again ({error})"
        ) from error
    return read_version + 1


def remove_files(table_path: str, files: list[WrittenFile]) -> None:
    """Delete files that were written but will not be committed."""
    for file in files:
        (Path(table_path) / file.path).unlink(missing_ok=True)
