"""Erasing documents physically: delete, purge, vacuum, tombstone and re-pin snapshots.

A Delta DELETE only writes new files without the rows; the old files stay for time travel,
and deletion vectors leave rows in place until purged. So for every table that held one of
the documents: DELETE (by document id, so no identifier is written into the transaction log),
`REORG ... APPLY (PURGE)`, then VACUUM with the erasure policy's retention, which removes the
replaced data files and the change data files of the deletes. Snapshots pinned to a version
that no longer exists are re-pinned to the version after the erasure and say so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lineage.catalog import (
    BRONZE_DOCUMENTS,
    GOLD_SNAPSHOT_MEMBERS,
    GOLD_SNAPSHOTS,
    GOVERNANCE_REQUESTS,
    GOVERNANCE_TOMBSTONES,
    SILVER_DOCUMENTS,
    SILVER_MINHASH,
    TABLES,
    TableSpec,
    table,
)
from lineage.locations import shards_folder
from lineage.snapshots import digest_lines, member_line, word_count
from lineage.tables import ensure_table, latest_version, load_delta, merge_rows, session_conf, sql_path, write_few_rows

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def new_request_id() -> str:
    return f"dsr-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class TableErasure:
    """What erasure did to one table."""

    table: str
    rows_deleted: int
    version_before: int
    version_after: int
    bytes_written: int  # by the DELETE and the purge (files rewritten without the rows)
    bytes_removed: int  # files the VACUUM deleted from storage
    purged: bool
    vacuumed_at: str
    retention_hours: int


def naming(spec: TableSpec, documents: list[str]) -> Column:
    condition = F.lit(False)
    for column in spec.document_columns:
        condition = condition | F.col(column).isin(documents)
    return condition


def _metrics(delta: DeltaTable, since: int, names: tuple[str, ...]) -> list[int]:
    """Sums of operation metrics over the commits after `since`, read in one pass over the history."""
    rows = delta.history().where(F.col("version") > since).select("operationMetrics").collect()
    return [sum(int((r[0] or {}).get(name) or 0) for r in rows) for name in names]


def _files_bytes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in path.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


def erase_table(
    spark: SparkSession,
    spec: TableSpec,
    lakehouse: str | Path,
    documents: list[str],
    retention_hours: int,
    known_to_hold: bool = False,
) -> TableErasure | None:
    """Delete the rows naming `documents` from one table, purge and vacuum it; None when it held
    none (checked first unless the caller `known_to_hold` them)."""
    path = spec.path(lakehouse)
    if not spec.document_columns or not documents or not DeltaTable.isDeltaTable(spark, path):
        return None
    delta = DeltaTable.forPath(spark, path)
    condition = naming(spec, documents)
    if not known_to_hold and delta.toDF().where(condition).limit(1).count() == 0:
        return None
    before = latest_version(path)
    delta.delete(condition)
    spark.sql(f"REORG TABLE {sql_path(path)} APPLY (PURGE)")
    deleted, written = _metrics(delta, before, ("numDeletedRows", "numAddedBytes"))
    on_disk = _files_bytes(Path(path))
    delta.vacuum(float(retention_hours))  # (the caller set the retention check and listing parallelism)
    removed = sum(size for file, size in on_disk.items() if not Path(file).exists())
    return TableErasure(
        table=spec.name,
        rows_deleted=deleted,
        version_before=before,
        version_after=latest_version(path),
        bytes_written=written,
        bytes_removed=removed,
        purged=True,
        vacuumed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        retention_hours=retention_hours,
    )


def erase_documents(
    spark: SparkSession,
    lakehouse: str | Path,
    documents: list[str],
    retention_hours: int,
    holding: set[str] | None = None,
    on_table: Callable[[TableErasure, float], None] | None = None,
) -> list[TableErasure]:
    """Every catalog table that declares document columns, several at once (their commits are
    independent, and each is mostly small Spark jobs waiting on one another); catalog order kept."""
    # VACUUM lists the table with `parallelPartitionDiscovery.parallelism` tasks (10,000 by
    # default: 40 s of empty tasks on two cores); the shuffle partition count is plenty.
    settings = {RETENTION_CHECK: "false", LISTING_PARALLELISM: spark.conf.get("spark.sql.shuffle.partitions")}
    specs = [s for s in TABLES.values() if s.document_columns and (holding is None or s.name in holding)]

    def erase(spec: TableSpec) -> TableErasure | None:
        started = time.perf_counter()
        done = erase_table(spark, spec, lakehouse, documents, retention_hours, known_to_hold=holding is not None)
        if done is not None and on_table is not None:
            on_table(done, time.perf_counter() - started)
        return done

    with session_conf(spark, settings), ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(erase, specs))
    return [r for r in results if r is not None]


def tombstone_rows(
    spark: SparkSession, lakehouse: str | Path, documents: list[str], subject_labels: list[str], request_id: str
) -> DataFrame:
    """What stops the erased content from coming back: document ids, raw and clean text hashes,
    MinHash signatures, and the subjects' keyed hashes. Read before the rows are deleted."""
    now = datetime.now(UTC)
    parts: list[DataFrame] = []

    def of(spec: TableSpec, kind: str, column: str, signature: str | None = None) -> None:
        table_ = load_delta(spark, spec, lakehouse)
        if table_ is None:
            return
        parts.append(
            table_.where(F.col("doc_id").isin(documents)).select(
                F.lit(kind).alias("kind"),
                F.col(column).alias("value"),
                (F.col(signature) if signature else F.lit(None).cast("array<int>")).alias("signature"),
            )
        )

    of(BRONZE_DOCUMENTS, "doc_id", "doc_id")
    of(BRONZE_DOCUMENTS, "content_sha256", "content_sha256")
    of(SILVER_DOCUMENTS, "text_sha256", "text_sha256")
    of(SILVER_MINHASH, "minhash", "doc_id", "signature")
    labels = spark.createDataFrame([(s,) for s in subject_labels], "value string").select(
        F.lit("subject").alias("kind"), "value", F.lit(None).cast("array<int>").alias("signature")
    )
    rows = labels
    for part in parts:
        rows = rows.unionByName(part)
    return (
        rows.where(F.col("value").isNotNull())
        .dropDuplicates(["kind", "value"])
        .select("kind", "value", "signature", F.lit(request_id).alias("request_id"), F.lit(now).alias("created_at"))
    )


