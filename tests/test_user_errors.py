"""A partial curate keeps declared licenses, and a user's mistake or a state of their data ends
in one line naming the cause and the fix (exit status 2), never a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from curation_data import prose

from conftest import write_jsonl, write_manifest
from jobs.cli import cli, main
from lineage.catalog import GOLD_SNAPSHOTS, SILVER_DOCUMENTS
from lineage.errors import MillpondError
from lineage.tables import read_table

DECLARED = 40  # documents of the source that declares MIT and consent to pretraining
UNDECLARED = 12  # documents of a source that declares neither


@pytest.fixture(scope="module")
def partly_curated(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two sources ingested and curated with `--stages normalize,exact_dedup` only (no license stage)."""
    folder = tmp_path_factory.mktemp("partial")
    lakehouse = folder / "lakehouse"
    write_jsonl(folder / "mit.jsonl", [{"id": f"m{i}", "text": prose(i, 8)} for i in range(DECLARED)])
    write_jsonl(folder / "plain.jsonl", [{"id": f"p{i}", "text": prose(1000 + i, 8)} for i in range(UNDECLARED)])
    manifest = write_manifest(
        folder / "m.toml",
        [
            {"name": "mit", "path": "mit.jsonl", "format": "jsonl", "license": "MIT", "consent": ["pretraining"]},
            {"name": "plain", "path": "plain.jsonl", "format": "jsonl", "consent": ["pretraining"]},
        ],
    )
    runner = CliRunner()
    base = ["--lakehouse", str(lakehouse)]
    for args in (["ingest", "--manifest", str(manifest)], ["curate", "--stages", "normalize,exact_dedup"]):
        result = runner.invoke(cli, [*base, *args])
        assert result.exit_code == 0, result.output
    return {"lakehouse": lakehouse, "base": base, "folder": folder}


def _fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the real entry point; it must exit 2 with one error line on stderr (after any progress
    lines) and no traceback."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("millpond: error: ")]
    assert errors == lines[-1:], err
    assert "Traceback" not in err
    return errors[0]


def test_a_partial_curate_keeps_the_declared_license_and_trains_on_it(partly_curated: dict[str, Any]) -> None:
    lakehouse, base = partly_curated["lakehouse"], partly_curated["base"]
    silver = read_table(SILVER_DOCUMENTS, lakehouse).to_pylist()
    by_source = {s: [r for r in silver if r["source"] == s] for s in ("mit", "plain")}
    assert len(by_source["mit"]) == DECLARED and len(by_source["plain"]) == UNDECLARED
    assert {(r["license"], r["license_source"]) for r in by_source["mit"]} == {("MIT", "declared")}
    assert {dict(r["license_policy"])["pretraining"] for r in by_source["mit"]} == {"allowed"}
    assert {dict(r["license_policy"])["pretraining"] for r in by_source["plain"]} == {"unknown"}

    runner = CliRunner()
    created = runner.invoke(cli, [*base, "snapshot", "create", "s1", "--purpose", "pretraining", "--json"])
    assert created.exit_code == 0, created.output
    summary = json.loads(created.stdout.strip().splitlines()[-1])
    assert summary["rows"] == DECLARED and summary["excluded"] == {"license_unknown": UNDECLARED}

    trained = runner.invoke(
        cli, [*base, "train", "pretrain", "--snapshot", "s1", "--preset", "tiny", "--max-steps", "3",
              "--seq-len", "32", "--json"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    figures = json.loads(trained.stdout.strip().splitlines()[-1])
    assert figures["steps"] == 3 and figures["first_loss"] > 0


def test_an_empty_snapshot_is_refused_with_its_reasons(partly_curated: dict[str, Any], capsys) -> None:
    base = partly_curated["base"]
    line = _fails_in_one_line(capsys, [*base, "snapshot", "create", "nolicense", "--where", "source = 'plain'"])
    assert f"0 of {DECLARED + UNDECLARED} documents are allowed for pretraining" in line
    assert f"license_unknown {UNDECLARED}" in line and f"filtered_out {DECLARED}" in line
    assert "run the license stage, or declare licenses in the manifest" in line
    names = [r["name"] for r in read_table(GOLD_SNAPSHOTS, partly_curated["lakehouse"]).to_pylist()]
    assert "nolicense" not in names  # nothing written


def test_every_user_error_is_one_line_with_a_fix(partly_curated: dict[str, Any], spark, capsys) -> None:
    lakehouse, base, folder = partly_curated["lakehouse"], partly_curated["base"], partly_curated["folder"]
    # A snapshot cut empty by an older version: every consumer refuses it before any work.
    from datetime import UTC, datetime

    row = {f.name: None for f in GOLD_SNAPSHOTS.schema.fields} | {
        "name": "old-empty", "source_table": "silver.documents", "source_version": 0, "purpose": "pretraining",
        "rows": 0, "train_rows": 0, "words": 0, "excluded": {"license_unknown": 52}, "content_digest": "0" * 64,
        "run_id": "snapshot-old", "created_at": datetime.now(UTC),
    }  # fmt: skip
    spark.createDataFrame([row], schema=GOLD_SNAPSHOTS.schema).write.format("delta").mode("append").save(
        GOLD_SNAPSHOTS.path(lakehouse)
    )
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text("{}")
    cases = [
        (["snapshot", "show", "nosuch"], "no snapshot 'nosuch'"),
        (["tokenizer", "train", "--snapshot", "nosuch"], "no snapshot 'nosuch'"),
        (["tokenizer", "train", "--snapshot", "old-empty"], "run the license stage"),
        (["shards", "build", "--snapshot", "old-empty", "--tokenizer", str(tokenizer)], "no text in its train split"),
        (["train", "pretrain", "--snapshot", "old-empty"], "no text in its train split to train on"),
        (["train", "pretrain", "--snapshot", "s1", "--seq-len", "100000", "--max-steps", "1"], "--seq-len"),
        (["snapshot", "create", "s1"], "snapshots are immutable"),
        (["snapshot", "create", "bad", "--where", "nosuch = 1"], "no column 'nosuch'"),
        (["curate", "--stages", "normalize,bogus"], "unknown stage(s) bogus"),
        (["ingest", "--manifest", str(folder / "missing.toml")], "missing.toml"),
        (["--config", str(folder / "missing.toml"), "tables"], "config file not found"),
        (["eval", "no-such-run"], "no run 'no-such-run'"),
    ]
    for argv, expected in cases:
        line = _fails_in_one_line(capsys, [*base, *argv])
        assert expected in line, (argv, line)

    # --debug, anywhere before `--`, shows the traceback instead.
    with pytest.raises(MillpondError, match="no snapshot 'nosuch'"):
        main([*base, "snapshot", "show", "nosuch", "--debug"])
