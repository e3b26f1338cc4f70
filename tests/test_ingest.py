"""Ingest on real Spark + Delta: nasty input, reconciliation, idempotency, stable ids, interop."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner
from deltalake import DeltaTable as RsDeltaTable

from conftest import TEST_MAX_RECORD_BYTES, make_config, write_jsonl, write_manifest
from jobs.cli import cli
from jobs.ingest import run_ingest
from lineage.catalog import BRONZE_DOCUMENTS, LINEAGE_RUNS, QUARANTINE_RECORDS
from lineage.data_files import ConcurrentWriteError
from lineage.tables import read_table, write_few_rows

# Where each bad input must land: (source, locator) -> reason.
EXPECTED_QUARANTINE = {
    ("web", "mixed.jsonl:2"): "malformed_json",
    ("web", "mixed.jsonl:3"): "invalid_utf8",
    ("web", "mixed.jsonl:4"): "missing_text",
    ("web", "mixed.jsonl:5"): "empty_text",
    ("web", "mixed.jsonl:6"): "non_string_text",
    ("web", "mixed.jsonl:7"): "record_too_large",
    ("web", "empty.jsonl"): "empty_file",
    ("web", "gone.jsonl"): "unreadable_file",
    ("web", "cut.jsonl.gz:{cut}"): "corrupt_file",
    ("web", "cut.jsonl.zst:{cutz}"): "corrupt_file",
    ("docs", "binary.txt"): "invalid_utf8",
    ("docs", "empty.txt"): "empty_file",
    ("pages", "nav.html"): "empty_text",
    ("table", "rows.parquet#row=1"): "missing_text",
    ("table", "junk.parquet"): "corrupt_file",
    ("forum", "posts.jsonl:3"): "duplicate_record_id",
}


def _random_lines(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"text": f"doc {seed}-{i}: " + " ".join(str(rng.random()) for _ in range(10))} for i in range(n)]


@pytest.fixture
def nasty(tmp_path: Path) -> dict[str, Any]:
    """A directory of every kind of bad input, beside good records in the same files."""
    raw = tmp_path / "raw"
    web = raw / "web"
    write_jsonl(
        web / "good.jsonl",
        [{"text": f"good record {i}", "url": f"https://e.x/{i}", "author": "Alice@Example.com"} for i in range(5)]
        + [""],
    )
    (web / "mixed.jsonl").write_bytes(
        b"\n".join(
            [
                json.dumps({"text": "fine one"}).encode(),
                b'{"text": "cut off',
                b'{"text": "bad \xff bytes"}',
                json.dumps({"body": "no text"}).encode(),
                json.dumps({"text": ""}).encode(),
                json.dumps({"text": ["not", "a", "string"]}).encode(),
                json.dumps({"text": "x" * 10_000}).encode(),
                json.dumps({"text": "fine two"}).encode(),
            ]
        )
        + b"\n"
    )
    write_jsonl(web / "packed.jsonl.gz", [{"text": f"gz {i}"} for i in range(3)], opener=gzip.open)
    payload = b"".join(json.dumps(r).encode() + b"\n" for r in _random_lines(3000, 1))
    packed = gzip.compress(payload)
    (web / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    packed_z = zstandard.ZstdCompressor().compress(payload)
    (web / "cut.jsonl.zst").write_bytes(packed_z[: len(packed_z) // 2])
    (web / "empty.jsonl").write_bytes(b"")
    (web / "gone.jsonl").symlink_to(web / "missing-target.jsonl")

    docs = raw / "docs"
    docs.mkdir()
    (docs / "readme.txt").write_text("A plain text document about lakehouses.\n")
    (docs / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (docs / "empty.txt").write_bytes(b"")

    pages = raw / "pages"
    pages.mkdir()
    (pages / "story.html").write_text(
        "<html><head><title>Story</title></head><body><nav>Home | Login</nav><article><h1>Delta</h1><p>"
        + "Delta tables keep every version of the data, so a training run can pin one. " * 5
        + "</p></article></body></html>"
    )
    (pages / "nav.html").write_text("<html><head><script>var x = 1;</script></head><body></body></html>")

    table = raw / "table"
    table.mkdir()
    pq.write_table(
        pa.table({"content": ["row zero", None, "row two"], "lic": ["MIT", "MIT", None]}), table / "rows.parquet"
    )
    (table / "junk.parquet").write_bytes(b"PAR1 not really parquet")

    forum = raw / "forum"
    write_jsonl(
        forum / "posts.jsonl",
        [
            {"post_id": "p1", "body": "first post", "email": "Bob@Example.org"},
            {"post_id": "p2", "body": "second post", "email": ["carol@example.net", "dave@example.net"]},
            {"post_id": "p1", "body": "same id again"},
        ],
    )
    manifest = write_manifest(
        tmp_path / "sources.toml",
        [
            {
                "name": "web",
                "path": "raw/web",
                "format": "jsonl",
                "license": "CC-BY-4.0",
                "subject_fields": ["author"],
                "consent": ["pretraining"],
                "domain": "web",
            },
            {"name": "docs", "path": "raw/docs", "format": "text", "license": "MIT"},
            {"name": "pages", "path": "raw/pages/*.html", "format": "html"},
            {
                "name": "table",
                "path": "raw/table",
                "format": "parquet",
                "text_field": "content",
                "license_field": "lic",
                "license": "Apache-2.0",
            },
            {
                "name": "forum",
                "path": "raw/forum/posts.jsonl",
                "format": "jsonl",
                "text_field": "body",
                "id_field": "post_id",
                "subject_fields": ["email"],
            },
        ],
    )
    return {"manifest": manifest, "raw": raw, "payload_lines": 3000}


def _bronze(lakehouse: Path, version: int | None = None) -> list[dict[str, Any]]:
    table = read_table(BRONZE_DOCUMENTS, lakehouse, version=version)
    return [] if table is None else table.to_pylist()


def test_nasty_input_is_quarantined_by_reason_and_good_records_kept(spark, lakehouse: Path, nasty) -> None:
    config = make_config(lakehouse)
    report = run_ingest(spark, config, nasty["manifest"])

    quarantine = read_table(QUARANTINE_RECORDS, lakehouse).to_pylist()
    found = {(r["source"], r["locator"]): r["reason"] for r in quarantine}
    cut = {k: v for k, v in found.items() if ".jsonl.gz:" in k[1] or ".jsonl.zst:" in k[1]}
    assert sorted(cut.values()) == ["corrupt_file", "corrupt_file"]
    expected = {k: v for k, v in EXPECTED_QUARANTINE.items() if "{" not in k[1]}
    assert {k: v for k, v in found.items() if k not in cut} == expected
    for row in quarantine:
        assert row["detail"] and row["source_uri"].startswith("file://") and row["ingest_run_id"] == report.run_id

    bronze = _bronze(lakehouse)
    by_locator = {(r["source"], r["locator"]): r for r in bronze}
    # good records next to bad ones in the same file are kept
    assert by_locator[("web", "mixed.jsonl:1")]["text"] == "fine one"
    assert by_locator[("web", "mixed.jsonl:8")]["text"] == "fine two"
    cut_gz = sorted(int(loc.split(":")[1]) for s, loc in by_locator if loc.startswith("cut.jsonl.gz:"))
    assert cut_gz == list(range(1, len(cut_gz) + 1)) and 0 < len(cut_gz) < nasty["payload_lines"]
    assert ("web", f"cut.jsonl.gz:{len(cut_gz) + 1}") in found

    # reconciliation: read = ingested + unchanged + quarantined, and matches the tables
    assert report.read == report.ingested + report.unchanged + report.quarantined
    assert report.ingested == len(bronze) and report.unchanged == 0
    assert report.quarantined == len(quarantine)
    assert report.quarantine_reasons["corrupt_file"] == 3

    # provenance, license, subjects, consent
    web = by_locator[("web", "good.jsonl:1")]
    assert web["license"] == "CC-BY-4.0" and web["license_source"] == "declared"
    assert web["subject_ids"] == ["alice@example.com"] and web["consent"] == ["pretraining"]
    assert dict(web["metadata"])["url"] == "https://e.x/0" and web["domain"] == "web"
    assert web["content_sha256"] and len(web["doc_id"]) == 32
    table_rows = {r["locator"]: r for r in bronze if r["source"] == "table"}
    assert table_rows["rows.parquet#row=0"]["license_source"] == "field"
    assert table_rows["rows.parquet#row=2"]["license"] == "Apache-2.0"
    assert table_rows["rows.parquet#row=2"]["license_source"] == "declared"
    assert by_locator[("pages", "story.html")]["license_source"] == "unknown"
    assert "keep every version" in by_locator[("pages", "story.html")]["text"]
    assert "Home | Login" not in by_locator[("pages", "story.html")]["text"]
    forum = {r["record_id"]: r for r in bronze if r["source"] == "forum"}
    assert forum["p1"]["text"] == "first post" and forum["p1"]["locator"] == "posts.jsonl:1"
    assert forum["p2"]["subject_ids"] == ["carol@example.net", "dave@example.net"]

    # the run is on record with its counts
    runs = read_table(LINEAGE_RUNS, lakehouse).to_pylist()
    assert [(r["run_id"], r["status"]) for r in runs] == [(report.run_id, "succeeded")]
    counts = dict(runs[0]["counts"])
    assert counts["read"] == report.read and counts["quarantined:corrupt_file"] == 3
    assert dict(runs[0]["output_versions"])["bronze.documents"] == report.versions["bronze.documents"]


def test_a_first_load_in_one_pass_gives_the_tables_the_cached_path_gives(
    spark, tmp_path: Path, nasty, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty bronze, documents stream from the readers into the MERGE while quarantine
    entries and counts are set aside; the tables and the report are those of the cached path."""
    import ingestion.load as load

    sources = tuple(s.name for s in load.load_manifest(nasty["manifest"]) if not s.id_field)
    plan = load.plan_ingest(nasty["manifest"], sources)
    one_pass, cached = tmp_path / "one-pass", tmp_path / "cached"
    with monkeypatch.context() as patched:
        patched.setattr(load, "_load_through_cache", None)  # the one-pass path or a TypeError
        first = run_ingest(spark, make_config(one_pass), plan)
    with monkeypatch.context() as patched:
        patched.setattr(load, "_empty_bronze_version", lambda *args: None)
        second = run_ingest(spark, make_config(cached), plan)

    def same(report: Any) -> dict[str, Any]:
        return {k: v for k, v in report.as_json().items() if k != "run_id"}

    assert same(first) == same(second) and first.quarantined >= 10 and first.ingested > 2000
    stamps = {"ingested_at", "ingest_run_id", "quarantined_at"}
    for spec in (BRONZE_DOCUMENTS, QUARANTINE_RECORDS):
        rows = [
            sorted(
                ({k: v for k, v in r.items() if k not in stamps} for r in read_table(spec, lh).to_pylist()),
                key=lambda r: r[spec.key[0]],
            )
            for lh in (one_pass, cached)
        ]
        assert rows[0] == rows[1]
    assert not list((one_pass / "_staging" / "ingest").glob("*"))  # what the readers set aside is gone
    # one commit of the readers' data files, named for the run, with Spark's WRITE metrics
    commit = RsDeltaTable(BRONZE_DOCUMENTS.path(one_pass)).history(1)[0]
    assert commit["operation"] == "WRITE" and commit["millpond.run_id"] == first.run_id
    assert commit["operationMetrics"]["numOutputRows"] == str(first.ingested)