def write_tombstones(spark: SparkSession, lakehouse: str | Path, rows: DataFrame) -> int:
    staged = rows.localCheckpoint(eager=True)
    table_ = ensure_table(spark, GOVERNANCE_TOMBSTONES, lakehouse)
    merge_rows(spark, table_, GOVERNANCE_TOMBSTONES.key, staged)
    return staged.count()


def tombstoned(spark: SparkSession, lakehouse: str | Path, docs: DataFrame) -> DataFrame | None:
    """The doc_ids of `docs` (doc_id, content_sha256) that an erasure tombstoned; None without tombstones."""
    stones = load_delta(spark, GOVERNANCE_TOMBSTONES, lakehouse)
    if stones is None:
        return None
    by_id = stones.where(F.col("kind") == "doc_id").select(F.col("value").alias("doc_id"))
    by_content = stones.where(F.col("kind") == "content_sha256").select(F.col("value").alias("content_sha256"))
    return (
        docs.join(by_id, "doc_id", "left_semi")
        .select("doc_id")
        .unionByName(docs.join(by_content, "content_sha256", "left_semi").select("doc_id"))
        .distinct()
    )


def record_request(spark: SparkSession, lakehouse: str | Path, row: dict[str, Any]) -> None:
    """Insert or update a request row (MERGE on request_id)."""
    full = {f.name: row.get(f.name) for f in GOVERNANCE_REQUESTS.schema.fields}
    write_few_rows(spark, GOVERNANCE_REQUESTS, lakehouse, [full])


@dataclass
class SnapshotAmendment:
    """A snapshot re-pinned after an erasure."""

    name: str
    version_before: int
    version_after: int
    members_removed: int
    rows: int
    content_digest_before: str
    content_digest_after: str
    stale_members: int  # members whose text at the new version differs from the one snapshotted

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def lost_words(spark: SparkSession, lakehouse: str | Path, documents: list[str]) -> dict[str, int]:
    """Training words each snapshot loses with `documents` (read before they are deleted)."""
    members = load_delta(spark, GOLD_SNAPSHOT_MEMBERS, lakehouse)
    texts = load_delta(spark, SILVER_DOCUMENTS, lakehouse)
    if members is None or texts is None:
        return {}
    members = members.where(F.col("doc_id").isin(documents))
    texts = texts.select("doc_id", "text")
    words = word_count("text") * F.col("repeats")
    rows = (
        members.where("split = 'train'")
        .join(texts, "doc_id")
        .groupBy("snapshot")
        .agg(F.sum(words).alias("w"))
        .collect()
    )
    return {r["snapshot"]: int(r["w"] or 0) for r in rows}


