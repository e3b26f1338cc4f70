"""Data subject requests at scale: `lineage find` and `lineage erase` for one person on a
lakehouse of N documents, beside a naive erasure that rewrites every table, in the same run.

The lakehouse is built on Spark with the catalog's schemas: bronze and silver documents of
about 2 KB (silver scrubbed, subject ids keyed with the real HMAC), the pii index, one decision
per document, MinHash signatures (128 values), lineage edges (derived_from, duplicate_of,
snapshot_member), one snapshot holding every document, and near-duplicate copies of 0.1% of
the documents in a second source. The person owns 4 documents by user id, is mentioned by
e-mail in about N / 100,000 more, and one of their documents has a near-duplicate copy.

Both erasures start from a copy of the same lakehouse. The naive one uses the same `find`,
then reads every table that holds document ids and overwrites it without the rows, then
vacuums: what a user without lineage would do.

    python -m benchmarks lineage --docs 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
KEY = "millpond-benchmark-key-0123456789"
USER = "user-4242"
EMAIL = "person4207@example.org"
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more can out other some time only "
    "river mill pond water wheel grain flour stone bridge village record letter court trade family museum county "
    "spring summer winter autumn morning evening north south east west market harbour valley forest meadow field"
).split()


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(spark: Any, lakehouse: Path, docs: int) -> dict[str, int]:
    """Write the synthetic lakehouse; returns rows per table."""
    from pyspark.sql import functions as F

    from curation.pii_detect import value_hmac
    from lineage.catalog import TABLES
    from lineage.tables import ensure_table

    key = KEY.encode()

    @F.pandas_udf("string")
    def keyed(kind: pd.Series, value: pd.Series) -> pd.Series:
        return pd.Series([value_hmac(key, k, v) for k, v in zip(kind, value, strict=True)])

    parts = max(8, docs // 60_000)
    words = F.array(*[F.lit(w) for w in WORDS])
    n_words = len(WORDS)
    ids = spark.range(docs, numPartitions=parts)
    mentions = (F.col("id") % 50) == 7
    email = F.concat(F.lit("person"), (F.col("id") % 100_000).cast("string"), F.lit("@example.org"))
    body = F.expr(
        f"concat_ws(' ', transform(sequence(1, 330), k -> element_at(words, cast(pmod(hash(id, k), {n_words}) + 1 as int))))"
    )
    base = ids.withColumn("words", words).select(
        "id",
        F.substring(F.sha2(F.concat(F.lit("doc:"), F.col("id").cast("string")), 256), 1, 32).alias("doc_id"),
        F.when(mentions, F.concat(body, F.lit(" Write to "), email, F.lit(" for details.")))
        .otherwise(body)
        .alias("raw"),
        F.when(mentions, F.concat(body, F.lit(" Write to <EMAIL_ADDRESS> for details.")))
        .otherwise(body)
        .alias("clean"),
        F.concat(F.lit("user-"), (F.col("id") % 250_000).cast("string")).alias("user"),
        F.when(mentions, email).alias("email"),
        F.lit("forum").alias("source"),
    )
    dup_of = (F.col("id") % 1000) == 242
    copies = base.where(dup_of).select(
        (F.col("id") + docs).alias("id"),
        F.substring(F.sha2(F.concat(F.lit("copy:"), F.col("id").cast("string")), 256), 1, 32).alias("doc_id"),
        F.concat("raw", F.lit(" Reposted.")).alias("raw"),
        F.concat("clean", F.lit(" Reposted.")).alias("clean"),
        F.lit(None).cast("string").alias("user"),
        "email",
        F.lit("mirror").alias("source"),
        F.col("doc_id").alias("kept_id"),
    )
    everything = base.withColumn("kept_id", F.lit(None).cast("string")).unionByName(copies).cache()
    now = datetime.now(UTC)
    counts: dict[str, int] = {}

    def write(name: str, frame: Any) -> None:
        spec = TABLES[name]
        ensure_table(spark, spec, lakehouse)
        columns = [
            F.col(f.name).cast(f.dataType) if f.name in frame.columns else F.lit(None).cast(f.dataType).alias(f.name)
            for f in spec.schema.fields
        ]
        out = frame.select(*columns)
        out.write.format("delta").mode("append").save(spec.path(lakehouse))
        counts[name] = spark.read.format("delta").load(spec.path(lakehouse)).count()
        print(f"  {name}: {counts[name]:,} rows, {_bytes(Path(spec.path(lakehouse))) / 1e6:,.0f} MB", flush=True)

    subject = F.when(F.col("user").isNotNull(), F.array("user")).otherwise(F.array().cast("array<string>"))
    common = {
        "source_uri": F.concat(F.lit("file:///data/"), F.col("source"), F.lit(".jsonl")),
        "locator": F.concat(F.col("source"), F.lit(".jsonl:"), F.col("id").cast("string")),
        "ingested_at": F.lit(now),
        "ingest_run_id": F.lit("ingest-bench"),
        "content_sha256": F.sha2("raw", 256),
        "license": F.lit("CC-BY-4.0"),
        "license_source": F.lit("declared"),
        "consent": F.array(F.lit("pretraining")),
        "domain": F.lit("prose"),
    }
    write(
        "bronze.documents",
        everything.select(
            "doc_id",
            F.col("doc_id").alias("record_id"),
            F.col("raw").alias("text"),
            "source",
            *[v.alias(k) for k, v in common.items()],
            subject.alias("subject_ids"),
        ),  # fmt: skip
    )
    kept = everything.where(F.col("kept_id").isNull())
    write(
        "silver.documents",
        kept.select(
            "doc_id",
            F.col("clean").alias("text"),
            F.sha2("clean", 256).alias("text_sha256"),
            "source",
            *[v.alias(k) for k, v in common.items()],
            F.create_map(F.lit("pretraining"), F.lit("allowed")).alias("license_policy"),
            F.when(F.col("user").isNotNull(), F.array(keyed(F.lit("SUBJECT_ID"), "user"))).alias("subject_ids"),
            F.lit("en").alias("lang"),
            F.lit(0.99).alias("lang_score"),
            F.lit(0.8).alias("quality_score"),
            F.when(F.col("email").isNotNull(), F.create_map(F.lit("EMAIL_ADDRESS"), F.lit(1)))
            .otherwise(F.create_map().cast("map<string,bigint>"))
            .alias("pii_counts"),
            F.lit(1).alias("bronze_version"),
            F.lit("curate-bench").alias("curate_run_id"),
            F.lit(now).alias("curated_at"),
        ),  # fmt: skip
    )
    write(
        "silver.pii_index",
        kept.where(F.col("email").isNotNull()).select(
            "doc_id",
            F.lit("EMAIL_ADDRESS").alias("entity_type"),
            keyed(F.lit("EMAIL_ADDRESS"), "email").alias("value_hmac"),
            F.lit("curate-bench").alias("curate_run_id"),
        ),  # fmt: skip
    )
    write(
        "silver.decisions",
        everything.select(
            "doc_id",
            F.lit("fuzzy_dedup").alias("stage"),
            F.when(F.col("kept_id").isNull(), "kept").otherwise("dropped").alias("action"),
            F.when(F.col("kept_id").isNotNull(), "near_duplicate").alias("reason"),
            F.when(F.col("kept_id").isNotNull(), F.concat(F.lit("near:"), "kept_id")).alias("cluster_id"),
            F.col("kept_id").alias("duplicate_of"),
            F.lit("curate-bench").alias("run_id"),
            F.lit(now).alias("decided_at"),
        ),  # fmt: skip
    )
    write(
        "silver.minhash",
        everything.select(
            "doc_id",
            F.expr("transform(sequence(1, 128), k -> hash(id, k, 7))").alias("signature"),
            F.expr("transform(sequence(1, 14), k -> xxhash64(id, k))").alias("bands"),
            F.lit(0.8).alias("quality_score"),
            F.lit(now).alias("ingested_at"),
            F.when(F.col("kept_id").isNull(), "kept").otherwise("dropped").alias("status"),
            F.lit("bench").alias("params_digest"),
            F.lit("curate-bench").alias("curate_run_id"),
        ),  # fmt: skip
    )
    edge = {"run_id": F.lit("curate-bench"), "table_version": F.lit(1), "created_at": F.lit(now)}
    derived = kept.select(
        F.col("doc_id").alias("child_id"), F.lit("silver.documents").alias("child_table"),
        F.col("doc_id").alias("parent_id"), F.lit("bronze.documents").alias("parent_table"),
        F.when(F.col("email").isNotNull(), "scrubbed_from").otherwise("derived_from").alias("relation"),
        F.lit(None).cast("string").alias("cluster_id"), *[v.alias(k) for k, v in edge.items()],
    )  # fmt: skip
    duplicates = copies.select(
        F.col("doc_id").alias("child_id"), F.lit("bronze.documents").alias("child_table"),
        F.col("kept_id").alias("parent_id"), F.lit("silver.documents").alias("parent_table"),
        F.lit("duplicate_of").alias("relation"), F.concat(F.lit("near:"), "kept_id").alias("cluster_id"),
        *[v.alias(k) for k, v in edge.items()],
    )  # fmt: skip
    members = kept.select(
        F.lit("bench-v1").alias("child_id"), F.lit("gold.snapshots").alias("child_table"),
        F.col("doc_id").alias("parent_id"), F.lit("silver.documents").alias("parent_table"),
        F.lit("snapshot_member").alias("relation"), F.lit(None).cast("string").alias("cluster_id"),
        *[v.alias(k) for k, v in edge.items()],
    )  # fmt: skip
    write("lineage.edges", derived.unionByName(duplicates).unionByName(members))
    write(
        "gold.snapshot_members",
        kept.select(
            F.lit("bench-v1").alias("snapshot"),
            "doc_id",
            "source",
            F.lit("train").alias("split"),
            F.lit(1).alias("repeats"),
            F.sha2("clean", 256).alias("text_sha256"),
        ),  # fmt: skip
    )
    snapshot = {
        "name": "bench-v1", "source_table": "silver.documents", "source_version": 1, "filter": "[]",
        "purpose": "pretraining", "rows": counts["silver.documents"], "train_rows": counts["silver.documents"],
        "words": counts["silver.documents"] * 330, "content_digest": "bench", "run_id": "snapshot-bench",
        "created_at": now,
    }  # fmt: skip
    write("gold.snapshots", spark.createDataFrame([snapshot], "name string, source_table string, source_version long, "
          "filter string, purpose string, rows long, train_rows long, words long, content_digest string, "
          "run_id string, created_at timestamp"))  # fmt: skip
    everything.unpersist()
    return counts


def naive_erase(spark: Any, lakehouse: Path, documents: list[str]) -> dict[str, Any]:
    """Rewrite every table that holds document ids without the rows, then vacuum it."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from lineage.catalog import TABLES
    from lineage.erasure import LISTING_PARALLELISM, RETENTION_CHECK, naming

    written = 0
    spark.conf.set(RETENTION_CHECK, "false")
    spark.conf.set(LISTING_PARALLELISM, spark.conf.get("spark.sql.shuffle.partitions"))
    for spec in TABLES.values():
        path = spec.path(lakehouse)
        if not spec.document_columns or not DeltaTable.isDeltaTable(spark, path):
            continue
        kept = spark.read.format("delta").load(path).where(~naming(spec, documents)).localCheckpoint(eager=True)
        kept.write.format("delta").mode("overwrite").save(path)
        table = DeltaTable.forPath(spark, path)
        last = table.history(1).select(F.col("operationMetrics").getItem("numOutputBytes")).first()[0]
        written += int(last or 0)
        table.vacuum(0.0)
    spark.conf.set(RETENTION_CHECK, "true")
    spark.conf.unset(LISTING_PARALLELISM)
    return {"bytes_written": written}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks lineage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--work", type=Path, default=HERE / ".data" / "lineage")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["MILLPOND_PII_KEY"] = KEY

    from benchmarks.curate import measure
    from jobs.config import cache_dir, load_config
    from jobs.spark import SparkSettings, get_spark
    from jobs.subject_requests import erase_subjects, find_subjects

    settings = SparkSettings(master=args.master, driver_memory=args.driver_memory, app_name="millpond-bench-lineage")
    spark = get_spark(settings, cache_dir())
    results = []
    for docs in args.docs:
        root = args.work / f"{docs}"
        shutil.rmtree(root, ignore_errors=True)
        built = root / "built"
        print(f"building a lakehouse of {docs:,} documents in {built}", flush=True)
        start = time.perf_counter()
        counts = build(spark, built, docs)
        build_s = time.perf_counter() - start
        size = _bytes(built)
        print(f"  built in {build_s:.0f} s, {size / 1e9:.2f} GB", flush=True)
        ours, naive = root / "erase", root / "naive"
        shutil.copytree(built, ours)
        shutil.copytree(built, naive)
        shutil.rmtree(built)

        config = load_config(None, ours)
        find_s, find_peak, found = measure(lambda c=config: find_subjects(spark, c, (USER, EMAIL)), tree=True)
        print(f"  find: {find_s:.1f} s, {len(found['documents'])} documents", flush=True)
        erase_s, erase_peak, cert = measure(
            lambda c=config: erase_subjects(spark, c, (USER, EMAIL), "benchmark"), tree=True
        )
        ours_written = sum(d["bytes_written"] for d in cert["deleted"])
        print(f"  erase: {erase_s:.1f} s, {ours_written / 1e6:,.1f} MB rewritten", flush=True)

        naive_config = load_config(None, naive)

        def plain(c: Any = naive_config, where: Path = naive) -> dict[str, Any]:
            again = find_subjects(spark, c, (USER, EMAIL))
            return naive_erase(spark, where, again["documents"])

        naive_s, naive_peak, plain_result = measure(plain, tree=True)
        print(f"  naive: {naive_s:.1f} s, {plain_result['bytes_written'] / 1e6:,.1f} MB rewritten", flush=True)
        results.append(
            {
                "docs": docs,
                "lakehouse_gb": round(size / 1e9, 2),
                "rows": counts,
                "documents_found": len(found["documents"]),
                "rows_found": sum(found["row_counts"].values()),
                "find_s": round(find_s, 1),
                "erase_s": round(erase_s, 1),
                "erase_mb_rewritten": round(ours_written / 1e6, 1),
                "naive_s": round(naive_s, 1),
                "naive_mb_rewritten": round(plain_result["bytes_written"] / 1e6, 1),
                "time_ratio": round(naive_s / erase_s, 2),  # both find, then erase
                "bytes_ratio": round(plain_result["bytes_written"] / max(ours_written, 1), 1),
                "peak_mb": round(max(find_peak, erase_peak, naive_peak) / 1e6),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(root)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "master": args.master,
        "results": results,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "lineage.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| documents | lakehouse | found | find | erase | MB rewritten | naive | naive MB | time ratio | bytes ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['docs']:,} | {r['lakehouse_gb']} GB | {r['documents_found']} docs, {r['rows_found']} rows | "
            f"{r['find_s']} s | {r['erase_s']} s | {r['erase_mb_rewritten']:,} | {r['naive_s']} s | "
            f"{r['naive_mb_rewritten']:,} | {r['time_ratio']}x | {r['bytes_ratio']}x |"
        )


if __name__ == "__main__":
    main()
