"""Creating, merging into and inspecting the catalog's Delta tables.

Writes go through MERGE on the table's key, so every write is one atomic Delta commit and a
re-run does not duplicate rows. Read-only inspection (`millpond tables`, `quarantine`) uses
delta-rs and needs no JVM.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField

from lineage.catalog import TableSpec
from lineage.reader import committed_version, read_delta


def sql_path(path: str) -> str:
    """A table path as a SQL identifier (`delta.`path``), for statements that take no DataFrame."""
    if "`" in path:
        raise ValueError(f"table paths may not contain backticks: {path}")
    return f"delta.`{path}`"


def ensure_table(spark: SparkSession, spec: TableSpec, lakehouse: str | Path) -> DeltaTable:
    """The table, created with its schema and properties if it does not exist; a table behind the
    catalog (a column added since, a drifted property) is brought up to it. Whether it exists and
    what it holds are read from its log with delta-rs, and delta-rs creates it: a commit of a few
    milliseconds, where Spark's check and CREATE take about a second each. Spark's table schema is
    the Delta log's own format, so both engines write the same schema."""
    path = spec.path(lakehouse)
    _ensure_with_delta_rs(spark, spec, path)
    return DeltaTable.forPath(spark, path)


def _ensure_with_delta_rs(spark: SparkSession, spec: TableSpec, path: str) -> Any:
    """`ensure_table`'s work, returning the table opened with delta-rs (for writers that need no
    Spark handle on it): created by delta-rs when missing, brought up to the catalog by Spark's
    `ALTER TABLE` when behind."""
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake import Schema

    existing = _rs_table(path)
    if existing is None:
        schema = Schema.from_json(spec.schema.json())
        return RsDeltaTable.create(path, schema, mode="ignore", configuration=spec.delta_properties())
    missing, drifted = _catalog_gap(existing, spec)
    if missing:  # a column the catalog added since the table was created (always nullable)
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {sql_path(path)} ADD COLUMNS ({columns})")
    if drifted:
        assignments = ", ".join(f"'{k}' = '{v}'" for k, v in drifted.items())
        spark.sql(f"ALTER TABLE {sql_path(path)} SET TBLPROPERTIES ({assignments})")
    return _rs_table(path) if missing or drifted else existing


def _rs_table(path: str) -> Any:
    """The delta-rs table at `path`, or None when there is none."""
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return RsDeltaTable(path)
    except TableNotFoundError:
        return None


def load_delta(spark: SparkSession, spec: TableSpec, lakehouse: str | Path) -> DataFrame | None:
    """The table's latest version as a DataFrame, or None when it does not exist yet."""
    path = spec.path(lakehouse)
    return spark.read.format("delta").load(path) if DeltaTable.isDeltaTable(spark, path) else None


def latest_version(path: str) -> int:
    """The latest committed version of the table at `path` (read from its Delta log, no Spark job)."""
    return committed_version(path)


@dataclass(frozen=True)
class MergeResult:
    """What one MERGE commit did (its version: `latest_version`)."""

    inserted: int
    updated: int


@contextlib.contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Spark session settings for the block only: each is restored (or unset) after it."""
    previous = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def merge_rows(
    spark: SparkSession,
    table: DeltaTable,
    key: tuple[str, ...],
    rows: DataFrame,
    *,
    changed_when: str | Column | None = None,
    source_is_persisted: bool = False,
    delete_missing: bool = False,
) -> MergeResult:
    """MERGE `rows` into a table (see `ensure_table`) on `key`: insert new keys, update matched
    rows where `changed_when` holds, and with `delete_missing` delete the rows `rows` does not
    hold (the table then holds exactly `rows`, in one commit).

    `changed_when` is a condition over `t` (target) and `s` (source); None makes the MERGE
    insert-only. With `source_is_persisted`, Delta does not copy the source again before
    merging (it does so by default to guard against a source that changes between reads).
    """
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
    merge = table.alias("t").merge(rows.alias("s"), on)
    if changed_when is not None:
        merge = merge.whenMatchedUpdateAll(condition=changed_when)
    merge = merge.whenNotMatchedInsertAll()
    if delete_missing:
        merge = merge.whenNotMatchedBySourceDelete()
    materialize = {"spark.databricks.delta.merge.materializeSource": "none"} if source_is_persisted else {}
    with session_conf(spark, materialize):
        metrics = merge.execute().first()
    values: dict[str, Any] = metrics.asDict() if metrics is not None else {}
    return MergeResult(
        inserted=int(values.get("num_inserted_rows") or 0),
        updated=int(values.get("num_updated_rows") or 0),
    )


def write_few_rows(
    spark: SparkSession, spec: TableSpec, lakehouse: str | Path, rows: list[dict[str, Any]], *, append: bool = False
) -> None:
    """Write a handful of rows into a small table with delta-rs, without a Spark job: append them
    (`append`: keys that cannot be there yet, such as a fresh run id) or MERGE them on the
    table's key. Either is one Delta commit of a few tens of milliseconds, where Spark's MERGE
    of one row takes about two seconds on a warm JVM. A MERGE that another writer's commit got
    ahead of is tried again on the new version (it is idempotent). `ensure_table` creates the
    table, or brings it up to the catalog, when it is missing or behind."""
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    table = _ensure_with_delta_rs(spark, spec, spec.path(lakehouse))
    source = pa.Table.from_pylist(rows, schema=pa.schema(table.schema().to_arrow()))
    if append:
        write_deltalake(table, source, mode="append")
        return
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in spec.key)
    attempt = 1
    while True:
        try:
            merge = table.merge(source, on, source_alias="s", target_alias="t")
            merge.when_matched_update_all().when_not_matched_insert_all().execute()
            return
        except CommitFailedError:
            if attempt == _MERGE_ATTEMPTS:
                raise
        time.sleep(random.uniform(0.02, 0.1) * attempt)  # writers that collided do not collide again
        table.update_incremental()
        attempt += 1


_MERGE_ATTEMPTS = 10


def _catalog_gap(table: Any, spec: TableSpec) -> tuple[list[StructField], dict[str, str]]:
    """What a table (opened with delta-rs) lacks that the catalog now gives it: the columns added
    since it was created, and the properties that drifted (with their wanted values)."""
    present = {field.name for field in table.schema().fields}
    configuration = table.metadata().configuration
    missing = [f for f in spec.schema.fields if f.name not in present]
    drifted = {k: v for k, v in spec.delta_properties().items() if configuration.get(k) != v}
    return missing, drifted


def read_table(
    spec: TableSpec,
    lakehouse: str | Path,
    columns: list[str] | None = None,
    version: int | None = None,
    where: Any = None,
) -> pa.Table | None:
    """A (small) table as a pyarrow Table via delta-rs, or None when it does not exist."""
    from deltalake.exceptions import TableNotFoundError

    try:
        return read_delta(spec.path(lakehouse), version, columns, where)
    except TableNotFoundError:
        return None


def changed_documents(spark: SparkSession, path: str, since: int, until: int) -> tuple[DataFrame, DataFrame]:
    """(doc_ids inserted or updated, doc_ids deleted) in bronze after version `since` up to `until`."""
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", since + 1)
        .option("endingVersion", until)
        .load(path)
        .select("doc_id", "_change_type", "_commit_version")
    )
    last = changes.groupBy("doc_id").agg(F.max_by("_change_type", "_commit_version").alias("change"))
    upserted = last.where(F.col("change").isin("insert", "update_postimage")).select("doc_id")
    deleted = last.where(F.col("change") == "delete").select("doc_id")
    return upserted, deleted
