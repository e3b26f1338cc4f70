"""Ingest throughput: millpond's ingest beside a plain `spark.read.json` + Delta append.

Both read the same synthetic JSONL files (about 1 KB a record) in the same Spark session
(`local[2]` by default), into fresh Delta tables. The ratio is millpond's price for
provenance, quarantine, content hashes and the MERGE.

    python -m benchmarks ingest --records 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
WORDS = (
    "data lake delta table spark model token shard train eval sample source license consent "
    "record quality filter dedup cluster minhash privacy subject lineage version snapshot run"
).split()


def generate(folder: Path, records: int, files: int, seed: int = 0) -> tuple[list[Path], int]:
    """Synthetic JSONL files of about 1 KB records; reused when already there."""
    stamp = folder / f"done-{records}-{files}-{seed}"
    paths = [folder / f"part-{i:04d}.jsonl" for i in range(files)]
    if not stamp.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        rng = random.Random(seed)
        handles = [p.open("w", encoding="utf-8") for p in paths]
        for i in tqdm(range(records), desc="generating records", unit="rec", mininterval=2):
            words = " ".join(rng.choice(WORDS) for _ in range(150))
            record = {"id": i, "url": f"https://example.org/{seed}/{i}", "text": words[:980], "lang": "en"}
            handles[i % files].write(json.dumps(record) + "\n")
        for handle in handles:
            handle.close()
        stamp.touch()
    return paths, sum(p.stat().st_size for p in paths)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--work", type=Path, default=HERE / ".data")
    parser.add_argument(
        "--id-field", default=None, help="the records' own id field (`id`) as the source's id_field; default: locators"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from jobs.config import DEFAULTS, Config, cache_dir
    from jobs.ingest import run_ingest
    from jobs.spark import SparkSettings, get_spark  # noqa: F401

    paths, size = generate(args.work / "input", args.records, args.files)
    settings = SparkSettings(master=args.master, driver_memory=args.driver_memory, app_name="millpond-bench")
    spark = get_spark(settings, cache_dir())
    manifest = args.work / "sources.toml"
    manifest.write_text(
        f'[[source]]\nname = "bench"\nformat = "jsonl"\npath = "{args.work / "input"}"\nlicense = "CC0-1.0"\n'
        + (f'id_field = "{args.id_field}"\n' if args.id_field else "")
    )

    def baseline(target: Path) -> float:
        start = time.perf_counter()
        spark.read.json([str(p) for p in paths]).write.format("delta").mode("append").save(str(target))
        return time.perf_counter() - start

    def ours(lakehouse: Path) -> tuple[float, dict]:
        values = json.loads(json.dumps(DEFAULTS))
        values["lakehouse"] = str(lakehouse)
        start = time.perf_counter()
        report = run_ingest(spark, Config(values=values, file=None), manifest)
        return time.perf_counter() - start, report.as_json()

    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    results = {}
    # Alternate the order so neither side is the only one to profit from a warm JVM.
    for _order, name in enumerate(["baseline", "millpond", "baseline-2", "millpond-2"]):
        if name.startswith("baseline"):
            results[name] = {"seconds": baseline(runs / name)}
        else:
            seconds, report = ours(runs / name)
            assert report["ingested"] == args.records, report
            results[name] = {"seconds": seconds}
        print(f"{name}: {results[name]['seconds']:.1f} s", flush=True)
    seconds, report = ours(runs / "millpond-2")
    assert report["unchanged"] == args.records
    results["millpond-reingest"] = {"seconds": seconds}
    print(f"millpond re-ingest (all unchanged): {seconds:.1f} s", flush=True)

    base = min(results["baseline"]["seconds"], results["baseline-2"]["seconds"])
    mine = min(results["millpond"]["seconds"], results["millpond-2"]["seconds"])
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.master}",
        "records": args.records,
        "id_field": args.id_field,
        "input_mb": round(size / 1e6, 1),
        "baseline_s": round(base, 1),
        "millpond_s": round(mine, 1),
        "reingest_s": round(results["millpond-reingest"]["seconds"], 1),
        "baseline_records_per_s": round(args.records / base),
        "millpond_records_per_s": round(args.records / mine),
        "baseline_mb_per_s": round(size / 1e6 / base, 1),
        "millpond_mb_per_s": round(size / 1e6 / mine, 1),
        "ratio": round(mine / base, 2),
        "runs": results,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"ingest-{args.records}{'-' + args.id_field if args.id_field else ''}.json").write_text(
        json.dumps(summary, indent=2) + "\n"
    )
    print(json.dumps(summary, indent=2))
    print(
        f"| {summary['date'][:10]} | {args.records:,} | {summary['input_mb']} | "
        f"{summary['baseline_records_per_s']:,} rec/s, {summary['baseline_mb_per_s']} MB/s | "
        f"{summary['millpond_records_per_s']:,} rec/s, {summary['millpond_mb_per_s']} MB/s | "
        f"{summary['ratio']}x | {summary['reingest_s']} s |"
    )
    spark.stop()
