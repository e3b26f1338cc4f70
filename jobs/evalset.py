"""`millpond evalset add|list`: evaluation sets that curated data must not contain."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import click

from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.text_specs import read_texts
from lineage.catalog import GOVERNANCE_EVAL_ITEMS
from lineage.tables import ensure_table, merge_rows, read_table


def item_id(eval_set: str, text: str) -> str:
    return hashlib.sha256(f"eval\x00{eval_set}\x00{text}".encode()).hexdigest()[:32]


@click.group("evalset")
def evalset_group() -> None:
    """Register evaluation sets for decontamination (governance.eval_items)."""


@evalset_group.command("add")
@click.argument("name")
@click.argument("path")
@click.option(
    "--text-field", "text_fields", multiple=True, help="JSON/Parquet field holding the text (repeatable: joined)."
)
@spark_options
@lakehouse_options
def add_command(
    name: str,
    path: str,
    text_fields: tuple[str, ...],
    master: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Add the items of PATH (JSONL, text lines or Parquet) as eval set NAME; re-adding is a no-op."""
    config = effective_config(lakehouse, config_file)
    texts = read_texts(path, config.lakehouse, text_fields or ("text",))
    now = datetime.now(UTC)
    rows = {}
    for t in texts:
        if t.text.strip():
            key = item_id(name, t.text)
            rows.setdefault(key, (key, name, t.text, t.source_uri, t.locator, now))
    spark = open_spark(config, master, app_name="millpond-evalset")
    table = ensure_table(spark, GOVERNANCE_EVAL_ITEMS, config.lakehouse)
    frame = spark.createDataFrame(list(rows.values()), schema=GOVERNANCE_EVAL_ITEMS.schema)
    result = merge_rows(spark, table, GOVERNANCE_EVAL_ITEMS.key, frame)
    progress(f"{GOVERNANCE_EVAL_ITEMS.name} v{result.version}")
    click.echo(f"eval set {name}: {len(rows)} distinct item(s) from {len(texts)} record(s), {result.inserted} new")


@evalset_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def list_command(as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """List the registered eval sets and their item counts."""
    config = effective_config(lakehouse, config_file)
    data = read_table(GOVERNANCE_EVAL_ITEMS, config.lakehouse, columns=["eval_set", "source_uri", "added_at"])
    sets: dict[str, dict[str, object]] = {}
    for row in [] if data is None else data.to_pylist():
        entry = sets.setdefault(row["eval_set"], {"items": 0, "sources": set(), "added_at": row["added_at"]})
        entry["items"] += 1  # type: ignore[operator]
        entry["sources"].add(row["source_uri"])  # type: ignore[union-attr]
        entry["added_at"] = min(entry["added_at"], row["added_at"])  # type: ignore[type-var]
    listing = [
        {"name": k, "items": v["items"], "sources": sorted(v["sources"]), "added_at": str(v["added_at"])}  # type: ignore[arg-type]
        for k, v in sorted(sets.items())
    ]
    if as_json:
        click.echo(json.dumps(listing))
        return
    if not listing:
        click.echo("no eval sets registered (see `millpond evalset add`)")
    for entry in listing:
        click.echo(f"{entry['name']}  {entry['items']} item(s)  from {', '.join(entry['sources'])}")
