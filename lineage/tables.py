"""Creating, merging into and inspecting the catalog's Delta tables.

Writes go through MERGE on the table's key, so every write is one atomic Delta commit and a
re-run does not duplicate rows. Read-only inspection (`millpond tables`, `quarantine`) uses
delta-rs and needs no JVM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lineage.catalog import TableSpec
from lineage.reader import committed_version, read_delta


def sql_path(path: str) -> str:
    """A table path as a SQL identifier (`delta.`path``), for statements that take no DataFrame."""
    if "`" in path:
        raise ValueError(f"table paths may not contain backticks: {path}")
    return f"delta.`{path}`"


def ensure_table(spark: SparkSession, spec: TableSpec, lakehouse: str | Path) -> DeltaTable:
    """Create the table with its schema and properties if it does not exist; fix drifted properties."""
    path = spec.path(lakehouse)
    wanted = spec.delta_properties()
    if not DeltaTable.isDeltaTable(spark, path):
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(spec.schema)
        for key, value in wanted.items():
            builder = builder.property(key, value)
        return builder.execute()
    current = {row["key"]: row["value"] for row in spark.sql(f"SHOW TBLPROPERTIES {sql_path(path)}").collect()}
    drifted = {k: v for k, v in wanted.items() if current.get(k) != v}
    table = DeltaTable.forPath(spark, path)
    # A column the catalog added since the table was created (always nullable) is added in place.
    present = set(table.toDF().schema.fieldNames())
    missing = [f for f in spec.schema.fields if f.name not in present]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {sql_path(path)} ADD COLUMNS ({columns})")
    if drifted:
        assignments = ", ".join(f"'{k}' = '{v}'" for k, v in drifted.items())
        spark.sql(f"ALTER TABLE {sql_path(path)} SET TBLPROPERTIES ({assignments})")
    return DeltaTable.forPath(spark, path) if missing else table


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
