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
    """Show one document's path through every curation stage: kept, modified or dropped, and why.
    An interaction id or a preference pair id shows its events, pairs and decisions instead."""
    config = effective_config(lakehouse, config_file)
    other = explain_interaction(config.lakehouse, doc_id) or explain_pair(config.lakehouse, doc_id)
    if other is not None and not _rows(BRONZE_DOCUMENTS, config.lakehouse, doc_id, ["doc_id"]):
        _print_other(other, as_json)
        return
    found = explain(config.lakehouse, doc_id)
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


def explain_interaction(lakehouse: str | Path, interaction_id: str) -> dict[str, Any] | None:
    """An interaction's events (where they landed), its scrubbed row, the pairs made from it and
    the decisions on each pair it could have made; None when no table knows it."""
    from lineage.catalog import BRONZE_INTERACTIONS, SILVER_INTERACTIONS, SILVER_PREFERENCES

    def rows(spec: TableSpec, condition: Any, columns: list[str]) -> list[dict[str, Any]]:
        found = read_table(spec, lakehouse, columns, where=condition)
        return [] if found is None else found.to_pylist()

    events = rows(BRONZE_INTERACTIONS, pc.field("interaction_id") == interaction_id,
                  ["event_id", "event_type", "created_at", "user", "locator", "ingest_run_id"])  # fmt: skip
    silver = rows(SILVER_INTERACTIONS, pc.field("interaction_id") == interaction_id,
                  ["rating", "choice", "build_run_id", "pii_counts"])  # fmt: skip
    pairs = rows(SILVER_PREFERENCES, (pc.field("interaction_id") == interaction_id)
                 | (pc.field("other_interaction_id") == interaction_id), ["doc_id", "rule", "build_run_id"])  # fmt: skip
    decisions = [
        d for d in rows(SILVER_DECISIONS, pc.field("stage") == "preferences", SILVER_DECISIONS.schema.fieldNames())
        if d["doc_id"].startswith(f"{interaction_id}:") or d["doc_id"].endswith(f":{interaction_id}")
    ]  # fmt: skip
    if not (events or silver or pairs or decisions):
        return None
    return {"interaction_id": interaction_id, "events": sorted(events, key=lambda e: e["created_at"]),
            "in_silver": bool(silver), "silver": silver[0] if silver else None, "pairs": pairs,
            "decisions": sorted(decisions, key=lambda d: (d["decided_at"], d["doc_id"]))}  # fmt: skip


def explain_pair(lakehouse: str | Path, pair_id: str) -> dict[str, Any] | None:
    """A preference pair: the rule and interactions it came from, and the decisions on it."""
    from lineage.catalog import SILVER_PREFERENCES

    found = read_table(SILVER_PREFERENCES, lakehouse, ["doc_id", "rule", "interaction_id", "other_interaction_id",
                                                       "build_run_id"], where=pc.field("doc_id") == pair_id)  # fmt: skip
    pair = [] if found is None else found.to_pylist()
    decisions = read_table(SILVER_DECISIONS, lakehouse, SILVER_DECISIONS.schema.fieldNames(),
                           where=pc.field("stage") == "preferences")  # fmt: skip
    mine = [] if decisions is None else [
        d for d in decisions.to_pylist() if f":{pair_id[:12]}" in d["doc_id"] or d["duplicate_of"] == pair_id
    ]  # fmt: skip
    if not pair and not mine:
        return None
    return {"pair_id": pair_id, "in_silver": bool(pair), "pair": pair[0] if pair else None, "decisions": mine}


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
