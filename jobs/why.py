"""`millpond why DOC_ID`: one document's path through every curation stage, read without a JVM
(`lineage/explain.py`)."""

from __future__ import annotations

import json
from typing import Any

import click

from curation.registry import stage_names
from jobs.context import effective_config, lakehouse_options
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DECISIONS, SILVER_DOCUMENTS
from lineage.explain import explain, explain_interaction, explain_pair, in_bronze


@click.command("why")
@click.argument("doc_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def why_command(doc_id: str, as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """Show one document's path through every curation stage: kept, modified or dropped, and why.
    An interaction id or a preference pair id shows its events, pairs and decisions instead."""
    config = effective_config(lakehouse, config_file)
    other = explain_interaction(config.lakehouse, doc_id) or explain_pair(config.lakehouse, doc_id)
    if other is not None and not in_bronze(config.lakehouse, doc_id):
        _print_other(other, as_json)
        return
    found = explain(config.lakehouse, doc_id, stage_names())
    if other is not None:  # a preference record: the pairs `preferences build` made of it
        found["preference"] = {"pairs": other["pairs"], "decisions": other["decisions"]}
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
    if "preference" in found:
        for d in found["preference"]["decisions"]:
            click.echo(f"  preference candidate {d['doc_id']}: {d['action']} ({d['reason']})")
        for p in found["preference"]["pairs"]:
            click.echo(f"  in silver.preferences: pair {p['doc_id']} ({p['rule']}, run {p['build_run_id']})")


def _print_other(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(found, default=str, sort_keys=True))
        return
    if "interaction_id" in found:
        click.echo(f"interaction {found['interaction_id']}")
        for e in found["events"]:
            click.echo(f"  {e['event_type']:<9} {e['created_at']:%Y-%m-%d %H:%M:%S}  landed {e['locator']}")
        if found["silver"]:
            s = found["silver"]
            click.echo(
                f"  in silver.interactions: rating {s['rating']}, choice {s['choice']} (run {s['build_run_id']})"
            )
        for p in found["pairs"]:
            click.echo(f"  pair {p['doc_id']} ({p['rule']})")
    else:
        pair = found["pair"]
        click.echo(f"pair {found['pair_id']}" + (f" ({pair['rule']}, from {pair['interaction_id']}"
                   + (f" over {pair['other_interaction_id']}" if pair["other_interaction_id"] else "") + ")" if pair else ""))  # fmt: skip
    for d in found["decisions"]:
        extra = f" duplicate of {d['duplicate_of']}" if d["duplicate_of"] else ""
        click.echo(f"  candidate {d['doc_id']}: {d['action']} ({d['reason']}){extra}")
