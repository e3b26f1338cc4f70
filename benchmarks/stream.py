"""`millpond stream interactions` against a plain Structured Streaming JSON-to-Delta append.

N events (request/response pairs of about 400 bytes each, as `millpond serve` lands them) are
written as closed landing files. In the same Spark session (`local[2]`) and on the same files,
each side reads them with `trigger(availableNow=True)` into an empty table:
- baseline: `readStream.json(folder)` with the event schema, appended to Delta by the Delta sink;
- millpond: `run_stream` (binaryFile source, line numbers, schema check, quarantine, tombstones,
  an insert-only MERGE on event_id under Delta's idempotent transaction ids, lineage.runs).
Then freshness: a stream on a 10 s trigger while a writer lands a file every 2 s; for every event,
the time from its `created_at` to the end of the micro-batch that committed it (p50, p99).

    python -m benchmarks stream --events 1000000
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def write_events(folder: Path, events: int, per_file: int, start: int = 0) -> int:
    """Closed landing files of request/response pairs; returns the events written."""
    from serving.events import event

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    model = {"name": "millpond-pretrain-demo", "version": "3", "run_id": "0" * 32}
    while written < events:
        lines = []
        for i in range(min(per_file, events - written) // 2):
            n = start + written // 2 + i
            iid = f"chatcmpl-{n:012d}"
            common = {"user": f"u-{n % 5000}", "consent": ["preference"], "model": model, "replica": "bench"}
            asked = event("request", iid, messages=[{"role": "user", "content": f"How does the mill wheel turn? {n}"}],
                          params={"max_tokens": 64, "temperature": 0.7}, **common)  # fmt: skip
            answered = event("response", iid, responses=[f"The river pushes the paddles round, {n} times."],
                             finish_reasons=["stop"], latency_ms=42.0, **common)  # fmt: skip
            lines += [json.dumps(asked), json.dumps(answered)]
        name = folder / f"bench-{start + written:012d}.jsonl"
        tmp = name.with_suffix(".part")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, name)
        written += len(lines)
    return written


def config_for(lakehouse: Path, files_per_trigger: int) -> Any:
    from jobs.config import DEFAULTS, Config

    values = copy.deepcopy(DEFAULTS)
    values["lakehouse"] = str(lakehouse)
    values["stream"]["max_files_per_trigger"] = files_per_trigger
    return Config(values=values, file=None)


def _baseline(spark: Any, folder: Path, work: Path) -> float:
    schema = (
        "schema_version long, event_id string, event_type string, interaction_id string, created_at string, "
        "user string, consent array<string>, model struct<name:string,version:string,run_id:string>, "
        "messages array<struct<role:string,content:string>>, params map<string,string>, responses array<string>, "
        "finish_reasons array<string>, latency_ms double, replica string"
    )
    started = time.perf_counter()
    query = (
        spark.readStream.schema(schema).option("pathGlobFilter", "*.jsonl").json(str(folder))
        .writeStream.format("delta").option("checkpointLocation", str(work / "baseline-checkpoint"))
        .trigger(availableNow=True).start(str(work / "baseline-table"))
    )  # fmt: skip
    query.awaitTermination()
    return time.perf_counter() - started


def _millpond(spark: Any, folder: Path, lakehouse: Path, files_per_trigger: int) -> tuple[float, dict[str, Any]]:
    from jobs.stream_interactions import run_stream

    landing = lakehouse / "_landing" / "interactions"
    landing.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, landing)
    started = time.perf_counter()
    report = run_stream(spark, config_for(lakehouse, files_per_trigger)).as_json()
    return time.perf_counter() - started, report


def _freshness(spark: Any, lakehouse: Path, seconds: float, per_file: int) -> dict[str, float]:
    from jobs.stream_interactions import run_stream
    from lineage.catalog import BRONZE_INTERACTIONS, LINEAGE_RUNS
    from lineage.tables import read_table

    landing = lakehouse / "_landing" / "interactions"
    stop = threading.Event()

    def land() -> None:
        n = 10_000_000
        while not stop.is_set():
            write_events(landing, per_file, per_file, start=n)
            n += per_file
            stop.wait(2.0)

    writer = threading.Thread(target=land)
    writer.start()
    try:
        run_stream(spark, config_for(lakehouse, 1000), once=False, trigger="10s", timeout=seconds)
    finally:
        stop.set()
        writer.join()
    ended = {r["run_id"]: r["ended_at"] for r in read_table(LINEAGE_RUNS, lakehouse).to_pylist() if r["ended_at"]}
    rows = read_table(BRONZE_INTERACTIONS, lakehouse, columns=["created_at", "ingest_run_id"]).to_pylist()
    lags = sorted(
        (ended[r["ingest_run_id"]] - r["created_at"]).total_seconds() for r in rows if r["ingest_run_id"] in ended
    )
    return {
        "events": len(lags),
        "p50_s": round(statistics.median(lags), 2),
        "p99_s": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 2),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-file", type=int, default=25_000)
    parser.add_argument("--files-per-trigger", type=int, default=8)
    parser.add_argument("--fresh-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    from jobs.config import cache_dir
    from jobs.spark import SparkSettings, get_spark

    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="6g"), cache_dir())
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        work = Path(tmp)
        events_folder = work / "events"
        started = time.perf_counter()
        written = write_events(events_folder, args.events, args.per_file)
        mb = sum(p.stat().st_size for p in events_folder.glob("*.jsonl")) / 1e6
        print(f"wrote {written:,} events ({mb:.1f} MB) in {time.perf_counter() - started:.1f} s", flush=True)
        baseline = _baseline(spark, events_folder, work)
        print(f"baseline: {baseline:.1f} s", flush=True)
        ours, report = _millpond(spark, events_folder, work / "lakehouse", args.files_per_trigger)
        print(f"millpond: {ours:.1f} s {report}", flush=True)
        fresh = _freshness(spark, work / "fresh", args.fresh_seconds, 2_000)
        print(f"freshness: {fresh}", flush=True)
    summary = {
        "benchmark": "stream",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "events": written,
        "input_mb": round(mb, 1),
        "baseline_s": round(baseline, 1),
        "baseline_events_per_s": round(written / baseline),
        "millpond_s": round(ours, 1),
        "millpond_events_per_s": round(written / ours),
        "ratio": round(ours / baseline, 2),
        "millpond_report": report,
        "freshness_10s_trigger": fresh,
    }
    out = HERE / "results" / f"stream-{summary['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
