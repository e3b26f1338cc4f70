"""`millpond why DOC_ID`: one document's path through every curation stage, read without a JVM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pyarrow.compute as pc

from curation.registry import stage_names
from jobs.context import effective_config, lakehouse_options
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DECISIONS, SILVER_DOCUMENTS, TableSpec
from lineage.tables import read_table


def _rows(spec: TableSpec, lakehouse: str | Path, doc_id: str, columns: list[str]) -> list[dict[str, Any]]:
    rows = read_table(spec, lakehouse, columns, where=pc.field("doc_id") == doc_id)
    return [] if rows is None else rows.to_pylist()


def explain(lakehouse: str | Path, doc_id: str) -> dict[str, Any]:
    """Where the document came from, every decision on it (oldest run first), and whether silver holds it."""
    bronze = _rows(BRONZE_DOCUMENTS, lakehouse, doc_id, ["source", "source_uri", "locator", "ingest_run_id"])
    silver = _rows(SILVER_DOCUMENTS, lakehouse, doc_id, ["curate_run_id", "lang", "license", "quality_score"])
    columns = SILVER_DECISIONS.schema.fieldNames()
    order = {name: i for i, name in enumerate(("bronze", *stage_names()))}
    decisions = sorted(
        _rows(SILVER_DECISIONS, lakehouse, doc_id, columns),
        key=lambda r: (r["decided_at"], r["run_id"], order.get(r["stage"], len(order))),
    )
    return {
        "doc_id": doc_id,
        "bronze": bronze[0] if bronze else None,
        "in_silver": bool(silver),
        "silver": silver[0] if silver else None,
        "decisions": decisions,
    }


@click.command("why")
@click.argument("doc_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def why_command(doc_id: str, as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """Show one document's path through every curation stage: kept, modified or dropped, and why."""
    config = effective_config(lakehouse, config_file)
    found = explain(config.lakehouse, doc_id)
    if as_json:
        click.echo(json.dumps(found, default=str, sort_keys=True))
        return
    if found["bronze"] is None and not found["decisions"]:
        raise click.ClickException(f"no document {doc_id} in {BRONZE_DOCUMENTS.name} or {SILVER_DECISIONS.name}")
    if found["bronze"]:
        b = found["bronze"]
        click.echo(f"{doc_id}  from {b['source']} {b['locator']}  (ingest run {b['ingest_run_id']})")
    run = None
    for d in found["decisions"]:
        if d["run_id"] != run:
            run = d["run_id"]
            click.echo(f"curate run {run}  ({d['decided_at']:%Y-%m-%d %H:%M:%S})")
        extra = []
        if d["reason"]:
            extra.append(d["reason"])
        if d["score"] is not None:
            extra.append(f"score {d['score']:.4g}")
        if d["cluster_id"]:
            extra.append(f"cluster {d['cluster_id']}")
        if d["duplicate_of"]:
            extra.append(f"duplicate of {d['duplicate_of']}")
        click.echo(f"  {d['stage']:<14} {d['action']:<9} {'  '.join(extra)}")
    click.echo(f"in {SILVER_DOCUMENTS.name}: {'yes' if found['in_silver'] else 'no'}")
