"""Data files written by Arrow and committed by delta-rs: Spark must read them, and their
statistics, exactly as it reads its own writes."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable as RsDeltaTable
from deltalake import write_deltalake

from lineage.data_files import (
    ColumnStatistics,
    ConcurrentWriteError,
    DataFileWriter,
    commit_new_files,
    table_settings,
)

SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), False),
        pa.field("source", pa.string(), False),
        pa.field("n", pa.int64()),
        pa.field("at", pa.timestamp("us", tz="UTC"), False),
        pa.field("tags", pa.list_(pa.field("element", pa.string()))),
        pa.field("meta", pa.map_(pa.string(), pa.string())),
    ]
)
PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.dataSkippingStatsColumns": "source,n,at"}


def _rows(source: str, count: int) -> pa.Table:
    return pa.table(
        {
            "doc_id": [f"{source}-{i}" for i in range(count)],
            "source": [source] * count,
            "n": [None if i % 7 == 3 else i * (1 if source == "a" else -1) for i in range(count)],
            "at": [datetime(2026, 12, 6, 5, i % 60, 1, 123456 + i, tzinfo=UTC) for i in range(count)],
            "tags": [[f"t{i % 3}"] if i % 2 else [] for i in range(count)],
            "meta": [[("k", str(i))] if i % 5 else [] for i in range(count)],
        },
        schema=SCHEMA,
    )


def _create(path: Path) -> str:
    RsDeltaTable.create(str(path), SCHEMA, configuration=PROPERTIES)
    return str(path)


def _write(settings: Any, task: int, rows: pa.Table) -> Any:
    writer = DataFileWriter(settings, task)
    for batch in rows.to_batches(max_chunksize=40):
        writer.write(batch)
    return writer.close()


def _stats_by_source(path: str, version: int) -> dict[str, dict[str, Any]]:
    found = {}
    for name in sorted(Path(path, "_delta_log").glob("*.json")):
        if int(name.stem) != version:
            continue
        for line in name.read_text().splitlines():
            add = json.loads(line).get("add")
            if add:
                stats = json.loads(add["stats"])
                found[stats["minValues"]["source"]] = stats
    return found


def test_statistics_in_deltas_own_format() -> None:
    schema = pa.schema(
        [
            ("s", pa.string()),
            ("x", pa.float64()),
            ("d", pa.date32()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("empty", pa.string()),
            ("nested", pa.list_(pa.string())),
            ("flag", pa.bool_()),
            ("long", pa.string()),
        ]
    )
    stats = ColumnStatistics(schema, ("s", "x", "d", "at", "empty", "nested", "flag", "long", "absent"))
    at = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    first = {"s": ["m", None], "x": [1.5, math.nan], "d": [date(2026, 1, 2)] * 2, "at": [at, None]}
    first["long"] = ["x" * 40, "b" * 40]  # bounds over 32 characters: the minimum cut, no maximum
    second = {"s": ["b", "z"], "x": [-2.0, 0.0], "d": [date(2025, 5, 6)] * 2, "at": [at.replace(second=1)] * 2}
    second["long"] = ["c", None]
    for values in (first, second):
        stats.update(
            pa.table({**values, "empty": [None, None], "nested": [["a"], None], "flag": [True, None]}, schema=schema)
        )
    assert json.loads(stats.to_json()) == {
        "numRecords": 4,
        "minValues": {"s": "b", "d": "2025-05-06", "at": "2026-01-02T03:04:01.678Z", "long": "b" * 32},  # x: NaN
        "maxValues": {"s": "z", "d": "2026-01-02", "at": "2026-01-02T03:04:05.678Z"},
        "nullCount": {"s": 1, "x": 0, "d": 0, "at": 1, "empty": 4, "flag": 2, "long": 1},
    }


def test_arrow_written_files_read_in_spark_as_its_own_writes(spark, tmp_path: Path) -> None:
    """Two tasks' files committed together: Spark reads the rows, the change feed has them as
    inserts, data skipping uses their statistics, which equal those Spark's writer gives the
    same rows, and the history shows Spark's WRITE metrics."""
    path = _create(tmp_path / "arrow")
    settings = table_settings(path, row_group_bytes=2048)  # several row groups a file
    assert settings.stats_columns == ("source", "n", "at")
    rows = {"a": _rows("a", 300), "b": _rows("b", 200)}
    files = [_write(settings, task, rows[source]) for task, source in enumerate(rows)]
    assert [f.rows for f in files] == [300, 200]
    assert commit_new_files(path, files, 0, {"millpond.run_id": "run-1"}) == 1

    frame = spark.read.format("delta").load(path)
    back = {r["doc_id"]: r.asDict(recursive=True) for r in frame.collect()}
    assert sorted(back) == sorted(d for t in rows.values() for d in t.column("doc_id").to_pylist())
    for row in rows["a"].to_pylist()[:20] + rows["b"].to_pylist()[:5]:
        got = back[row["doc_id"]]
        assert got["n"] == row["n"] and got["tags"] == row["tags"] and got["meta"] == dict(row["meta"])
        assert got["at"].replace(tzinfo=UTC) == row["at"]
    changes = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 1).load(path)
    assert {r[0]: r[1] for r in changes.groupBy("_change_type").count().collect()} == {"insert": 500}
    assert len(frame.where("source = 'b'").inputFiles()) == 1 and not frame.where("n > 1000").inputFiles()
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where("version = 1").first()
    assert history["operation"] == "WRITE" and history["operationMetrics"]["numOutputRows"] == "500"

    spark_path = _create(tmp_path / "spark")
    spark_schema = spark.read.format("delta").load(spark_path).schema
    for source in rows:
        values = [{**r, "meta": dict(r["meta"])} for r in rows[source].to_pylist()]
        spark.createDataFrame(values, spark_schema).coalesce(1).write.format("delta").mode("append").save(spark_path)
    spark_stats = {**_stats_by_source(spark_path, 1), **_stats_by_source(spark_path, 2)}
    assert _stats_by_source(path, 1) == spark_stats