def test_a_first_load_with_record_ids_in_one_pass_unless_an_id_repeats(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source's own record ids keep the first load in one pass (the same tables as the cached
    path); when an id repeats within the batch, the written files are dropped and the batch goes
    through the cache, which keeps the first record of each id and quarantines the others."""
    import ingestion.load as load

    records = [{"key": f"k{i}", "text": f"text {i}", "who": f"u{i % 3}@example.org"} for i in range(40)]
    data = write_jsonl(tmp_path / "in" / "a.jsonl", records)
    source = {"name": "a", "path": str(data), "format": "jsonl", "id_field": "key", "subject_fields": ["who"]}
    manifest = write_manifest(tmp_path / "m.toml", [source])
    one_pass, cached = tmp_path / "one-pass", tmp_path / "cached"
    first = run_ingest(spark, make_config(one_pass), manifest)
    with monkeypatch.context() as patched:
        patched.setattr(load, "_empty_bronze_version", lambda *args: None)
        second = run_ingest(spark, make_config(cached), manifest)
    assert RsDeltaTable(BRONZE_DOCUMENTS.path(one_pass)).history(1)[0]["operation"] == "WRITE"
    assert {k: v for k, v in first.as_json().items() if k != "run_id"} == {
        k: v for k, v in second.as_json().items() if k != "run_id"
    }
    assert first.new == 40

    def rows(lakehouse: Path) -> list[dict[str, Any]]:
        stamps = ("ingested_at", "ingest_run_id")
        return sorted(({k: v for k, v in r.items() if k not in stamps} for r in _bronze(lakehouse)), key=str)

    assert rows(one_pass) == rows(cached) and {r["record_id"] for r in rows(one_pass)} == {f"k{i}" for i in range(40)}

    write_jsonl(data, [*records, {"key": "k7", "text": "k7 again, later in the file"}])
    repeated = tmp_path / "repeated"
    report = run_ingest(spark, make_config(repeated), manifest)
    assert (report.new, report.quarantine_reasons) == (40, {"duplicate_record_id": 1})
    assert {r["record_id"]: r["text"] for r in _bronze(repeated)}["k7"] == "text 7"  # the first one
    bronze = RsDeltaTable(BRONZE_DOCUMENTS.path(repeated))
    assert bronze.history(1)[0]["operation"] == "MERGE"
    # the one-pass attempt's files were dropped: every data file in the folder is committed
    on_disk = {p.name for p in Path(BRONZE_DOCUMENTS.path(repeated)).glob("*.parquet")}
    assert on_disk == {Path(uri).name for uri in bronze.file_uris()}


def test_a_first_load_another_writer_got_ahead_of_commits_nothing(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows made for an empty bronze are not added to a bronze that another writer filled in the
    meantime: the run fails with a message that says so, and leaves no files of its own."""
    import ingestion.load as load

    data = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": f"text {i}"} for i in range(50)])
    manifest = write_manifest(tmp_path / "m.toml", [{"name": "a", "path": str(data), "format": "jsonl"}])
    lakehouse = tmp_path / "lakehouse"
    other = {"doc_id": "other", "record_id": "r", "text": "t", "source": "b", "source_uri": "file:///b"}
    other |= {"locator": "b:1", "ingested_at": datetime.now(UTC), "ingest_run_id": "other-run"}
    other |= {"content_sha256": "0" * 64, "license_source": "unknown"}
    write_documents = load.write_documents

    def beaten(*args: Any) -> Any:
        written = write_documents(*args)
        write_few_rows(spark, BRONZE_DOCUMENTS, lakehouse, [other], append=True)
        return written

    monkeypatch.setattr(load, "write_documents", beaten)
    with pytest.raises(ConcurrentWriteError, match="bronze/documents changed while this job wrote"):
        run_ingest(spark, make_config(lakehouse), manifest)
    bronze = RsDeltaTable(BRONZE_DOCUMENTS.path(lakehouse))
    assert [r["doc_id"] for r in bronze.to_pyarrow_table().to_pylist()] == ["other"]
    assert {Path(uri).name for uri in bronze.file_uris()} == {
        p.name for p in Path(BRONZE_DOCUMENTS.path(lakehouse)).glob("*.parquet")
    }
    assert [r["status"] for r in read_table(LINEAGE_RUNS, lakehouse).to_pylist()] == ["failed"]