def repin_snapshots(
    spark: SparkSession,
    lakehouse: str | Path,
    vacuumed: dict[str, int],
    removed: dict[str, int],
    words_lost: dict[str, int],
    request_id: str,
) -> list[SnapshotAmendment]:
    """Snapshots cut from a vacuumed table now read its post-erasure version (`vacuumed`: table ->
    version). Rows, training examples, words and the content digest are recomputed from the
    members left; `stale_members` counts members whose text at the new version is not the one
    the snapshot recorded (changed by curation since it was cut)."""
    table_ = load_delta(spark, GOLD_SNAPSHOTS, lakehouse)
    members_all = load_delta(spark, GOLD_SNAPSHOT_MEMBERS, lakehouse)
    if not vacuumed or table_ is None or members_all is None:
        return []
    snapshots = [r.asDict() for r in table_.collect()]
    amendments, updates = [], []
    for snap in snapshots:
        if snap["source_table"] not in vacuumed:
            continue
        version = vacuumed[snap["source_table"]]
        members = members_all.where(F.col("snapshot") == F.lit(snap["name"]))
        source = (
            spark.read.format("delta")
            .option("versionAsOf", version)
            .load(table(snap["source_table"]).path(lakehouse))
            .select("doc_id", F.col("text_sha256").alias("_now"))
        )
        stale = members.join(source, "doc_id", "left").where(
            F.col("_now").isNull() | (F.col("_now") != F.col("text_sha256"))
        )
        lines = [r[0] for r in members.select(member_line()).collect()]
        train = members.where("split = 'train'").agg(F.sum("repeats")).first()[0]
        digest = digest_lines(lines)
        lost = removed.get(snap["name"], 0)
        amendments.append(
            SnapshotAmendment(
                name=snap["name"],
                version_before=int(snap["source_version"]),
                version_after=version,
                members_removed=lost,
                rows=len(lines),
                content_digest_before=snap["content_digest"],
                content_digest_after=digest,
                stale_members=stale.count(),
            )
        )
        amended = [a for a in (snap.get("amended_by") or "").split(",") if a] + [request_id]
        updates.append(
            snap
            | {
                "source_version": version,
                "rows": len(lines),
                "train_rows": int(train or 0),
                "words": max(0, int(snap["words"]) - words_lost.get(snap["name"], 0)),
                "tokens": snap["tokens"] if digest == snap["content_digest"] else None,
                "content_digest": digest,
                "amended_by": ",".join(amended),
            }
        )
    if updates:
        frame = spark.createDataFrame(updates, schema=GOLD_SNAPSHOTS.schema)
        merge_rows(
            spark, ensure_table(spark, GOLD_SNAPSHOTS, lakehouse), GOLD_SNAPSHOTS.key, frame, changed_when="true"
        )
    return amendments


RETRAIN = "retrain or retire: the weights were trained on the erased data"


@dataclass(frozen=True)
class ErasureCertificate:
    """The audit record of one erasure: what was found, what was deleted, purged and vacuumed,
    the tombstones, the snapshots re-pinned, and what stays pending (models that saw the data).
    Subjects appear only as keyed hashes."""

    request_id: str
    reason: str
    subjects: list[dict[str, Any]]
    requested_at: datetime
    completed_at: datetime
    policy: dict[str, Any]
    found: dict[str, Any]  # documents, rows per table, clusters, copies_left, snapshots
    deleted: list[TableErasure]
    tombstones: int
    snapshots_repinned: list[SnapshotAmendment]
    shards_dropped: list[str]
    runs: list[dict[str, Any]]  # training runs that read the data: run_id, kind, snapshot, tokens
    models: list[dict[str, Any]]  # their registered model versions: name, version, run_id
    landing: dict[str, Any] = field(default_factory=dict)  # the served model's landing files rewritten
    eval_samples_dropped: list[str] = field(default_factory=list)  # runs whose logged eval prompts held the data

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "reason": self.reason,
            "subjects": self.subjects,
            "requested_at": self.requested_at.isoformat(timespec="seconds"),
            "completed_at": self.completed_at.isoformat(timespec="seconds"),
            "policy": self.policy,
            "found": self.found,
            "deleted": [asdict(e) for e in self.deleted],
            "tombstones": self.tombstones,
            "snapshots_repinned": [a.as_json() for a in self.snapshots_repinned],
            "shards_dropped": self.shards_dropped,
            "landing": self.landing,
            "eval_samples_dropped": self.eval_samples_dropped,
            "mlflow_tagged": {"runs": [r["run_id"] for r in self.runs], "models": self.models},
            "pending": {
                "models": [
                    {
                        "run_id": r["run_id"],
                        "kind": r["kind"],
                        "snapshot": r["snapshot"],
                        "tokens": r["tokens"],
                        "models": [m for m in self.models if m["run_id"] == r["run_id"]],
                        "action": RETRAIN,
                    }
                    for r in self.runs
                ],
            },
        }

    def text(self) -> str:
        """The certificate as stored: sorted, indented JSON (its sha256 is the request's digest)."""
        return json.dumps(self.as_json(), indent=2, sort_keys=True, default=str)

    def write(self, folder: Path) -> tuple[Path, str]:
        """The certificate written to `<folder>/<request_id>.json`; (path, sha256 of its text)."""
        text = self.text()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.request_id}.json"
        path.write_text(text, encoding="utf-8")
        return path, hashlib.sha256(text.encode()).hexdigest()


def drop_shards(lakehouse: Any, snapshots: list[str]) -> list[str]:
    """Delete the token shards cut from `snapshots` (they hold the erased text); returns the folders."""
    dropped = []
    for name in snapshots:
        folder = shards_folder(lakehouse, name)
        if folder.is_dir():
            shutil.rmtree(folder)
            dropped.append(str(folder))
    return dropped
