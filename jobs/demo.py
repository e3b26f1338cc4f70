"""`millpond demo`: ingest, curate, snapshot and lineage on data every machine has, with no download.

The corpus is the documentation and source of a few installed Python distributions, each
file tagged with its distribution's license, plus a small landing file of chat-style records
with one broken line, so the quarantine shows up too.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import click
from pyspark.sql import SparkSession

from curation.pii import KEY_ENV
from jobs.config import Config, cache_dir
from jobs.context import open_spark, progress
from jobs.curate import print_report as print_funnel
from jobs.curate import run_curate
from jobs.ingest import print_report, run_ingest
from jobs.snapshot import create_snapshot, snapshot_row
from jobs.snapshot import print_summary as print_snapshot
from jobs.subject_requests import find_subjects
from jobs.why import explain
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DECISIONS, SILVER_DOCUMENTS
from lineage.locations import demo_folder
from lineage.reader import inspect_tables
from lineage.snapshots import SnapshotSpec
from lineage.tables import read_table

DEMO_SNAPSHOT = "demo"
DEMO_DISTRIBUTIONS = [
    "click",
    "tqdm",
    "jinja2",
    "markupsafe",
    "orjson",
    "zstandard",
    "tomli-w",
    "ftfy",
    "trafilatura",
    "datasketch",
    "deltalake",
    "delta-spark",
    "millpond",
]

MANIFEST = """\
# The demo's sources: see ingestion/manifest.py for every key.
[[source]]
name = "python-docs"
format = "python-env"
include = {include}
consent = ["pretraining", "evaluation"]

[[source]]
name = "feedback"
format = "jsonl"
path = "landing/feedback.jsonl"
text_field = "message"
id_field = "id"
license = "CC-BY-4.0"
subject_fields = ["user_email"]
consent = ["pretraining"]
domain = "chat"
"""

FEEDBACK = [
    {"id": "fb-1", "message": "The ingest command was easy to run on my laptop.", "user_email": "Alice@Example.com"},
    {"id": "fb-2", "message": "Could the quarantine list show the byte offset too?", "user_email": "bob@example.org"},
    {"id": "fb-3", "message": "", "user_email": "carol@example.net"},
]


def write_demo_sources(folder: Path) -> Path:
    """The demo manifest and its landing file (rewritten each time: the demo is reproducible)."""
    (folder / "landing").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record) for record in FEEDBACK]
    lines.insert(2, '{"id": "fb-broken", "message": "this line was cut in transit')
    (folder / "landing" / "feedback.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = folder / "sources.toml"
    manifest.write_text(MANIFEST.format(include=json.dumps(DEMO_DISTRIBUTIONS)), encoding="utf-8")
    return manifest


def demo_pii_key(config: Config) -> None:
    """Without a configured PII key, the demo makes one in the project cache (never in the lakehouse)."""
    if os.environ.get(KEY_ENV) or config.section("curate")["pii"]["key_file"]:
        return
    key_file = cache_dir() / "demo-pii.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        key_file.chmod(0o600)
    os.environ[KEY_ENV] = key_file.read_text(encoding="utf-8").strip()
    progress(f"demo: PII values are keyed with {key_file}; set {KEY_ENV} for real data")


def run_demo(config: Config) -> None:
    lakehouse = config.lakehouse
    demo_pii_key(config)
    manifest = write_demo_sources(demo_folder(lakehouse))
    progress(f"demo lakehouse: {lakehouse}  (manifest: {manifest})")
    spark = open_spark(config, app_name="millpond-demo")
    click.echo("\n== 1. ingest: raw files -> bronze.documents (bad records -> quarantine.records)")
    print_report(run_ingest(spark, config, manifest))
    click.echo("\n== 2. curate: bronze.documents -> silver.documents (every decision -> silver.decisions)")
    funnel = run_curate(spark, config)
    print_funnel(funnel)
    _show_a_dropped_document(config, funnel.run_id)
    click.echo("\n== 3. snapshot: silver.documents -> gold.snapshots (a named training set, pinned to a version)")
    existing = snapshot_row(lakehouse, DEMO_SNAPSHOT)
    if existing is None:
        print_snapshot(create_snapshot(spark, config, SnapshotSpec(DEMO_SNAPSHOT, validation=0.05, test=0.05)))
    else:
        click.echo(f"   {DEMO_SNAPSHOT} exists (snapshots are immutable): `millpond snapshot show {DEMO_SNAPSHOT}`")
    click.echo("\n== 4. lineage: which rows, snapshots and runs hold data of one person?")
    _find_a_subject(spark, config)
    spark.stop()
    click.echo("\n== 5. the tables")
    for info in inspect_tables(lakehouse):
        state = "not created yet" if info.version is None else f"v{info.version}, {info.rows} rows"
        click.echo(f"  {info.name:<22} {state:<22} {info.path}")
    click.echo(
        "\nNext: `millpond quarantine`, `millpond runs`, `millpond why DOC_ID`, `millpond snapshot list`, "
        "`millpond pii scan FILE`; run the "
        "demo again and every record is `unchanged` and curation has nothing new to do."
    )


def _find_a_subject(spark: SparkSession, config: Config) -> None:
    """`millpond lineage find` on the first author the demo corpus names (public package metadata)."""
    bronze = read_table(BRONZE_DOCUMENTS, config.lakehouse, columns=["doc_id", "subject_ids"])
    silver = read_table(SILVER_DOCUMENTS, config.lakehouse, columns=["doc_id"])
    curated = set(silver.column("doc_id").to_pylist()) if silver is not None else set()
    rows = bronze.to_pylist() if bronze is not None else []
    # Someone whose document made it into silver (and the snapshot) shows the whole path.
    subjects = sorted({s for r in rows for s in r["subject_ids"] or [] if r["doc_id"] in curated and "@" in s})
    subjects = subjects or sorted({s for r in rows for s in r["subject_ids"] or []})
    if not subjects:
        click.echo("   no document of the demo corpus names a subject")
        return
    subject = subjects[0]
    click.echo(f"   millpond lineage find --subject {subject}")
    found = find_subjects(spark, config, (subject,))
    for table_name, count in sorted(found["row_counts"].items()):
        click.echo(f"     {table_name:<24} {count:>5} row(s)")
    for snap in found["snapshots"]:
        click.echo(f"     snapshot {snap['name']} (v{snap['version']}): {snap['members']} member(s)")
    click.echo(f"   erase it: millpond lineage erase --subject {subject} --reason '...' --dry-run")


def _show_a_dropped_document(config: Config, run_id: str) -> None:
    """`millpond why` on one document this run dropped, so the decision log is seen once."""
    decisions = read_table(SILVER_DECISIONS, config.lakehouse, columns=["doc_id", "action", "run_id", "stage"])
    dropped = sorted(
        r["doc_id"]
        for r in ([] if decisions is None else decisions.to_pylist())
        if r["run_id"] == run_id and r["action"] == "dropped"
    )
    if not dropped:
        return
    doc_id = dropped[0]
    click.echo(f"\n   why was {doc_id} dropped?  (millpond why {doc_id})")
    for d in explain(config.lakehouse, doc_id)["decisions"]:
        extra = " ".join(str(x) for x in (d["reason"], d["duplicate_of"]) if x)
        click.echo(f"     {d['stage']:<14} {d['action']:<9} {extra}")
