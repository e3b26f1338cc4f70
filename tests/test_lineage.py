"""Data subject requests end to end: find a person across sources, snapshots and a trained model,
erase them, and prove it by reading every file under the lakehouse."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner
from curation_data import prose

from conftest import make_config, write_jsonl, write_manifest
from jobs.cli import cli
from jobs.curate import run_curate
from jobs.ingest import run_ingest
from jobs.snapshot import create_snapshot
from jobs.subject_requests import subject_forms
from jobs.train import prepare_tokens, pretrain
from lineage.catalog import LINEAGE_EDGES, TABLES
from lineage.snapshots import SnapshotSpec
from lineage.tables import read_table
from trainers.loop import TrainSettings

KEY = b"millpond-test-key-0123456789abcdef"
EMAIL = "Alice.Smith@example.com"
PHONE = "(646) 555-0142"
POST = (
    " My neighbour swears the cracked sundial keeps better time than the church clock on Marrowbone Lane,"
    " and every April I plant seventeen indigo tulips around its plinth."
)
MENTION = " For tickets, phone the quilting circle organiser on 646.555.0142 before the Harvest Fair."
# What must not survive the erasure anywhere under the lakehouse (compared in lower case).
NEEDLES = (
    "alice.smith@example.com",
    "555-0142",
    "5550142",
    "555.0142",
    "u-alice",
    "marrowbone lane",
    "seventeen indigo tulips",
    "quilting circle organiser",
    "orchid greenhouse",
)
STAGES = ["normalize", "license", "exact_dedup", "fuzzy_dedup", "pii"]


def test_subject_forms_normalize_and_key_each_kind_of_identifier() -> None:
    email = subject_forms(" Alice.Smith@EXAMPLE.com ", KEY)
    assert email.kind == "EMAIL_ADDRESS" and email.text_literals == ("alice.smith@example.com",)
    assert email.label == subject_forms("alice.smith@example.com", KEY).label
    phone = subject_forms("+1 646 555 0142", KEY)
    assert phone.kind == "PHONE_NUMBER" and phone.label == subject_forms(PHONE, KEY).label
    assert set(phone.clear_digits) == {"16465550142", "6465550142"}
    import re

    for layout in ("646.555.0142", "+1 (646) 555-0142", "1-646-555-0142", "tel:6465550142"):
        assert re.search(phone.text_patterns[0], layout), layout
    assert not re.search(phone.text_patterns[0], "96465550142")  # digits of another number
    user = subject_forms("x' OR '1'='1", KEY)
    assert user.kind == "SUBJECT_ID" and user.clear == ("x' OR '1'='1",) and not user.text_patterns


def _files_text(root: Path) -> dict[Path, str]:
    """Every file under root as lower-case text: Parquet decoded, gzip and zstd decompressed."""
    out = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        parts = [raw]
        if raw[:2] == b"\x1f\x8b":
            parts.append(gzip.decompress(raw))
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            parts.append(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
        if raw[:4] == b"PAR1":
            parts.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
        out[path] = b"\n".join(parts).decode("utf-8", errors="replace").lower()
    return out


def _leaks(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}: {n}" for p, text in _files_text(root).items() for n in NEEDLES if n in text]


def _rows_by_table(lakehouse: Path) -> dict[str, list[str]]:
    """Every row of every catalog table, as sorted JSON strings."""
    out = {}
    for name, spec in TABLES.items():
        rows = read_table(spec, lakehouse)
        if rows is not None:
            out[name] = sorted(json.dumps(r, default=str, sort_keys=True) for r in rows.to_pylist())
    return out


def _names(row: str, documents: set[str]) -> bool:
    return any(d in row for d in documents)


def _invoke(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_person_is_found_everywhere_and_erased_for_good(spark, tmp_path: Path, lakehouse: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the MLflow store lives under the lakehouse
    inbox = tmp_path / "in"
    others = [{"id": f"f{i}", "user_id": f"u-{n}", "text": prose(20 + i)} for i, n in enumerate(["bob", "carol"] * 5)]
    write_jsonl(
        inbox / "forum.jsonl",
        [
            {"id": "a1", "user_id": "u-alice", "text": prose(11) + f" Write to {EMAIL} or call {PHONE}."},
            {"id": "a2", "user_id": "u-alice", "text": prose(12) + POST},
            {"id": "a3", "user_id": "u-alice", "text": prose(13) + " I keep an orchid greenhouse behind the mill."},
            *others,
        ],
    )
    write_jsonl(
        inbox / "mirror.jsonl",
        [
            {"id": "copy", "text": prose(12) + POST + " Reposted."},  # a near duplicate of a2, no subject
            {"id": "mention", "text": prose(14) + MENTION},  # her phone number in another layout
            *[{"id": f"m{i}", "text": prose(40 + i)} for i in range(8)],
        ],
    )
    common = {"format": "jsonl", "id_field": "id", "license": "CC-BY-4.0", "consent": ["pretraining"]}
    manifest = write_manifest(
        inbox / "sources.toml",
        [
            {"name": "forum", "path": "forum.jsonl", "subject_fields": ["user_id"], **common},
            {"name": "mirror", "path": "mirror.jsonl", **common},
        ],
    )
    config = make_config(lakehouse)
    run_ingest(spark, config, manifest)
    run_curate(spark, config, STAGES)
    create_snapshot(spark, config, SnapshotSpec("dsr-v1", validation=0.0, test=0.0))
    tokens = prepare_tokens(config, "dsr-v1", None, None)
    trained = pretrain(config, "dsr-v1", TrainSettings(max_steps=2, seq_len=32, micro_batch=2, warmup=1), tokens)
    assert _leaks(lakehouse) != []  # the needles are there to be found before the erasure

    base = ["--lakehouse", str(lakehouse)]
    # An identifier is data, never SQL: a quote trick matches nothing and erases nothing.
    tricky = _invoke(*base, "lineage", "find", "--subject", "x' OR '1'='1", "--json")
    assert tricky["documents"] == [] and tricky["rows"] == {} and tricky["snapshots"] == []

    subjects = ["--subject", "u-alice", "--subject", EMAIL.upper(), "--subject", "+1 646 555 0142"]
    found = _invoke(*base, "lineage", "find", *subjects, "--json")
    bronze = {r["record_id"]: r["doc_id"] for r in read_table(TABLES["bronze.documents"], lakehouse).to_pylist()}
    theirs = {bronze[k] for k in ("a1", "a2", "a3", "copy", "mention")}
    assert set(found["documents"]) == theirs
    assert {bronze["a1"], bronze["a2"], bronze["a3"], bronze["mention"]} <= set(found["seeds"])
    assert bronze["copy"] not in found["seeds"]  # found through its duplicate cluster only
    assert any({bronze["a2"], bronze["copy"]} <= set(m) for m in found["clusters"].values())
    assert set(found["rows"]["bronze.documents"]) == theirs
    assert {
        "silver.documents",
        "silver.decisions",
        "silver.pii_index",
        "gold.snapshot_members",
        "lineage.edges",
    } <= set(found["rows"])
    assert found["snapshots"][0]["name"] == "dsr-v1" and found["snapshots"][0]["members"] >= 4
    run = next(r for r in found["runs"] if r["run_id"] == trained["run_id"])
    assert run["tokens"] > 0 and run["tokens"] < run["train_tokens"]
    assert {"name": "millpond-pretrain-dsr-v1", "version": "1", "run_id": trained["run_id"]} in found["models"]

    before = _rows_by_table(lakehouse)
    dry = _invoke(*base, "lineage", "erase", *subjects, "--reason", "GDPR art. 17, ticket 881", "--dry-run", "--json")
    assert dry["dry_run"] is True and dry["plan"]["drop_shards_of"] == ["dsr-v1"]
    assert _rows_by_table(lakehouse) == before  # a dry run changes nothing

    refused = CliRunner().invoke(cli, [*base, "lineage", "erase", *subjects, "--reason", f"asked by {EMAIL}"])
    assert refused.exit_code != 0  # the reason may not carry the identifiers into the audit trail

    certificate = _invoke(*base, "lineage", "erase", *subjects, "--reason", "GDPR art. 17, ticket 881", "--json")

    # No file under the lakehouse holds her identifiers or her texts: data files, transaction logs,
    # checkpoints, change data, shards, the MLflow store and its artifacts, the certificate.
    assert _leaks(lakehouse) == []
    # Every other row of every table is still there; hers are gone.
    after = _rows_by_table(lakehouse)
    for name, rows in before.items():
        if name in ("lineage.runs", "gold.snapshots", "governance.requests", "governance.tombstones"):
            continue  # bookkeeping of the erasure itself, checked below
        kept = [r for r in rows if not _names(r, theirs)]
        assert after[name] == kept, name
        if TABLES[name].document_columns and name != LINEAGE_EDGES.name:
            assert len(kept) < len(rows) or name == "silver.minhash", name
    # Time travel cannot bring them back: the old versions' files are vacuumed.
    for name in ("bronze.documents", "silver.documents"):
        try:
            old = spark.read.format("delta").option("versionAsOf", 0).load(TABLES[name].path(lakehouse)).collect()
        except Exception:  # noqa: BLE001 - the files of version 0 are gone, as they must be
            continue
        assert not [r for r in old if r["doc_id"] in theirs], name

    # The certificate: what was deleted and vacuumed, and the run that saw her data, still pending.
    assert set(certificate["found"]["documents"]) == theirs
    deleted = {d["table"]: d for d in certificate["deleted"]}
    assert deleted["bronze.documents"]["rows_deleted"] == 5 and deleted["bronze.documents"]["retention_hours"] == 0
    assert all(d["vacuumed_at"] and d["purged"] for d in certificate["deleted"])
    pending = {m["run_id"]: m for m in certificate["pending"]["models"]}
    assert pending[trained["run_id"]]["tokens"] == run["tokens"]
    assert pending[trained["run_id"]]["models"][0]["name"] == "millpond-pretrain-dsr-v1"
    saved = Path(certificate["certificate_file"])
    assert saved.is_file() and json.loads(saved.read_text())["request_id"] == certificate["request_id"]
    requests = read_table(TABLES["governance.requests"], lakehouse).to_pylist()
    assert [r["status"] for r in requests] == ["completed"] and requests[0]["reason"] == "GDPR art. 17, ticket 881"
    import mlflow

    tags = mlflow.MlflowClient(certificate_tracking(lakehouse)).get_run(trained["run_id"]).data.tags
    assert f"millpond.erasure.{certificate['request_id']}" in tags
    snapshot = read_table(TABLES["gold.snapshots"], lakehouse).to_pylist()[0]
    assert snapshot["amended_by"] == certificate["request_id"] and not (lakehouse / "_shards" / "dsr-v1").exists()

    # Re-ingesting the same files does not bring her records back; they are counted as tombstoned.
    again = run_ingest(spark, config, manifest)
    assert (again.tombstoned, again.ingested) == (5, 0)
    assert run_curate(spark, config, STAGES).mode == "nothing_new"  # curation's watermark steps over the erasure
    # The snapshot's shards are rebuilt on next use, from what is left.
    rebuilt = prepare_tokens(config, "dsr-v1", None, None)
    listed = pq.read_table(Path(rebuilt["folder"]) / "documents.parquet").column("doc_id").to_pylist()
    assert not rebuilt["cached"] and listed and not theirs & set(listed)
    # Asked again, lineage finds nothing left, and names the earlier erasure and what it left pending.
    later = _invoke(*base, "lineage", "find", *subjects, "--json")
    assert later["documents"] == [] and later["requests"][0]["request_id"] == certificate["request_id"]
    assert trained["run_id"] in {m["run_id"] for m in later["requests"][0]["pending"]["models"]}


def certificate_tracking(lakehouse: Path) -> str:
    return f"sqlite:///{lakehouse / '_mlflow' / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _quiet_tokenizers(monkeypatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_duplicate_policy_decides_whether_cluster_copies_go(spark, lakehouse: Path) -> None:
    from lineage.edges import edges, insert_edges
    from lineage.subjects import close_over_edges

    # a (hers) was kept; b and c were dropped as its near duplicates; d derives from c; e is unrelated.
    rows = [("b", "a", "duplicate_of", "near:a"), ("c", "a", "duplicate_of", "near:a"), ("d", "c", "pair_of", None),
            ("e", "f", "duplicate_of", "near:f")]  # fmt: skip
    frame = spark.createDataFrame(rows, "child string, parent string, relation string, cluster string")
    insert_edges(
        spark,
        lakehouse,
        edges(frame, child="child", child_table="bronze.documents", parent="parent", parent_table="silver.documents",
              relation=frame["relation"], run_id="curate-test", table_version=1, cluster="cluster"),
    )  # fmt: skip
    everything, clusters, left = close_over_edges(spark, lakehouse, {"a"}, "copies")
    assert everything == {"a", "b", "c", "d"} and clusters == {"near:a": ["a", "b", "c"]} and left == set()
    own, clusters, left = close_over_edges(spark, lakehouse, {"b"}, "own")
    assert own == {"b"} and clusters == {"near:a": ["a", "b", "c"]} and left == {"a", "c"}


def test_a_table_added_to_the_catalog_later_is_searched_and_erased(spark, lakehouse: Path, monkeypatch) -> None:
    from pyspark.sql import types as T

    from lineage import catalog
    from lineage.erasure import erase_documents
    from lineage.subjects import ErasurePolicy, find_lineage
    from lineage.tables import ensure_table

    pairs = catalog.TableSpec(
        name="silver.preferences",
        schema=T.StructType(
            [T.StructField(n, T.StringType()) for n in ("pair_id", "doc_id", "user_id", "chosen", "rejected")]
        ),
        key=("pair_id",),
        description="a table a later issue adds",
        subject_columns=("user_id",),
        document_columns=("doc_id",),
    )
    monkeypatch.setitem(catalog.TABLES, pairs.name, pairs)
    ensure_table(spark, pairs, lakehouse)
    rows = [("p1", "d1", "u-zed", "yes", "no"), ("p2", "d2", "u-amy", "fine", "bad"), ("p3", "d1", None, "a", "b")]
    spark.createDataFrame(rows, pairs.schema).write.format("delta").mode("append").save(pairs.path(lakehouse))

    found = find_lineage(spark, lakehouse, [subject_forms("u-zed", KEY)], ErasurePolicy())
    assert found.documents == ["d1"] and found.row_counts == {"silver.preferences": 2}
    erased = erase_documents(spark, lakehouse, found.documents, 0)
    assert [(e.table, e.rows_deleted) for e in erased] == [("silver.preferences", 2)]
    assert read_table(pairs, lakehouse).column("pair_id").to_pylist() == ["p2"]


def test_run_records_of_concurrent_jobs_all_land_and_spark_reads_them(spark, lakehouse: Path) -> None:
    """`lineage.runs` is written with delta-rs (`write_few_rows`): a table made before the catalog's
    last column still takes rows (Spark adds the column first), runs that start and end at the same
    time all land (a MERGE that lost the race is tried again), a failed run keeps its error, and
    Spark reads what delta-rs wrote."""
    import dataclasses
    import threading

    from pyspark.sql import types as T

    from lineage.catalog import LINEAGE_RUNS
    from lineage.runs import Run, recorded_run
    from lineage.tables import ensure_table

    older = dataclasses.replace(LINEAGE_RUNS, schema=T.StructType(LINEAGE_RUNS.schema.fields[:-1]))
    ensure_table(spark, older, lakehouse)
    with recorded_run(spark, lakehouse, Run(job="upgrade", config_digest="c", params={})):
        pass
    assert "reports" in spark.read.format("delta").load(LINEAGE_RUNS.path(lakehouse)).columns

    failures: list[BaseException] = []

    def job(k: int) -> None:
        try:
            with recorded_run(spark, lakehouse, Run(job=f"job-{k}", config_digest="c", params={"k": k})) as run:
                run.counts = {"k": k}
                if k == 3:
                    raise ValueError("three fails")
        except ValueError:
            pass
        except BaseException as err:  # anything else is the test's failure
            failures.append(err)

    threads = [threading.Thread(target=job, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    rows = {r["job"]: r for r in read_table(LINEAGE_RUNS, lakehouse).to_pylist() if r["job"] != "upgrade"}
    assert sorted(rows) == [f"job-{k}" for k in range(6)]
    assert {k: r["status"] for k, r in rows.items() if r["status"] != "succeeded"} == {"job-3": "failed"}
    assert rows["job-3"]["error"] == "ValueError: three fails" and dict(rows["job-5"]["counts"]) == {"k": 5}
    in_spark = spark.read.format("delta").load(LINEAGE_RUNS.path(lakehouse))
    assert sorted(r["job"] for r in in_spark.where("status = 'succeeded' AND ended_at IS NOT NULL").collect()) == [
        *(f"job-{k}" for k in range(6) if k != 3),
        "upgrade",
    ]
