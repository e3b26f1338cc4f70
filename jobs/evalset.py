"""`millpond evalset add|list`: evaluation sets that curated data must not contain."""

from __future__ import annotations

import json

import click

from curation.decontaminate import eval_sets, register_eval_set
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.text_specs import read_texts
from lineage.catalog import GOVERNANCE_EVAL_ITEMS
from lineage.tables import latest_version


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
    spark = open_spark(config, master, app_name="millpond-evalset")
    distinct, result = register_eval_set(spark, config.lakehouse, name, texts)
    progress(f"{GOVERNANCE_EVAL_ITEMS.name} v{latest_version(GOVERNANCE_EVAL_ITEMS.path(config.lakehouse))}")
    click.echo(f"eval set {name}: {distinct} distinct item(s) from {len(texts)} record(s), {result.inserted} new")


@evalset_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def list_command(as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """List the registered eval sets and their item counts."""
    config = effective_config(lakehouse, config_file)
    listing = eval_sets(config.lakehouse)
    if as_json:
        click.echo(json.dumps(listing))
        return
    if not listing:
        click.echo("no eval sets registered (see `millpond evalset add`)")
    for entry in listing:
        click.echo(f"{entry['name']}  {entry['items']} item(s)  from {', '.join(entry['sources'])}")
