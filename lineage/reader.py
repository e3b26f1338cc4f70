"""Reading the lakehouse without a JVM: delta-rs and pyarrow, for notebooks, scripts and the CLI.

`open_lakehouse(path)` is the public entry point (also as `millpond.open_lakehouse`):

    lake = open_lakehouse("lakehouse")
    lake.tables()                                   # name, path, version, rows of every table
    docs = lake.table("silver.documents")           # pyarrow.Table, latest version
    old = lake.table("silver.documents", version=3) # any version still on disk
    frame = lake.polars("silver.decisions")         # a Polars DataFrame, where Polars is installed
    lake.history("silver.documents")                # the Delta commits, newest first
    members = lake.snapshot("web-v3")               # members with their text at the pinned version

Every read goes through pyarrow's own filesystem (see `native_filesystem`), so a threaded read
is as fast as pyarrow makes it and the process exits cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from lineage.catalog import GOLD_SNAPSHOT_MEMBERS, GOLD_SNAPSHOTS, TABLES, TableSpec, table
from lineage.errors import MillpondError


class LakehouseReadError(MillpondError, LookupError):
    """A table, version or snapshot that is not there to read; the message names it."""


def native_filesystem(table_uri: str) -> Any:
    """pyarrow's own filesystem rooted at a table (local, s3://, gs://, hdfs://).

    delta-rs reads through a Python filesystem handler by default; with `pre_buffer` on, Arrow's
    I/O threads call into that handler, and one still doing so while the interpreter shuts down
    is ended with a forced unwind through C++ code: the process aborts at exit (`terminate called
    without an active exception`, status 134) after a read that succeeded. A native filesystem
    keeps Python out of those threads, so a threaded read exits cleanly.
    """
    import pyarrow.fs as pa_fs

    filesystem, root = pa_fs.FileSystem.from_uri(table_uri)
    return pa_fs.SubTreeFileSystem(root, filesystem)


def committed_version(uri: str | Path) -> int:
    """The latest committed version of the Delta table at `uri`, read from its log by delta-rs: a few
    milliseconds, where Spark's `DeltaTable.history` runs a Spark job (a third of a second on a warm
    JVM, more on a cold one). Raises deltalake's TableNotFoundError when there is no table."""
    from deltalake import DeltaTable as RsDeltaTable

    return RsDeltaTable(_uri(uri)).version()


def empty_table_version(uri: str | Path) -> int | None:
    """The latest version of the Delta table at `uri` when it has no data files (a table just
    created), else None; read from its log by delta-rs (`DataFrame.isEmpty` runs a Spark job), in
    one read, so the version is the one that was seen empty."""
    from deltalake import DeltaTable as RsDeltaTable

    table = RsDeltaTable(_uri(uri))
    return None if table.file_uris() else table.version()


def _uri(path: str | Path) -> str:
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def read_delta(uri: str, version: int | None = None, columns: list[str] | None = None, where: Any = None) -> pa.Table:
    """A Delta table (at `version`, default the latest; rows matching the pyarrow expression `where`)
    as a pyarrow Table, with no JVM. Raises deltalake's TableNotFoundError when there is no table."""
    from deltalake import DeltaTable as RsDeltaTable

    uri = _uri(uri)
    delta = RsDeltaTable(uri, version=version)
    return delta.to_pyarrow_table(columns=columns, filesystem=native_filesystem(uri), filters=where)


@dataclass(frozen=True)
class TableInfo:
    """A row of `millpond tables`."""

    name: str
    path: str
    version: int | None
    rows: int | None
    description: str


def inspect_tables(lakehouse: str | Path) -> list[TableInfo]:
    """Name, path, Delta version and row count of every catalog table, read with delta-rs (no JVM)."""
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake.exceptions import TableNotFoundError

    infos = []
    for spec in TABLES.values():
        path = spec.path(lakehouse)
        try:
            delta = RsDeltaTable(path)
        except TableNotFoundError:
            infos.append(TableInfo(spec.name, path, None, None, spec.description))
            continue
        rows = delta.to_pyarrow_dataset(filesystem=native_filesystem(path)).count_rows()
        infos.append(TableInfo(spec.name, path, delta.version(), rows, spec.description))
    return infos


