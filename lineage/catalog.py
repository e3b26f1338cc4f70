"""Every Delta table of the lakehouse, declared once: name, layer, schema, keys and properties.

Jobs and stages never build table paths themselves; they ask the catalog, so that a table's
location, its merge key, which columns hold subject ids and which columns may carry Delta
data-skipping statistics are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import types as T


@dataclass(frozen=True)
class TableSpec:
    """One Delta table: where it lives and what it promises."""

    name: str  # "<layer>.<table>", e.g. "bronze.documents"
    schema: T.StructType
    key: tuple[str, ...]  # the MERGE key: unique per row
    description: str
    subject_columns: tuple[str, ...] = ()
    # Only these columns get min/max statistics in the Delta log. Free text and identifiers
    # are never listed, so no personal data is copied into `_delta_log`.
    stats_columns: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    def path(self, lakehouse: str | Path) -> str:
        """`<lakehouse>/<layer>/<table>` as an absolute path."""
        return str(Path(lakehouse).expanduser().resolve() / self.layer / self.short_name)

    def delta_properties(self) -> dict[str, str]:
        props = {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)}
        props.update(self.properties)
        return props


def _fields(*fields: T.StructField) -> T.StructType:
    return T.StructType(list(fields))


def _str(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.StringType(), nullable)


def _long(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.LongType(), nullable)


def _ts(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.TimestampType(), nullable)


def _strings(name: str) -> T.StructField:
    return T.StructField(name, T.ArrayType(T.StringType(), True), True)


def _str_map(name: str) -> T.StructField:
    return T.StructField(name, T.MapType(T.StringType(), T.StringType(), True), True)


def _long_map(name: str) -> T.StructField:
    return T.StructField(name, T.MapType(T.StringType(), T.LongType(), True), True)


BRONZE_DOCUMENTS = TableSpec(
    name="bronze.documents",
    schema=_fields(
        _str("doc_id", False),
        _str("record_id", False),
        _str("text", False),
        _str("source", False),
        _str("source_uri", False),
        _str("locator", False),
        _ts("ingested_at", False),
        _str("ingest_run_id", False),
        _str("content_sha256", False),
        _str("license"),
        _str("license_source", False),
        _strings("subject_ids"),
        _strings("consent"),
        _str("domain"),
        _str_map("metadata"),
    ),
    key=("doc_id",),
    description="One row per raw record, with provenance, license, subjects and consent.",
    subject_columns=("subject_ids",),
    stats_columns=("ingested_at", "ingest_run_id", "source", "license_source", "domain"),
    properties={"delta.enableChangeDataFeed": "true"},
)

QUARANTINE_RECORDS = TableSpec(
    name="quarantine.records",
    schema=_fields(
        _str("quarantine_id", False),
        _str("reason", False),
        _str("detail"),
        _str("source", False),
        _str("source_uri", False),
        _str("locator", False),
        _long("byte_offset"),
        _long("byte_length"),
        _str("ingest_run_id", False),
        _ts("quarantined_at", False),
    ),
    key=("quarantine_id",),
    description="What could not be read: the reason and where the raw bytes are (first sighting).",
    stats_columns=("reason", "source", "ingest_run_id", "quarantined_at"),
)

LINEAGE_RUNS = TableSpec(
    name="lineage.runs",
    schema=_fields(
        _str("run_id", False),
        _str("job", False),
        _str("status", False),  # running, succeeded, failed
        _str("config_digest", False),
        _str("params"),  # JSON of the job's own arguments
        _ts("started_at", False),
        _ts("ended_at"),
        _str("spark_master"),
        _str("spark_app_id"),
        _long_map("input_versions"),
        _long_map("output_versions"),
        _long_map("counts"),
        _str("error"),
    ),
    key=("run_id",),
    description="One row per job run: what it read and wrote, at which versions, with its counts.",
    stats_columns=("run_id", "job", "status", "started_at", "ended_at"),
)

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (BRONZE_DOCUMENTS, QUARANTINE_RECORDS, LINEAGE_RUNS)}


def table(name: str) -> TableSpec:
    """The spec of a registered table; a clear error for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise KeyError(f"unknown table {name!r}; known tables: {known}") from None
