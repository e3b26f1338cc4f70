"""Finding a person's rows: from the identifiers of a data subject request to document ids,
closed over `lineage.edges`, across every table the catalog declares document ids for.

Identifiers are data, never SQL text: every comparison is a DataFrame expression over literal
values, so an id such as `x' OR '1'='1` matches only itself. The job turns each identifier
into its `SubjectForms` (it holds the PII key); this module only matches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lineage.catalog import (
    GOLD_SNAPSHOT_MEMBERS,
    GOLD_SNAPSHOTS,
    GOVERNANCE_TOMBSTONES,
    LINEAGE_EDGES,
    TABLES,
    TableSpec,
)
from lineage.edges import DERIVED_FROM, DUPLICATE_OF, PAIR_OF, SCRUBBED_FROM
from lineage.errors import MillpondError
from lineage.keys import SUBJECT_ID, e164, subject_key, value_hmac
from lineage.tables import load_delta

# Relations whose two ends hold the same person's data: a derived row and its source.
SAME_DATA = (DERIVED_FROM, SCRUBBED_FROM, PAIR_OF)
DUPLICATE_POLICIES = ("copies", "own")


@dataclass(frozen=True)
class ErasurePolicy:
    """The `[lineage]` section: what a data subject request covers and how erasure cleans up."""

    # copies: the other members of the person's exact and near-duplicate clusters are the person's
    # text too and are erased with it; own: only the person's own documents, the clusters reported.
    duplicates: str = "copies"
    # Files older than this are removed by the VACUUM after an erasure; 0 removes every file the
    # erasure replaced (time travel to earlier versions of the erased tables ends with it).
    vacuum_retention_hours: int = 0
    # Scan clear text (bronze) for the e-mail addresses and phone numbers of the request, so that
    # documents dropped before the pii stage indexed them are found too.
    scan_text: bool = True
    # How long an erasure waits for a live server to roll an open landing file holding the person's
    # events (the server's [serve] roll_seconds bounds it); what stays open is reported pending.
    landing_wait_seconds: float = 90.0

    def __post_init__(self) -> None:
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"[lineage] duplicates must be one of {', '.join(DUPLICATE_POLICIES)}")
        if self.vacuum_retention_hours < 0:
            raise ValueError("[lineage] vacuum_retention_hours must be 0 or more")


@dataclass(frozen=True)
class SubjectForms:
    """How one identifier of a request can appear in the lakehouse."""

    kind: str  # EMAIL_ADDRESS, PHONE_NUMBER or SUBJECT_ID
    label: str  # its keyed hash: how requests, tombstones and certificates name it
    clear: tuple[str, ...] = ()  # exact values in clear subject columns
    clear_digits: tuple[str, ...] = ()  # a phone number's digits, matched in clear subject columns
    keyed: tuple[str, ...] = ()  # keyed hashes in keyed subject columns
    text_literals: tuple[str, ...] = ()  # lower-case substrings of text that mention it (an e-mail)
    text_patterns: tuple[str, ...] = ()  # Java regexes over text that mention it (a phone, any layout)
    text_hints: tuple[str, ...] = ()  # a substring every pattern match contains (a cheap pre-check)


PHONE_SEPARATORS = r"[\s().\-/]{0,3}"


class RequestError(MillpondError, ValueError):
    """A data subject request that cannot run as asked."""


def subject_forms(identifier: str, key: bytes, phone_region: str = "US") -> SubjectForms:
    """Every form the identifier takes in the lakehouse: clear values, keyed hashes, text patterns."""
    kind, value = subject_key(identifier)
    if not value:
        raise RequestError("an empty subject identifier matches nothing")
    keyed = value_hmac(key, kind, value, phone_region)
    if kind == "EMAIL_ADDRESS":
        lowered = value.lower()
        return SubjectForms(
            kind, keyed, clear=tuple(sorted({value, lowered})), keyed=(keyed,), text_literals=(lowered,)
        )
    if kind == "PHONE_NUMBER":
        number = e164(value, phone_region)
        try:
            parsed = phonenumbers.parse(number, phone_region)
            national, country = str(parsed.national_number), str(parsed.country_code)
        except phonenumbers.NumberParseException:
            national, country = number.lstrip("+"), ""
        prefix = f"(?:\\+?{country}{PHONE_SEPARATORS})?" if country else ""
        pattern = f"(?<![0-9]){prefix}{PHONE_SEPARATORS.join(national)}(?![0-9])"
        return SubjectForms(
            kind,
            keyed,
            clear=(value,),
            clear_digits=tuple(sorted({number.lstrip("+"), national})),
            keyed=(keyed,),
            text_patterns=(pattern,),
            text_hints=(national[-4:],),
        )
    clear = {value, value.lower()} if "@" in value else {value}
    return SubjectForms(SUBJECT_ID, keyed, clear=tuple(sorted(clear)), keyed=(keyed,))


@dataclass
class Lineage:
    """What a request found: documents, rows per table, clusters and snapshots."""

    seeds: list[str] = field(default_factory=list)  # documents naming the person directly
    documents: list[str] = field(default_factory=list)  # seeds closed over the edges (what erasure removes)
    clusters: dict[str, list[str]] = field(default_factory=dict)  # cluster id -> member documents
    kept_copies: list[str] = field(default_factory=list)  # cluster members the policy leaves (own)
    rows: dict[str, list[str]] = field(default_factory=dict)  # table -> document ids of its rows found
    row_counts: dict[str, int] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # name, version, source_table, members


def _text_match(column: Column, kind: T.DataType, subject: SubjectForms) -> Column | None:
    def matches(value: Column) -> Column:
        lowered = F.lower(value)
        found = F.lit(False)
        for literal in subject.text_literals:
            found = found | (F.instr(lowered, F.lit(literal)) > 0)
        for pattern, hint in zip(subject.text_patterns, subject.text_hints, strict=True):
            # CASE evaluates the regex only where the hint (a few digits) occurs.
            found = found | F.when(F.instr(value, F.lit(hint)) > 0, value.rlike(pattern)).otherwise(False)
        return found

    if not (subject.text_literals or subject.text_patterns):
        return None
    if isinstance(kind, T.MapType):
        return F.exists(F.map_values(column), lambda v: F.coalesce(matches(v), F.lit(False)))
    return F.coalesce(matches(column), F.lit(False))


def _subject_match(column: Column, kind: T.DataType, spec: TableSpec, subject: SubjectForms) -> Column | None:
    values = list(subject.keyed if spec.subjects_keyed else subject.clear)
    digits = [] if spec.subjects_keyed else list(subject.clear_digits)
    if not values and not digits:
        return None

    def matches(value: Column) -> Column:
        found = value.isin(values) if values else F.lit(False)
        if digits:
            found = found | F.regexp_replace(value, "[^0-9]", "").isin(digits)
        return F.coalesce(found, F.lit(False))

    if isinstance(kind, T.ArrayType):
        return F.exists(column, matches)
    return matches(column)


def match_condition(spec: TableSpec, schema: T.StructType, subjects: list[SubjectForms], scan_text: bool) -> Column:
    """Rows of a table that name one of the subjects: in a subject column, or mentioned in text."""
    condition = F.lit(False)
    types = {f.name: f.dataType for f in schema.fields}
    for subject in subjects:
        for name in spec.subject_columns:
            if name in types:
                found = _subject_match(F.col(name), types[name], spec, subject)
                condition = condition if found is None else condition | found
        if scan_text and not spec.subjects_keyed:
            for name in spec.text_columns:
                if name in types:
                    found = _text_match(F.col(name), types[name], subject)
                    condition = condition if found is None else condition | found
    return condition


def _ids(frame: DataFrame, column: str) -> set[str]:
    return {r[0] for r in frame.select(column).where(F.col(column).isNotNull()).distinct().collect()}


def seed_documents(
    spark: SparkSession, lakehouse: str | Path, subjects: list[SubjectForms], scan_text: bool = True
) -> set[str]:
    """Documents that name a subject directly, in any table that declares subject or text columns."""
    seeds: set[str] = set()
    for spec in TABLES.values():
        if not spec.document_columns or not (spec.subject_columns or spec.text_columns):
            continue
        frame = load_delta(spark, spec, lakehouse)
        if frame is None:
            continue
        found = frame.where(match_condition(spec, frame.schema, subjects, scan_text))
        seeds |= _ids(found, spec.document_columns[0])
    return seeds


def close_over_edges(
    spark: SparkSession, lakehouse: str | Path, seeds: set[str], duplicates: str
) -> tuple[set[str], dict[str, list[str]], set[str]]:
    """(documents, clusters, copies left): the seeds, everything derived from or by them, and, under
    the `copies` policy, the other members of their duplicate clusters; repeated until nothing new."""
    frame = load_delta(spark, LINEAGE_EDGES, lakehouse)
    documents = set(seeds)
    clusters: dict[str, set[str]] = {}
    if frame is None or not seeds:
        return documents, {}, set()
    doc_edges = frame.where(F.col("relation").isin(*SAME_DATA, DUPLICATE_OF)).select(
        "child_id", "parent_id", "relation", "cluster_id"
    )
    frontier = set(seeds)
    while frontier:
        ends = F.col("child_id").isin(list(frontier)) | F.col("parent_id").isin(list(frontier))
        touching = doc_edges.where(ends).collect()
        found: set[str] = set()
        new_clusters = set()
        for edge in touching:
            if edge["relation"] in SAME_DATA:
                found |= {edge["child_id"], edge["parent_id"]}
            elif edge["cluster_id"] is not None and edge["cluster_id"] not in clusters:
                new_clusters.add(edge["cluster_id"])
        if new_clusters:
            members = doc_edges.where(F.col("cluster_id").isin(list(new_clusters))).collect()
            for edge in members:
                clusters.setdefault(edge["cluster_id"], set()).update((edge["child_id"], edge["parent_id"]))
        if duplicates == "copies":
            for cluster in new_clusters:
                found |= clusters[cluster]
        frontier = found - documents
        documents |= found
    copies_left = set().union(*clusters.values()) - documents if clusters else set()
    return documents, {k: sorted(v) for k, v in sorted(clusters.items())}, copies_left


def rows_of(spark: SparkSession, lakehouse: str | Path, documents: set[str]) -> dict[str, tuple[int, list[str]]]:
    """Per table that declares document columns: (rows that name one of `documents`, their documents)."""
    found: dict[str, tuple[int, list[str]]] = {}
    ids = sorted(documents)
    for spec in TABLES.values():
        if not spec.document_columns or not ids:
            continue
        frame = load_delta(spark, spec, lakehouse)
        if frame is None:
            continue
        condition = F.lit(False)
        for column in spec.document_columns:
            condition = condition | F.col(column).isin(ids)
        hits = frame.where(condition).select(*spec.document_columns).collect()
        if not hits:
            continue
        named = {value for row in hits for value in row if value in documents}
        found[spec.name] = (len(hits), sorted(named))
    return found


def snapshots_holding(spark: SparkSession, lakehouse: str | Path, documents: set[str]) -> list[dict[str, Any]]:
    """The snapshots with a member among `documents`: name, source table, pinned version, members."""
    members = load_delta(spark, GOLD_SNAPSHOT_MEMBERS, lakehouse)
    snapshots = load_delta(spark, GOLD_SNAPSHOTS, lakehouse)
    if members is None or snapshots is None or not documents:
        return []
    held = (
        members.where(F.col("doc_id").isin(sorted(documents)))
        .groupBy("snapshot")
        .agg(
            F.count("*").alias("members"),
            F.sum(F.when(F.col("split") == "train", F.col("repeats")).otherwise(0)).alias("train_examples"),
        )
    )
    rows = held.join(snapshots.withColumnRenamed("name", "snapshot"), "snapshot").collect()
    return sorted(
        (
            {
                "name": r["snapshot"],
                "source_table": r["source_table"],
                "version": int(r["source_version"]),
                "members": int(r["members"]),
                "train_examples": int(r["train_examples"] or 0),
            }
            for r in rows
        ),
        key=lambda s: s["name"],
    )


def tombstoned_documents(spark: SparkSession, lakehouse: str | Path, labels: list[str]) -> set[str]:
    """Documents tombstoned by earlier requests that named one of these subjects."""
    stones = load_delta(spark, GOVERNANCE_TOMBSTONES, lakehouse)
    if stones is None or not labels:
        return set()
    requests = stones.where((F.col("kind") == "subject") & F.col("value").isin(labels)).select("request_id")
    return _ids(stones.where(F.col("kind") == "doc_id").join(requests, "request_id", "left_semi"), "value")


def find_lineage(
    spark: SparkSession, lakehouse: str | Path, subjects: list[SubjectForms], policy: ErasurePolicy
) -> Lineage:
    """Everything the lakehouse holds of these subjects, as lineage sees it."""
    seeds = seed_documents(spark, lakehouse, subjects, policy.scan_text)
    # An erasure that died part way left tombstones naming its documents: a rerun finishes them.
    unfinished = tombstoned_documents(spark, lakehouse, [s.label for s in subjects])
    documents, clusters, copies_left = close_over_edges(spark, lakehouse, seeds | unfinished, policy.duplicates)
    rows = rows_of(spark, lakehouse, documents)
    present = set().union(*(set(ids) for _, ids in rows.values())) if rows else set()
    return Lineage(
        seeds=sorted(seeds),
        documents=sorted(documents & present),
        clusters=clusters,
        kept_copies=sorted(copies_left),
        rows={name: ids for name, (_, ids) in rows.items()},
        row_counts={name: count for name, (count, _) in rows.items()},
        snapshots=snapshots_holding(spark, lakehouse, documents),
    )
