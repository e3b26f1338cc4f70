"""Real failures: a driver SIGKILLed mid-ingest, and a machine that cannot download the Delta jars."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable as RsDeltaTable

from conftest import INTERPRETED_SPARK_TOML, make_config, write_jsonl, write_manifest
from jobs.config import cache_dir
from jobs.ingest import run_ingest
from lineage.catalog import BRONZE_DOCUMENTS, LINEAGE_RUNS, QUARANTINE_RECORDS
from lineage.tables import read_table

pytestmark = pytest.mark.slow

SUBPROCESS_CONFIG = "[spark]\nmaster = 'local[2]'\nshuffle_partitions = 2\nfast_jvm_start = true\n"


def _millpond(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        **kwargs,
    )


def _kill_when(process: subprocess.Popen[str], marker: str | tuple[str, ...], delay: float) -> list[str]:
    """SIGKILL the driver's whole process group (Python and its JVM) `delay` seconds after a line
    with `marker` (or any of several) is printed."""
    markers = (marker,) if isinstance(marker, str) else marker
    seen: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if any(m in line for m in markers):
            time.sleep(delay)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    return seen


def _state(lakehouse: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    bronze = read_table(BRONZE_DOCUMENTS, lakehouse)
    quarantine = read_table(QUARANTINE_RECORDS, lakehouse)
    docs = (
        [] if bronze is None else sorted((r["doc_id"], r["locator"], r["content_sha256"]) for r in bronze.to_pylist())
    )
    bad = [] if quarantine is None else sorted((r["quarantine_id"], r["reason"]) for r in quarantine.to_pylist())
    return docs, bad


def test_sigkill_mid_ingest_then_rerun_gives_the_clean_result(spark, tmp_path: Path) -> None:
    rng = random.Random(3)
    for f in range(8):
        records: list[Any] = [{"text": " ".join(str(rng.random()) for _ in range(30))} for _ in range(2500)]
        records.insert(100, "{broken")
        write_jsonl(tmp_path / "raw" / f"part-{f}.jsonl", records)
    manifest = write_manifest(tmp_path / "sources.toml", [{"name": "k", "path": "raw", "format": "jsonl"}])
    config = tmp_path / "millpond.toml"
    config.write_text(SUBPROCESS_CONFIG + INTERPRETED_SPARK_TOML)
    killed = tmp_path / "killed"
    args = ["--lakehouse", str(killed), "--config", str(config), "ingest", "--manifest", str(manifest), "--json"]

    # Killed while the readers write bronze's data files, then as they are committed (or, when
    # the first kill came after the commit, as quarantine is merged): each time the table stays
    # at a committed version, never a partial one.
    total = 8 * 2500
    kills: tuple[tuple[str | tuple[str, ...], float], ...] = (
        ("reading documents", 0.5),
        (("committing", "quarantining"), 0.0),
    )
    for marker, delay in kills:
        process = _millpond(args)
        seen = _kill_when(process, marker, delay)
        assert process.returncode == -signal.SIGKILL, "".join(seen)
        path = BRONZE_DOCUMENTS.path(killed)
        if (Path(path) / "_delta_log").exists():
            rows = RsDeltaTable(path).to_pyarrow_dataset().count_rows()
            assert rows in (0, total)

    # The re-run is what a user does next; it runs in this test's session (no third JVM).
    summary = run_ingest(spark, make_config(killed), manifest).as_json()
    assert summary["read"] == summary["ingested"] + summary["unchanged"] + summary["quarantined"]

    clean = tmp_path / "clean"
    run_ingest(spark, make_config(clean), manifest)
    assert _state(killed) == _state(clean)
    assert len(_state(clean)[0]) == total and len(_state(clean)[1]) == 8

    statuses = sorted(r["status"] for r in read_table(LINEAGE_RUNS, killed).to_pylist())
    assert statuses.count("succeeded") == 1 and set(statuses) <= {"running", "succeeded"}


def test_sigkill_mid_curate_then_rerun_gives_the_clean_result(spark, tmp_path: Path) -> None:
    from curation_data import prose

    from jobs.curate import run_curate
    from lineage.catalog import SILVER_DECISIONS, SILVER_DOCUMENTS

    docs = [{"text": prose(i % 40) if i % 5 else f"short note {i}"} for i in range(60)]
    write_jsonl(tmp_path / "raw" / "a.jsonl", docs)
    manifest = write_manifest(tmp_path / "sources.toml", [{"name": "k", "path": "raw", "format": "jsonl"}])
    killed = tmp_path / "killed"
    run_ingest(spark, make_config(killed), manifest)
    clean = tmp_path / "clean"
    shutil.copytree(killed, clean)
    config = tmp_path / "millpond.toml"
    config.write_text(SUBPROCESS_CONFIG + INTERPRETED_SPARK_TOML)
    # The stages that drop here (the kill and the redo are the commit's, whatever the stages): no
    # spaCy or fastText model to load in the killed process's Python workers.
    stages = ["normalize", "quality", "exact_dedup"]
    args = ["--lakehouse", str(killed), "--config", str(config), "curate", "--stages", ",".join(stages), "--json"]

    # Killed after its decisions were appended, while silver is being merged.
    process = _millpond(args)
    seen = _kill_when(process, "merging", 0.5)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    silver_path = Path(SILVER_DOCUMENTS.path(killed))
    if (silver_path / "_delta_log").exists():
        assert RsDeltaTable(str(silver_path)).to_pyarrow_dataset().count_rows() in (0, 32)

    # The re-run is what a user does next; it runs in this test's session (no second JVM).
    redone = run_curate(spark, make_config(killed), stages).as_json()
    straight = run_curate(spark, make_config(clean), stages).as_json()
    assert (redone["in"], redone["out"]) == (straight["in"], straight["out"]) == (60, 32)

    def silver(lakehouse: Path) -> list[tuple[str, str, str]]:
        rows = read_table(SILVER_DOCUMENTS, lakehouse).to_pylist()
        return sorted((r["doc_id"], r["text_sha256"], r["license"]) for r in rows)

    def decisions(lakehouse: Path) -> list[tuple[str, str, str, str | None]]:
        rows = read_table(SILVER_DECISIONS, lakehouse).to_pylist()
        return sorted((r["doc_id"], r["stage"], r["action"], r["reason"]) for r in rows)

    assert silver(killed) == silver(clean)
    assert decisions(killed) == decisions(clean)
    runs = [r for r in read_table(LINEAGE_RUNS, killed).to_pylist() if r["job"] == "curate"]
    assert sorted(r["status"] for r in runs) == ["running", "succeeded"]


def test_offline_machine_gets_one_clear_message_and_the_jar_folder_fix_works(tmp_path: Path) -> None:
    empty_repo = tmp_path / "empty-repo"
    empty_repo.mkdir()
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(
        "<ivysettings><settings defaultResolver='offline'/><resolvers>"
        f"<filesystem name='offline'><artifact pattern='{empty_repo}/[organisation]/[module]/[artifact]-[revision].[ext]'/>"
        "</filesystem></resolvers></ivysettings>"
    )
    data = write_jsonl(tmp_path / "raw" / "a.jsonl", [{"text": "hello offline"}])
    manifest = write_manifest(tmp_path / "sources.toml", [{"name": "o", "path": str(data), "format": "jsonl"}])
    offline = tmp_path / "offline.toml"
    offline.write_text(
        SUBPROCESS_CONFIG + f"ivy_dir = '{tmp_path / 'ivy'}'\n[spark.conf]\n'spark.jars.ivySettings' = '{settings}'\n"
    )
    args = ["--lakehouse", str(tmp_path / "lh"), "ingest", "--manifest", str(manifest)]
    process = _millpond(["--config", str(offline), *args])
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "could not resolve the Delta Lake jars" in err and "spark.jars.repositories" in err and "jars_dir" in err
    assert "Exception in thread" not in err and "Traceback" not in err and "at org.apache" not in err

    # The fix the message names: a folder with the jars (here, the ones Ivy fetched earlier).
    jars = cache_dir() / "ivy" / "jars"
    if not any(jars.glob("io.delta_delta-spark*.jar")):
        pytest.skip("no resolved Delta jars in the project cache to build a jar folder from")
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(
        SUBPROCESS_CONFIG + f"jars_dir = '{jars}'\n[spark.conf]\n'spark.jars.ivySettings' = '{settings}'\n"
    )
    process = _millpond(["--config", str(fixed), *args, "--json"])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["ingested"] == 1