def test_a_commit_behind_another_writers_fails_and_removes_its_files(tmp_path: Path) -> None:
    path = _create(tmp_path / "t")
    written = _write(table_settings(path), 0, _rows("a", 10))
    write_deltalake(path, _rows("b", 3), mode="append")  # another writer got there first
    with pytest.raises(ConcurrentWriteError, match="changed while this job wrote"):
        commit_new_files(path, [written], 0)
    assert not (tmp_path / "t" / written.path).exists()
    table = RsDeltaTable(path)
    assert table.version() == 1 and table.to_pyarrow_table().num_rows == 3


def test_a_null_in_a_required_column_is_refused_and_the_file_dropped(tmp_path: Path) -> None:
    path = _create(tmp_path / "t")
    writer = DataFileWriter(table_settings(path, row_group_bytes=1), 0)
    writer.write(_rows("a", 5).to_batches()[0])
    good = _rows("a", 2).to_batches()[0]
    columns = [pa.array([None, "a"], pa.string()) if f.name == "source" else good.column(f.name) for f in SCHEMA]
    with pytest.raises(ValueError, match="column source .* may not hold nulls"):
        writer.write(pa.RecordBatch.from_arrays(columns, schema=SCHEMA))  # not validated by Arrow
    writer.abort()
    assert not list((tmp_path / "t").glob("*.parquet"))


def test_spark_codec_names_give_spark_file_names_and_that_compression(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = _create(tmp_path / "t")
    for codec, suffix, compression in (
        ("uncompressed", "-c000.parquet", "UNCOMPRESSED"),
        ("zstd", ".zstd.parquet", "ZSTD"),
    ):
        written = _write(table_settings(path, codec=codec), 0, _rows("a", 10))
        assert written.path.endswith(suffix)
        assert pq.read_metadata(tmp_path / "t" / written.path).row_group(0).column(0).compression == compression
