"""`lineage.edges`: which row came from, copies or belongs to which.

Jobs write edges for what they derive, drop or group: curate links each silver document to
its bronze record (`derived_from`, or `scrubbed_from` when the pii stage changed it) and each
duplicate to the copy that was kept (`duplicate_of`, with the cluster id); a snapshot links
itself to its members (`snapshot_member`). A data subject request closes over these edges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lineage.catalog import LINEAGE_EDGES
from lineage.tables import ensure_table

DERIVED_FROM = "derived_from"
SCRUBBED_FROM = "scrubbed_from"
DUPLICATE_OF = "duplicate_of"
SNAPSHOT_MEMBER = "snapshot_member"
PAIR_OF = "pair_of"
CURATE_RELATIONS = (DERIVED_FROM, SCRUBBED_FROM, DUPLICATE_OF)


def edges(
    frame: DataFrame,
    *,
    child: str | Column,
    child_table: str,
    parent: str | Column,
    parent_table: str,
    relation: str | Column,
    run_id: str,
    table_version: int | None,
    cluster: str | Column | None = None,
) -> DataFrame:
    """Rows of lineage.edges from a frame: one edge per row."""

    def col(value: str | Column) -> Column:
        return value if isinstance(value, Column) else F.col(value)

    return frame.select(
        col(child).alias("child_id"),
        F.lit(child_table).alias("child_table"),
        col(parent).alias("parent_id"),
        F.lit(parent_table).alias("parent_table"),
        (relation if isinstance(relation, Column) else F.lit(relation)).alias("relation"),
        (col(cluster) if cluster is not None else F.lit(None)).cast("string").alias("cluster_id"),
        F.lit(run_id).alias("run_id"),
        F.lit(table_version).cast("long").alias("table_version"),
        F.lit(datetime.now(UTC)).alias("created_at"),
    )


def replace_edges(
    spark: SparkSession,
    lakehouse: str | Path,
    rows: DataFrame,
    children: DataFrame,
    relations: tuple[str, ...],
    *,
    everything: bool = False,
) -> None:
    """The edges of `relations` whose child is in `children` (doc_id) are replaced by `rows`; with
    `everything` (a full re-run) all edges of those relations are. Clearing and inserting is
    idempotent: a run killed half way is redone whole by the next one."""
    path = LINEAGE_EDGES.path(lakehouse)
    existed = DeltaTable.isDeltaTable(spark, path)
    table = ensure_table(spark, LINEAGE_EDGES, lakehouse)
    mine = F.col("relation").isin(*relations)
    if everything and existed:
        table.delete(mine)
    elif existed:
        # One MERGE, one commit: a `clear` row per child deletes its edges of these relations, and
        # the new edges are inserted beside them.
        columns = LINEAGE_EDGES.schema.fieldNames()
        clear = (
            children.select("doc_id")
            .distinct()
            .select(
                *[
                    F.col("doc_id").alias(f.name)
                    if f.name == "child_id"
                    else F.lit(None).cast(f.dataType).alias(f.name)
                    for f in LINEAGE_EDGES.schema.fields
                ],
                F.lit("clear").alias("_op"),
            )
        )
        source = clear.unionByName(rows.select(*columns, F.lit("insert").alias("_op")))
        merge = table.alias("t").merge(source.alias("s"), "t.child_id = s.child_id AND s._op = 'clear'")
        merge.whenMatchedDelete(condition=F.col("t.relation").isin(*relations)).whenNotMatchedInsert(
            condition="s._op = 'insert'", values={c: f"s.`{c}`" for c in columns}
        ).execute()
        return
    rows.write.format("delta").mode("append").save(path)


def insert_edges(spark: SparkSession, lakehouse: str | Path, rows: DataFrame) -> None:
    """Add edges; an edge already there (same key) is kept as it is."""
    table = ensure_table(spark, LINEAGE_EDGES, lakehouse)
    keys = " AND ".join(f"t.{c} = s.{c}" for c in LINEAGE_EDGES.key)
    table.alias("t").merge(rows.alias("s"), keys).whenNotMatchedInsertAll().execute()


def drop_edges(spark: SparkSession, lakehouse: str | Path, child_id: str, relation: str) -> None:
    path = LINEAGE_EDGES.path(lakehouse)
    if DeltaTable.isDeltaTable(spark, path):
        DeltaTable.forPath(spark, path).delete((F.col("child_id") == F.lit(child_id)) & (F.col("relation") == relation))