def test_reingest_adds_nothing_and_a_changed_record_is_updated(spark, lakehouse: Path, tmp_path: Path) -> None:
    config = make_config(lakehouse)
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": i, "text": f"text {i}"} for i in range(20)])
    manifest = write_manifest(
        tmp_path / "m.toml", [{"name": "a", "path": str(data), "format": "jsonl", "id_field": "id"}]
    )
    first = run_ingest(spark, config, manifest)
    assert (first.new, first.updated, first.unchanged) == (20, 0, 0)
    version = first.versions["bronze.documents"]
    ids = {r["record_id"]: r["doc_id"] for r in _bronze(lakehouse)}

    again = run_ingest(spark, config, manifest)
    assert (again.ingested, again.unchanged, again.quarantined) == (0, 20, 0)
    assert again.versions["bronze.documents"] == version  # nothing new: no commit at all

    records = [{"id": i, "text": f"text {i}"} for i in range(20)]
    records[3]["text"] = "text three, edited"
    records.append({"id": 99, "text": "a new one"})
    records.reverse()  # moved around in the file: ids come from id_field, not position
    write_jsonl(data, records)
    changed = run_ingest(spark, config, manifest)
    # record 3 changed its text; the others moved to other lines, so their locator (provenance)
    # changed too, except record 10, which stayed on line 11
    assert (changed.new, changed.updated, changed.unchanged) == (1, 19, 1)
    bronze = {r["record_id"]: r for r in _bronze(lakehouse)}
    assert len(bronze) == 21
    assert bronze["3"]["text"] == "text three, edited" and bronze["3"]["doc_id"] == ids["3"]
    assert all(bronze[k]["doc_id"] == v for k, v in ids.items())


