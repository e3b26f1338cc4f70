"""`millpond stream interactions`: landing files into bronze.interactions exactly once, bad lines
quarantined, erased subjects kept out, and a stream SIGKILLed mid-batch that restarts cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import make_config
from ingestion.interactions import parse_landing_file
from jobs.stream_interactions import run_stream
from lineage.catalog import BRONZE_INTERACTIONS, GOVERNANCE_TOMBSTONES, LINEAGE_RUNS, QUARANTINE_RECORDS
from lineage.subjects import subject_forms
from lineage.tables import ensure_table, read_table
from serving.events import event

KEY = os.environ["MILLPOND_PII_KEY"].encode()


def _write_landing(folder: Path, files: int, per_file: int) -> list[str]:
    """Closed landing files of request/response pairs from eight users; returns the event ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for f in range(files):
        lines = []
        for i in range(per_file // 2):
            interaction = f"chatcmpl-{f:03d}-{i:04d}"
            user = f"u-{(f * 7 + i) % 8}"
            common = {"user": user, "consent": ["preference"], "model": {"name": "m", "version": "1", "run_id": "r"}}
            asked = event("request", interaction, messages=[{"role": "user", "content": f"question {f} {i}"}], **common)
            answered = event("response", interaction, responses=[f"answer {f} {i}"], latency_ms=3.5, **common)
            lines += [json.dumps(asked), json.dumps(answered)]
            ids += [asked["event_id"], answered["event_id"]]
        (folder / f"replica-a-{f:06d}.jsonl").write_text("\n".join(lines) + "\n")
    return ids


def test_a_landing_file_parses_line_by_line_with_reasons() -> None:
    good = json.dumps(event("feedback", "chatcmpl-1", feedback={"rating": "up"}, user="u-1"))
    data = "\n".join([good, "{oops", json.dumps({"schema_version": 1, "event_id": "e"}), "", good[:40]]).encode()
    rows = list(parse_landing_file("file:/l/a.jsonl", data, 10_000, erased=lambda user, at: user == "u-1"))
    assert [(r["kind"], r["reason"], r["locator"]) for r in rows] == [
        ("tombstoned", "subject_erased", "file:/l/a.jsonl:1"),
        ("quarantine", "bad_json", "file:/l/a.jsonl:2"),
        ("quarantine", "missing_interaction_id", "file:/l/a.jsonl:3"),
        ("quarantine", "torn_line", "file:/l/a.jsonl:5"),  # the cut last line of a killed writer
    ]
    assert rows[1]["byte_offset"] == len(good) + 1 and rows[1]["byte_length"] == len("{oops")
    assert next(parse_landing_file("u", b"x" * 50 + b"\n", 10))["reason"] == "too_large"


def _bronze(lakehouse: Path) -> list[tuple[Any, ...]]:
    rows = read_table(BRONZE_INTERACTIONS, lakehouse).to_pylist()
    return sorted((r["event_id"], r["event_type"], r["interaction_id"], r["user"], r["locator"].rsplit("/", 1)[-1],
                   json.dumps(r["messages"]), json.dumps(r["responses"])) for r in rows)  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_equals_a_clean_run(spark, tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    ids = _write_landing(killed / "_landing" / "interactions", files=8, per_file=1000)
    # After her erasure u-3 writes again: that event is new data, not what the erasure covered.
    later = event("request", "chatcmpl-later", user="u-3", consent=["preference"], messages=[],
                  created_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())  # fmt: skip
    (killed / "_landing" / "interactions" / "replica-b-000001.jsonl").write_text(
        json.dumps(later) + "\n" + '{"broken\n' + "z" * 9000 + "\n"
    )
    shutil.copytree(killed, clean)
    config = tmp_path / "millpond.toml"
    config.write_text(
        "[spark]\nmaster = 'local[2]'\nshuffle_partitions = 2\nfast_jvm_start = true\n"
        "[stream]\nmax_files_per_trigger = 3\nmax_event_bytes = 8000\n"
    )
    # An erased subject: the events of u-3 stay out, counted as tombstoned.
    for lakehouse in (killed, clean):
        ensure_table(spark, GOVERNANCE_TOMBSTONES, lakehouse)
        spark.createDataFrame(
            [("subject", subject_forms("u-3", KEY).label, None, "req-1", datetime.now(UTC))],
            GOVERNANCE_TOMBSTONES.schema,
        ).write.format("delta").mode("append").save(GOVERNANCE_TOMBSTONES.path(lakehouse))

    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "--lakehouse", str(killed), "--config", str(config), "stream",
         "interactions", "--once"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )  # fmt: skip
    seen = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if "batch 0:" in line:
            time.sleep(1.0)  # inside batch 1, or between its commit and the checkpoint's
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen[-20:])

    settings = {"stream": {"max_files_per_trigger": 3, "max_event_bytes": 8000}}
    resumed = run_stream(spark, _with(make_config(killed), settings)).as_json()
    straight = run_stream(spark, _with(make_config(clean), settings)).as_json()
    assert resumed["batches"] >= 1 and resumed["read"] < straight["read"]  # it went on where the kill left it
    assert _bronze(killed) == _bronze(clean)
    erased = len([i for i in ids if i]) // 8  # one user in eight
    assert straight["read"] == len(ids) + 3 and straight["tombstoned"] == erased
    assert straight["ingested"] == len(ids) - erased + 1 and straight["quarantined"] == 2
    assert len(_bronze(killed)) == len({r[0] for r in _bronze(killed)}) == len(ids) - erased + 1
    assert [r[2] for r in _bronze(killed) if r[3] == "u-3"] == ["chatcmpl-later"]
    reasons = sorted(r["reason"] for r in read_table(QUARANTINE_RECORDS, killed).to_pylist())
    assert reasons == ["bad_json", "too_large"]
    # Every batch reconciled and was recorded; a batch the kill interrupted was redone under its own id.
    runs = [r for r in read_table(LINEAGE_RUNS, killed).to_pylist() if r["job"] == "stream_interactions"]
    assert len({r["run_id"] for r in runs}) == len(runs) == 3
    for r in runs:
        counts = dict(r["counts"] or [])
        if r["status"] == "succeeded":
            assert (
                counts["read"]
                == counts["ingested"] + counts["duplicates"] + counts["quarantined"] + counts["tombstoned"]
            )
    assert {r["status"] for r in runs} == {"succeeded"}
    # Nothing new: nothing happens.
    assert run_stream(spark, _with(make_config(killed), settings)).as_json()["batches"] == 0


def _with(config: Any, sections: dict[str, dict[str, Any]]) -> Any:
    from jobs.config import Config

    values = json.loads(json.dumps(config.values))
    for name, settings in sections.items():
        values[name].update(settings)
    return Config(values=values, file=None)