class Lakehouse:
    """A millpond lakehouse folder, read table by table with delta-rs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise LakehouseReadError(f"no lakehouse at {self.root}: `millpond ingest` creates one")

    def __repr__(self) -> str:
        return f"Lakehouse({str(self.root)!r})"

    def tables(self) -> list[TableInfo]:
        """Every table of the catalog: name, path, latest version and rows (None until created)."""
        return inspect_tables(self.root)

    def _delta(self, spec: TableSpec, version: int | None = None) -> Any:
        from deltalake import DeltaTable as RsDeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        path = spec.path(self.root)
        try:
            latest = RsDeltaTable(path)
        except TableNotFoundError:
            raise LakehouseReadError(
                f"{spec.name} does not exist yet in {self.root} (no Delta table at {path})"
            ) from None
        if version is None or version == latest.version():
            return latest
        if not 0 <= version <= latest.version():
            raise LakehouseReadError(f"{spec.name} has no version {version}: its versions are 0 to {latest.version()}")
        try:
            return RsDeltaTable(path, version=version)
        except (DeltaError, OSError) as err:
            raise LakehouseReadError(
                f"version {version} of {spec.name} can no longer be read ({err}); VACUUM (an erasure runs one) "
                "removes the files of older versions"
            ) from None

    def table(
        self, name: str, version: int | None = None, columns: list[str] | None = None, where: Any = None
    ) -> pa.Table:
        """The table `name` (e.g. "silver.documents") at `version` (default: the latest) as a
        pyarrow Table; `columns` and a pyarrow expression `where` narrow what is read."""
        spec = table(name)
        delta = self._delta(spec, version)
        uri = spec.path(self.root)
        try:
            return delta.to_pyarrow_table(columns=columns, filesystem=native_filesystem(uri), filters=where)
        except FileNotFoundError as err:
            raise LakehouseReadError(
                f"version {delta.version()} of {name} can no longer be read ({err}); VACUUM (an erasure runs one) "
                "removes the files of older versions"
            ) from None

    def polars(self, name: str, version: int | None = None, columns: list[str] | None = None, where: Any = None) -> Any:
        """The same as `table`, as a Polars DataFrame (needs `pip install polars`)."""
        try:
            import polars as pl
        except ImportError:
            raise LakehouseReadError("Polars is not installed: `pip install polars` (or use .table())") from None
        return pl.from_arrow(self.table(name, version, columns, where))

    def history(self, name: str) -> list[dict[str, Any]]:
        """The table's Delta commits, newest first: version, timestamp, operation, parameters, metrics."""
        return self._delta(table(name)).history()

    def snapshot(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A snapshot's members (snapshot, doc_id, source, split, repeats, text_sha256) joined to
        `columns` (default: text) of its source table at the version the snapshot pinned."""
        import pyarrow.compute as pc

        rows = self.table(GOLD_SNAPSHOTS.name, where=pc.field("name") == name).to_pylist()
        if not rows:
            known = sorted(self.table(GOLD_SNAPSHOTS.name, columns=["name"]).column("name").to_pylist())
            raise LakehouseReadError(f"no snapshot {name!r} in {self.root}; snapshots: {', '.join(known) or 'none'}")
        pinned = rows[0]
        members = self.table(GOLD_SNAPSHOT_MEMBERS.name, where=pc.field("snapshot") == name)
        wanted = ["doc_id", *[c for c in (columns or ["text"]) if c != "doc_id"]]
        source = self.table(
            pinned["source_table"],
            version=pinned["source_version"],
            columns=wanted,
            where=pc.field("doc_id").isin(members.column("doc_id")),
        )
        joined = members.join(source, "doc_id", join_type="left outer", right_suffix="_table")
        return joined.sort_by([("split", "ascending"), ("doc_id", "ascending")])


def open_lakehouse(path: str | Path = "lakehouse") -> Lakehouse:
    """The lakehouse at `path` (default ./lakehouse), for reading its tables without a JVM."""
    return Lakehouse(path)