def test_doc_ids_do_not_depend_on_partitioning(spark, lakehouse: Path, tmp_path: Path) -> None:
    files = [write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", _random_lines(50, i)) for i in range(6)]
    big: list[Any] = _random_lines(400, 99)
    big[123] = "{broken"
    files.append(write_jsonl(tmp_path / "in" / "big.jsonl", big))
    manifest = write_manifest(tmp_path / "m.toml", [{"name": "p", "path": str(tmp_path / "in"), "format": "jsonl"}])
    one_task = run_ingest(spark, make_config(lakehouse, task_bytes=1 << 40, batch_rows=7), manifest)
    # ~4 KB byte ranges: every file is cut into several ranges read by separate Spark tasks
    many = tmp_path / "lakehouse-many"
    many_tasks = run_ingest(spark, make_config(many, task_bytes=4096, batch_rows=1000), manifest)
    assert one_task.ingested == many_tasks.ingested == 699 and len(files) == 7
    assert one_task.quarantined == many_tasks.quarantined == 1
    key = lambda rows: sorted((r["doc_id"], r["locator"], r["content_sha256"]) for r in rows)  # noqa: E731
    assert key(_bronze(lakehouse)) == key(_bronze(many))
    assert ("p", "big.jsonl:124") in {
        (r["source"], r["locator"]) for r in read_table(QUARANTINE_RECORDS, many).to_pylist()
    }


def test_no_personal_data_in_the_delta_log(spark, lakehouse: Path, tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "in" / "p.jsonl",
        [{"id": "zed@secret.example", "text": "Call Zed Zebulon at +1 646 555 0199", "who": "zed@secret.example"}],
    )
    manifest = write_manifest(
        tmp_path / "m.toml",
        [{"name": "p", "path": str(data), "format": "jsonl", "id_field": "id", "subject_fields": ["who"]}],
    )
    run_ingest(spark, make_config(lakehouse), manifest)
    assert _bronze(lakehouse)[0]["subject_ids"] == ["zed@secret.example"]
    for log in (lakehouse / "bronze" / "documents" / "_delta_log").glob("*.json"):
        text = log.read_text()
        assert "zed@secret.example" not in text and "Zebulon" not in text and "555 0199" not in text


def test_bronze_reads_without_a_jvm_at_two_versions(spark, lakehouse: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": f"v1 {i}"} for i in range(4)])
    manifest = write_manifest(tmp_path / "m.toml", [{"name": "a", "path": str(tmp_path / "in"), "format": "jsonl"}])
    first = run_ingest(spark, make_config(lakehouse), manifest).versions["bronze.documents"]
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": f"v2 {i}"} for i in range(3)])
    second = run_ingest(spark, make_config(lakehouse), manifest).versions["bronze.documents"]
    assert data.exists() and second == first + 1
    path = BRONZE_DOCUMENTS.path(lakehouse)
    old = RsDeltaTable(path, version=first).to_pyarrow_dataset().to_table(use_threads=False)
    new = RsDeltaTable(path).to_pyarrow_dataset().to_table(use_threads=False)
    assert old.num_rows == 4 and new.num_rows == 7
    assert sorted(new.column("text").to_pylist())[:3] == ["v1 0", "v1 1", "v1 2"]


def test_cli_ingest_json_tables_and_quarantine(spark, lakehouse: Path, nasty) -> None:
    runner = CliRunner()
    config = nasty["manifest"].parent / "millpond.toml"
    config.write_text(f"[ingest]\nmax_record_bytes = {TEST_MAX_RECORD_BYTES}\n")
    result = runner.invoke(
        cli,
        [
            "--lakehouse",
            str(lakehouse),
            "--config",
            str(config),
            "ingest",
            "--manifest",
            str(nasty["manifest"]),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["read"] == summary["ingested"] + summary["unchanged"] + summary["quarantined"]
    assert summary["quarantined"] == len(EXPECTED_QUARANTINE), summary

    tables = json.loads(runner.invoke(cli, ["--lakehouse", str(lakehouse), "tables", "--json"]).stdout)
    rows = {t["name"]: t for t in tables}
    assert rows["bronze.documents"]["rows"] == summary["ingested"]
    assert rows["bronze.documents"]["path"] == str(lakehouse.resolve() / "bronze" / "documents")
    assert rows["quarantine.records"]["rows"] == summary["quarantined"]

    listed = runner.invoke(cli, ["--lakehouse", str(lakehouse), "quarantine", "--json", "--reason", "malformed_json"])
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["locator"], r["reason"]) for r in lines] == [("mixed.jsonl:2", "malformed_json")]

    bad = runner.invoke(
        cli, ["--lakehouse", str(lakehouse), "ingest", "--manifest", str(nasty["manifest"]), "--source", "nope"]
    )
    assert bad.exit_code != 0
