"""One id's path through the tables, read without a JVM: a document's source and every decision
on it, an interaction's events and the pairs made of it, a preference pair's origin.

What `millpond why` prints; plain Python over the Delta tables (`lineage.tables.read_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from lineage.catalog import (
    BRONZE_DOCUMENTS,
    BRONZE_INTERACTIONS,
    SILVER_DECISIONS,
    SILVER_DOCUMENTS,
    SILVER_INTERACTIONS,
    SILVER_PREFERENCES,
    TableSpec,
)
from lineage.tables import read_table


def _rows(spec: TableSpec, lakehouse: str | Path, doc_id: str, columns: list[str]) -> list[dict[str, Any]]:
    rows = read_table(spec, lakehouse, columns, where=pc.field("doc_id") == doc_id)
    return [] if rows is None else rows.to_pylist()


def in_bronze(lakehouse: str | Path, doc_id: str) -> bool:
    return bool(_rows(BRONZE_DOCUMENTS, lakehouse, doc_id, ["doc_id"]))


def explain(lakehouse: str | Path, doc_id: str, stages: Sequence[str]) -> dict[str, Any]:
    """Where the document came from, every decision on it (oldest run first, then in the order of
    `stages`, the curation stages), and whether silver holds it."""
    bronze = _rows(BRONZE_DOCUMENTS, lakehouse, doc_id, ["source", "source_uri", "locator", "ingest_run_id"])
    silver = _rows(SILVER_DOCUMENTS, lakehouse, doc_id, ["curate_run_id", "lang", "license", "quality_score"])
    columns = SILVER_DECISIONS.schema.fieldNames()
    order = {name: i for i, name in enumerate(("bronze", *stages))}
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


def explain_interaction(lakehouse: str | Path, interaction_id: str) -> dict[str, Any] | None:
    """An interaction's events (where they landed), its scrubbed row, the pairs made from it and
    the decisions on each pair it could have made; None when no table knows it."""

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
