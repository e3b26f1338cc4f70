"""Reading the lakehouse without a JVM: scripts that exit cleanly every time, and the notebook API."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.compute as pc
import pytest
from curation_data import silver_row, write_silver
from delta.tables import DeltaTable
from pyspark.sql import functions as F

import millpond
from conftest import make_config
from jobs.snapshot import create_snapshot
from lineage.catalog import SILVER_DOCUMENTS
from lineage.snapshots import SnapshotSpec

RUNS = 20

# What the README documents: the API, and plain delta-rs with pyarrow's own filesystem.
SCRIPTS = {
    "api": """
import sys, millpond
t = millpond.open_lakehouse(sys.argv[1]).table("silver.documents")
print(t.num_rows)
""",
    "delta-rs": """
import sys, pyarrow.fs as fs
from deltalake import DeltaTable
path = sys.argv[1] + "/silver/documents"
t = DeltaTable(path).to_pyarrow_table(filesystem=fs.SubTreeFileSystem(path, fs.LocalFileSystem()))
print(t.num_rows)
""",
}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """silver.documents at three versions (two appends, then an update) and a snapshot cut at v2."""
    lakehouse = tmp_path_factory.mktemp("reader") / "lakehouse"
    ok = ["pretraining"]
    write_silver(spark, lakehouse, [silver_row(i, "books", "allowed", ok) for i in range(30)])
    write_silver(spark, lakehouse, [silver_row(i, "web", "allowed", ok) for i in range(30, 50)])
    create_snapshot(spark, make_config(lakehouse), SnapshotSpec("books-v1", validation=0.1, test=0.1))
    DeltaTable.forPath(spark, SILVER_DOCUMENTS.path(lakehouse)).update(set={"text": F.upper("text")})
    return lakehouse


def test_documented_reads_exit_cleanly_every_time(lake: Path, tmp_path: Path) -> None:
    def run(script: Path) -> tuple[int, str]:
        done = subprocess.run([sys.executable, str(script), str(lake)], capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout.strip() + done.stderr[-300:]

    for name, text in SCRIPTS.items():
        script = tmp_path / f"{name}.py"
        script.write_text(text)
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(run, [script] * RUNS))
        assert outcomes == [(0, "50")] * RUNS, (name, [o for o in outcomes if o != (0, "50")][:3])


def test_tables_versions_history_and_polars(lake: Path) -> None:
    lakehouse = millpond.open_lakehouse(lake)
    infos = {info.name: info for info in lakehouse.tables()}
    assert infos["silver.documents"].rows == 50 and infos["bronze.documents"].version is None
    latest = lakehouse.table("silver.documents", columns=["doc_id", "text"])
    first = lakehouse.table("silver.documents", version=1, columns=["doc_id", "text"])
    assert first.num_rows == 30 and latest.num_rows == 50
    assert all(t == t.upper() for t in latest.column("text").to_pylist())
    assert not all(t == t.upper() for t in first.column("text").to_pylist())
    web = lakehouse.table("silver.documents", where=pc.field("source") == "web", columns=["source"])
    assert web.num_rows == 20
    history = lakehouse.history("silver.documents")
    assert [h["version"] for h in history][:2] == [3, 2] and history[0]["operation"] == "UPDATE"
    frame = lakehouse.polars("silver.documents", version=2, columns=["doc_id", "source"])
    assert frame.shape == (50, 2) and frame["source"].to_list().count("web") == 20


def test_a_snapshot_reads_its_members_at_the_pinned_version(lake: Path) -> None:
    members = millpond.open_lakehouse(lake).snapshot("books-v1")
    assert members.num_rows == 50  # no filter: books and web, as silver was when it was cut
    assert set(members.column("split").to_pylist()) <= {"train", "validation", "test"}
    texts = members.column("text").to_pylist()
    assert None not in texts and not all(t == t.upper() for t in texts)  # before the later update


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lake: lake.table("silver.nosuch"), "unknown table 'silver.nosuch'; known tables: "),
        (lambda lake: lake.table("bronze.documents"), "bronze.documents does not exist yet"),
        (lambda lake: lake.table("silver.documents", version=9), "silver.documents has no version 9: its versions are 0 to 3"),
        (lambda lake: lake.snapshot("nosuch"), "no snapshot 'nosuch'"),
    ],
)  # fmt: skip
def test_errors_name_the_table(lake: Path, call, message: str) -> None:
    with pytest.raises(millpond.MillpondError) as raised:
        call(millpond.open_lakehouse(lake))
    assert message in str(raised.value)
    with pytest.raises(millpond.MillpondError, match="no lakehouse at"):
        millpond.open_lakehouse(lake.parent / "elsewhere")
