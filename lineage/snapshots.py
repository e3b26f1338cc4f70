"""Snapshots: named, immutable training sets cut from a pinned version of a curated table.

What goes in, in order: the filter (a small safe grammar turned into DataFrame expressions,
never SQL text), the purpose's policy (the license must be `allowed` for the purpose, the row
must carry consent for it), then a split by a hash of `doc_id` (train, validation, sealed
test), then mixing across sources on the train split: explicit weights or temperature
sampling, realized by dropping or repeating documents chosen by hash, so the same inputs
always give the same members. Every document left out is counted with its reason.
`write_snapshot` writes the members, their lineage edges and the snapshot row; the job
(`jobs/snapshot.py`) only checks the request, records the run and prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lineage.catalog import GOLD_SNAPSHOT_MEMBERS, GOLD_SNAPSHOTS, table
from lineage.edges import SNAPSHOT_MEMBER, drop_edges, edges, insert_edges
from lineage.errors import MillpondError, NotEnoughDataError
from lineage.locations import shards_folder
from lineage.runs import Run
from lineage.tables import ensure_table, latest_version, read_table, write_few_rows

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in")
SPLITS = ("train", "validation", "test")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class SnapshotSpecError(MillpondError, ValueError):
    """A snapshot request that cannot be honoured as written (bad filter, weights, name)."""


@dataclass(frozen=True)
class Clause:
    column: str
    operator: str
    value: Any  # str, int, float, bool, or a tuple of those for `in`

    def as_json(self) -> list[Any]:
        return [self.column, self.operator, list(self.value) if isinstance(self.value, tuple) else self.value]


@dataclass(frozen=True)
class SnapshotSpec:
    name: str
    source_table: str = "silver.documents"
    where: tuple[Clause, ...] = ()
    mix: tuple[tuple[str, float], ...] = ()  # (source, weight); empty: every source as it is
    temperature: float | None = None  # p(source) ~ n ** (1 / T); None: no temperature sampling
    purpose: str = "pretraining"
    validation: float = 0.01
    test: float = 0.01

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise SnapshotSpecError(f"snapshot name {self.name!r}: letters, digits, '.', '_' and '-' only")
        if self.mix and self.temperature is not None:
            raise SnapshotSpecError("give --mix or --temperature, not both")
        if self.temperature is not None and not self.temperature > 0:
            raise SnapshotSpecError("--temperature must be positive")
        if any(w < 0 or math.isnan(w) for _, w in self.mix) or (self.mix and sum(w for _, w in self.mix) <= 0):
            raise SnapshotSpecError("--mix weights must be non-negative with a positive sum")
        if not (0 <= self.validation < 1 and 0 <= self.test < 1 and self.validation + self.test < 1):
            raise SnapshotSpecError("validation and test shares must be in [0, 1) and leave room for training")


# ---------------------------------------------------------------------------------------------
# The filter grammar: CLAUSE [AND CLAUSE ...]; CLAUSE = COLUMN OP LITERAL; LITERAL = a number,
# a quoted string, true/false, or for `in` a parenthesized list of those.

_CLAUSE = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*(<=|>=|!=|=|<|>|\bnot\s+in\b|\bin\b)\s*(.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_mix(text: str | None) -> tuple[tuple[str, float], ...]:
    """`--mix web=0.7,code=0.3` as ((source, weight), ...); a clear error for anything else."""
    if not text:
        return ()
    out = []
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        try:
            out.append((name.strip(), float(weight)))
        except ValueError:
            raise SnapshotSpecError(f"--mix {text!r}: expected SOURCE=WEIGHT,... (e.g. web=0.7,code=0.3)") from None
        if not sep or not name.strip():
            raise SnapshotSpecError(f"--mix {text!r}: expected SOURCE=WEIGHT,... (e.g. web=0.7,code=0.3)")
    return tuple(out)


def parse_where(text: str, columns: dict[str, T.DataType]) -> tuple[Clause, ...]:
    """Clauses of a filter, checked against the table's columns (struct fields as `a.b`)."""
    clauses = []
    for part in _split_and(text):
        m = _CLAUSE.fullmatch(part)
        if not m:
            raise SnapshotSpecError(
                f"filter {part.strip()!r}: expected COLUMN OP VALUE with OP one of {', '.join(OPERATORS)}"
            )
        column, operator, literal = m.group(1), " ".join(m.group(2).lower().split()), m.group(3)
        if column not in columns:
            known = ", ".join(sorted(c for c in columns if "." not in c))
            raise SnapshotSpecError(f"filter {part.strip()!r}: no column {column!r}; columns: {known}")
        if operator in ("in", "not in"):
            if not (literal.startswith("(") and literal.endswith(")")):
                raise SnapshotSpecError(f"filter {part.strip()!r}: `{operator}` takes a list: (a, b, ...)")
            value: Any = tuple(_literal(item, part) for item in _split_list(literal[1:-1], part))
        else:
            value = _literal(literal, part)
        clauses.append(Clause(column, operator, value))
    return tuple(clauses)


def _split_outside_quotes(text: str, separator: re.Pattern[str]) -> list[str] | None:
    """`text` cut where `separator` matches outside quotes; None when a quote is left open."""
    parts, start, quote, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        else:
            m = separator.match(text, i)
            if m:
                parts.append(text[start:i])
                start = i = m.end()
                continue
        i += 1
    if quote:
        return None
    parts.append(text[start:])
    return parts


_AND = re.compile(r"(?<!\w)AND(?=\s|$)", re.IGNORECASE)
_COMMA = re.compile(",")


def _split_and(text: str) -> list[str]:
    """Split on AND outside quotes."""
    parts = _split_outside_quotes(text, _AND)
    if parts is None:
        raise SnapshotSpecError(f"filter {text!r}: an unterminated quote")
    if any(not p.strip() for p in parts):
        raise SnapshotSpecError(f"filter {text!r}: an empty clause")
    return parts


def _split_list(text: str, part: str) -> list[str]:
    items = _split_outside_quotes(text, _COMMA)
    if items is None or any(not i.strip() for i in items):
        raise SnapshotSpecError(f"filter {part.strip()!r}: an empty list item or an open quote")
    return items


def _literal(text: str, part: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        if text[0] in inner:
            raise SnapshotSpecError(f"filter {part.strip()!r}: a quote inside a quoted value")
        return inner
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _NUMBER.fullmatch(text):
        number = float(text)
        return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number
    raise SnapshotSpecError(f"filter {part.strip()!r}: {text!r} is not a number, true/false or a quoted string")


def filter_column(clauses: tuple[Clause, ...]) -> Column:
    """The clauses as one DataFrame predicate: values are literals, never SQL text."""
    predicate = F.lit(True)
    for c in clauses:
        col = F.col(c.column)
        if c.operator == "in":
            term = col.isin([F.lit(v) for v in c.value])
        elif c.operator == "not in":
            term = ~col.isin([F.lit(v) for v in c.value])
        else:
            value = F.lit(c.value)
            term = {
                "=": col == value,
                "!=": col != value,
                "<": col < value,
                "<=": col <= value,
                ">": col > value,
                ">=": col >= value,
            }[c.operator]
        predicate = predicate & F.coalesce(term, F.lit(False))  # NULL compares false: left out
    return predicate


def schema_columns(schema: T.StructType) -> dict[str, T.DataType]:
    """Column names a filter may use: top-level columns and one level of struct fields."""
    out: dict[str, T.DataType] = {}
    for f in schema.fields:
        out[f.name] = f.dataType
        if isinstance(f.dataType, T.StructType):
            for sub in f.dataType.fields:
                out[f"{f.name}.{sub.name}"] = sub.dataType
    return out


# ---------------------------------------------------------------------------------------------
# Mixing


def mixture(available: dict[str, int], mix: dict[str, float], temperature: float | None) -> dict[str, float]:
    """Target share of training examples per source.

    With `mix`: the given weights, normalized (a source not named gets 0). With a temperature
    T: p ~ n ** (1 / T), so T > 1 flattens the mixture towards scarce sources. Neither: as is.
    """
    if mix:
        unknown = sorted(set(mix) - set(available))
        if unknown:
            raise SnapshotSpecError(f"--mix names source(s) with no eligible documents: {', '.join(unknown)}")
        total = sum(mix.values())
        return {s: mix.get(s, 0.0) / total for s in available}
    if temperature is not None:
        powered = {s: n ** (1.0 / temperature) for s, n in available.items() if n > 0}
        total = sum(powered.values())
        return {s: powered.get(s, 0.0) / total for s in available}
    total = sum(available.values())
    return {s: n / total for s, n in available.items()}


def example_targets(available: dict[str, int], shares: dict[str, float]) -> dict[str, int]:
    """Training examples per source: the shares of a total equal to the documents available, so
    a source above its share is downsampled and one below it is repeated (upsampled)."""
    total = sum(available.values())
    return {s: int(round(shares.get(s, 0.0) * total)) for s in available}


def repeats(rank: int, available: int, target: int) -> int:
    """How often the document at hash-rank `rank` (0-based) of `available` is used to reach `target`."""
    if available == 0 or target == 0:
        return 0
    whole, extra = divmod(target, available)
    return whole + (1 if rank < extra else 0)


def word_count(text: str) -> Column:
    """Whitespace-separated words of a text column: how snapshots count training words."""
    return F.size(F.split(F.trim(text), r"\s+"))


def member_line() -> Column:
    """A member as one line of the content digest: `doc_id:text_sha256:split:repeats`."""
    return F.concat_ws(":", "doc_id", "text_sha256", "split", F.col("repeats").cast("string"))


def digest_lines(lines: list[str]) -> str:
    """sha256 over sorted member lines: the snapshot's content address."""
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def filter_json(clauses: tuple[Clause, ...]) -> str:
    return json.dumps([c.as_json() for c in clauses])


# ---------------------------------------------------------------------------------------------
# On Spark


def split_of(doc_id: Column, validation: float, test: float) -> Column:
    """train | validation | test by a hash of `doc_id` (stable across runs, tables and snapshots),
    or of the table's `split_key` where it has one."""
    u = F.conv(F.substring(F.sha2(F.concat(F.lit("split:"), doc_id), 256), 1, 8), 16, 10).cast("double") / 4294967296.0
    return F.when(u < test, "test").when(u < test + validation, "validation").otherwise("train")


# What to do about each reason a document is left out of a snapshot.
EXCLUSION_FIXES = {
    "license_unknown": "run the license stage, or declare licenses in the manifest",
    "license_not_allowed": "their licenses are not on the purpose's allowlist ([curate.license.purposes])",
    "no_consent": "declare the purpose in the manifest's consent",
    "filtered_out": "loosen --where",
    "downsampled_by_mix": "give their sources a weight in --mix",
}


def left_out(excluded: dict[str, int]) -> str:
    """`license_unknown 1,030 (run the license stage, ...)`: the counts left out by reason, with the fixes."""
    reasons = sorted(excluded.items(), key=lambda kv: -kv[1])
    counts = ", ".join(f"{reason} {count:,}" for reason, count in reasons)
    fixes = "; ".join(EXCLUSION_FIXES[r] for r, _ in reasons if r in EXCLUSION_FIXES)
    return counts + (f" ({fixes})" if fixes else "")


def require_training_split(spec: SnapshotSpec, per_split: dict[str, int], excluded: dict[str, int]) -> None:
    """Refuse a snapshot with nothing to train on, saying how many documents were left out and why."""
    if per_split.get("train", 0) > 0:
        return
    members = sum(per_split.values())
    total = members + sum(excluded.values())
    if total == 0:
        raise NotEnoughDataError(f"snapshot {spec.name}: {spec.source_table} is empty (run `millpond curate` first)")
    if members == 0:
        raise NotEnoughDataError(
            f"snapshot {spec.name}: 0 of {total:,} documents are allowed for {spec.purpose}: {left_out(excluded)}"
        )
    raise NotEnoughDataError(
        f"snapshot {spec.name}: its train split would be empty ({members:,} of {total:,} documents are allowed for "
        f"{spec.purpose}, all of them in validation or test): curate more documents, or lower --validation and --test"
    )


def require_train_documents(snapshot: dict[str, Any], to_do: str) -> None:
    """Refuse work on a snapshot (a row of gold.snapshots) whose train split holds no text, before any
    work: such a snapshot was cut before snapshots refused to be empty."""
    if snapshot["train_rows"] and snapshot["words"]:
        return
    excluded = dict(snapshot["excluded"] or {})
    why = f": it left out {left_out(excluded)}" if excluded else ""
    raise NotEnoughDataError(
        f"snapshot {snapshot['name']} has no text in its train split to {to_do}{why}; cut a new snapshot once "
        f"documents are allowed for {snapshot['purpose']} (`millpond snapshot show {snapshot['name']}`)"
    )


@dataclass
class Selection:
    members: DataFrame  # doc_id, source, split, repeats, text_sha256, words
    excluded: dict[str, int]
    shares: dict[str, float]


def select_members(frame: DataFrame, spec: SnapshotSpec) -> Selection:
    """The members of a snapshot of `frame` (a pinned table version) and what was left out, by reason."""
    excluded: dict[str, int] = {}
    rows = frame.select(
        "doc_id",
        "source",
        "text_sha256",
        word_count("text").alias("words"),
        filter_column(spec.where).alias("_match"),
        F.coalesce(F.col("license_policy")[spec.purpose], F.lit("unknown")).alias("_license"),
        F.coalesce(F.array_contains("consent", spec.purpose), F.lit(False)).alias("_consent"),
        # A table whose rows share a prompt (preference pairs) splits by it: one prompt, one split.
        (F.col("split_key") if "split_key" in frame.columns else F.col("doc_id")).alias("_split_key"),
    )
    reason = (
        F.when(~F.col("_match"), "filtered_out")
        .when(F.col("_license") == "not_allowed", "license_not_allowed")
        .when(F.col("_license") != "allowed", "license_unknown")
        .when(~F.col("_consent"), "no_consent")
    )
    rows = rows.withColumn("_excluded", reason).localCheckpoint(eager=True)
    for row in rows.where(F.col("_excluded").isNotNull()).groupBy("_excluded").count().collect():
        excluded[row[0]] = row[1]
    eligible = rows.where(F.col("_excluded").isNull()).withColumn(
        "split", split_of(F.col("_split_key"), spec.validation, spec.test)
    )
    train_counts = {r[0]: r[1] for r in eligible.where("split = 'train'").groupBy("source").count().collect()}
    shares = mixture(train_counts, dict(spec.mix), spec.temperature) if train_counts else {}
    targets = example_targets(train_counts, shares) if train_counts else {}
    from pyspark.sql.window import Window

    by_hash = Window.partitionBy("source").orderBy(F.sha2(F.concat(F.lit("mix:"), F.col("doc_id")), 256))
    target_col = F.create_map(*[x for s, t in targets.items() for x in (F.lit(s), F.lit(t))]) if targets else None
    available_col = (
        F.create_map(*[x for s, n in train_counts.items() for x in (F.lit(s), F.lit(n))]) if train_counts else None
    )
    train = eligible.where("split = 'train'")
    if target_col is not None:
        rank = F.row_number().over(by_hash) - 1
        available = available_col[F.col("source")]
        target = target_col[F.col("source")]
        whole = F.floor(target / available)
        extra = target - whole * available
        train = train.withColumn("repeats", (whole + F.when(rank < extra, 1).otherwise(0)).cast("int"))
    held_out = eligible.where("split != 'train'").withColumn("repeats", F.lit(1))
    members = train.unionByName(held_out) if target_col is not None else held_out
    members = members.localCheckpoint(eager=True)
    dropped = members.where("repeats = 0").count()
    if dropped:
        excluded["downsampled_by_mix"] = dropped
    members = members.where("repeats > 0").select("doc_id", "source", "split", "repeats", "text_sha256", "words")
    return Selection(members=members, excluded=excluded, shares=shares)


def member_rows(lakehouse: Any, snapshot: dict[str, Any], columns: list[str]) -> list[dict[str, Any]]:
    """A snapshot's rows as its source table held them at the pinned version, each with its
    `split`, in `doc_id` order; read with delta-rs (no JVM), for the small tables (preference
    pairs, demonstrations) that trainers read whole."""
    import pyarrow.compute as pc

    from lineage.catalog import GOLD_SNAPSHOT_MEMBERS, table
    from lineage.tables import read_table

    members = read_table(GOLD_SNAPSHOT_MEMBERS, lakehouse, ["doc_id", "split"],
                         where=pc.field("snapshot") == snapshot["name"])  # fmt: skip
    splits = (
        {} if members is None else dict(zip(members["doc_id"].to_pylist(), members["split"].to_pylist(), strict=True))
    )
    if not splits:
        return []
    source = read_table(table(snapshot["source_table"]), lakehouse, ["doc_id", *columns],
                        version=snapshot["source_version"], where=pc.field("doc_id").isin(sorted(splits)))  # fmt: skip
    rows = [] if source is None else source.to_pylist()
    return sorted((r | {"split": splits[r["doc_id"]]} for r in rows), key=lambda r: r["doc_id"])


def members_of_snapshots(lakehouse: Any, prefix: str) -> set[str]:
    """The ids any snapshot whose name starts with `prefix` holds (the pairs earlier flywheel turns trained on)."""
    import pyarrow.compute as pc

    from lineage.catalog import GOLD_SNAPSHOT_MEMBERS
    from lineage.tables import read_table

    members = read_table(GOLD_SNAPSHOT_MEMBERS, lakehouse, ["snapshot", "doc_id"])
    if members is None:
        return set()
    return set(members.filter(pc.starts_with(members["snapshot"], prefix))["doc_id"].to_pylist())


def snapshot_row(lakehouse: Any, name: str) -> dict[str, Any] | None:
    rows = read_table(GOLD_SNAPSHOTS, lakehouse)
    found = [r for r in (rows.to_pylist() if rows is not None else []) if r["name"] == name]
    return found[0] if found else None


def write_snapshot(
    spark: SparkSession, lakehouse: Any, spec: SnapshotSpec, path: str, version: int, run: Run,
    progress: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Select the members of `spec` from `path` at `version` and write them, their lineage edges and
    the snapshot row (members first: a create killed half way leaves no snapshot row, and a re-run
    replaces its members); returns the summary `millpond snapshot create` prints."""
    frame = spark.read.format("delta").option("versionAsOf", version).load(path)
    progress(f"selecting the members of {spec.name} from {spec.source_table} v{version}")
    selection = select_members(frame, spec)
    members = selection.members
    per_split = {r["split"]: r["count"] for r in members.groupBy("split").count().collect()}
    require_training_split(spec, per_split, selection.excluded)  # before anything is written
    members_table = ensure_table(spark, GOLD_SNAPSHOT_MEMBERS, lakehouse)
    ensure_table(spark, GOLD_SNAPSHOTS, lakehouse)
    # A create killed after writing members but before its snapshot row left them behind.
    members_table.delete(F.col("snapshot") == F.lit(spec.name))
    drop_edges(spark, lakehouse, spec.name, SNAPSHOT_MEMBER)
    progress(f"writing {GOLD_SNAPSHOT_MEMBERS.name}")
    members.select(
        F.lit(spec.name).alias("snapshot"), "doc_id", "source", "split", "repeats", "text_sha256"
    ).write.format("delta").mode("append").save(GOLD_SNAPSHOT_MEMBERS.path(lakehouse))

    insert_edges(
        spark,
        lakehouse,
        edges(
            members,
            child=F.lit(spec.name),
            child_table=GOLD_SNAPSHOTS.name,
            parent="doc_id",
            parent_table=spec.source_table,
            relation=SNAPSHOT_MEMBER,
            run_id=run.run_id,
            table_version=version,
        ),  # fmt: skip
    )
    train = members.where("split = 'train'")
    by_source = {
        r["source"]: (int(r["examples"]), int(r["words"]))
        for r in train.groupBy("source")
        .agg(F.sum("repeats").alias("examples"), F.sum(F.col("words") * F.col("repeats")).alias("words"))
        .collect()
    }
    train_rows = sum(e for e, _ in by_source.values())
    words = sum(w for _, w in by_source.values())
    realized = {s: round(w / words, 4) if words else 0.0 for s, (_, w) in sorted(by_source.items())}
    lines = [r[0] for r in members.select(member_line()).toLocalIterator()]
    row = {
        "name": spec.name,
        "source_table": spec.source_table,
        "source_version": version,
        "filter": filter_json(spec.where),
        "mix": dict(spec.mix) or None,
        "temperature": spec.temperature,
        "purpose": spec.purpose,
        "splits": {"validation": spec.validation, "test": spec.test},
        "rows": sum(per_split.values()),
        "train_rows": train_rows,
        "words": words,
        "tokens": None,
        "excluded": selection.excluded,
        "realized_mix": realized,
        "content_digest": digest_lines(lines),
        "run_id": run.run_id,
        "created_at": datetime.now(UTC),
        "amended_by": None,
    }
    write_few_rows(spark, GOLD_SNAPSHOTS, lakehouse, [row], append=True)  # the snapshot exists from this commit
    run.output_versions = {
        GOLD_SNAPSHOTS.name: latest_version(GOLD_SNAPSHOTS.path(lakehouse)),
        GOLD_SNAPSHOT_MEMBERS.name: latest_version(GOLD_SNAPSHOT_MEMBERS.path(lakehouse)),
    }
    return snapshot_summary(row) | {
        "splits": {s: per_split.get(s, 0) for s in ("train", "validation", "test")},
        "requested_mix": {s: round(p, 4) for s, p in sorted(selection.shares.items())},
        "examples_by_source": {s: e for s, (e, _) in sorted(by_source.items())},
    }


def snapshot_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A gold.snapshots row as `snapshot show` prints it."""
    return {
        "name": row["name"],
        "source_table": row["source_table"],
        "source_version": row["source_version"],
        "filter": json.loads(row["filter"]) if row["filter"] else [],
        "mix": dict(row["mix"] or {}),
        "temperature": row["temperature"],
        "purpose": row["purpose"],
        "rows": row["rows"],
        "train_rows": row["train_rows"],
        "words": row["words"],
        "tokens": row["tokens"],
        "excluded": dict(row["excluded"] or {}),
        "realized_mix": dict(row["realized_mix"] or {}),
        "content_digest": row["content_digest"],
        "run_id": row["run_id"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
    }


def list_snapshots(lakehouse: Any) -> list[dict[str, Any]]:
    """Every snapshot as `snapshot list` prints it, by name."""
    rows = read_table(GOLD_SNAPSHOTS, lakehouse)
    return sorted(
        (snapshot_summary(r) for r in (rows.to_pylist() if rows is not None else [])), key=lambda s: s["name"]
    )


def snapshot_details(lakehouse: Any, name: str) -> dict[str, Any]:
    """One snapshot as `snapshot show` prints it: its summary, members by split, training examples
    by source, and the tokens of every cut of it into shards."""
    row = existing_snapshot(lakehouse, name)
    summary = snapshot_summary(row)
    import pyarrow.dataset as ds

    mine = ds.field("snapshot") == name  # read only this snapshot's members
    members = read_table(GOLD_SNAPSHOT_MEMBERS, lakehouse, columns=["source", "split", "repeats"], where=mine)
    splits: dict[str, int] = defaultdict(int)
    sources: dict[str, int] = defaultdict(int)
    for m in members.to_pylist() if members is not None else []:
        splits[m["split"]] += 1
        if m["split"] == "train":
            sources[m["source"]] += m["repeats"]
    summary["splits"] = {s: splits.get(s, 0) for s in ("train", "validation", "test")}
    summary["examples_by_source"] = dict(sorted(sources.items()))
    # Token counts depend on the tokenizer: one entry per cut of the snapshot into shards.
    summary["tokens_by_tokenizer"] = {
        m["tokenizer_digest"][:12]: m["tokens"]
        for m in (json.loads(p.read_text()) for p in sorted(shards_folder(lakehouse, name).glob("*/manifest.json")))
        if m.get("content_digest") == summary["content_digest"]
    }
    return summary


def member_frames(spark: SparkSession, lakehouse: Any, snapshot: dict[str, Any]) -> tuple[DataFrame, DataFrame]:
    """The snapshot's members, and the text and domain of its source table at the pinned version."""
    members = (
        spark.read.format("delta")
        .load(GOLD_SNAPSHOT_MEMBERS.path(lakehouse))
        .where(F.col("snapshot") == F.lit(snapshot["name"]))
    )
    source = table(snapshot["source_table"])
    texts = (
        spark.read.format("delta")
        .option("versionAsOf", snapshot["source_version"])
        .load(source.path(lakehouse))
        .select("doc_id", "text", F.coalesce(F.col("domain"), F.lit("none")).alias("domain"))
    )
    return members, texts


# The columns a table needs to be snapshotted.
NEEDED = ("doc_id", "text", "source", "text_sha256", "license_policy", "consent")


class SnapshotExistsError(MillpondError, ValueError):
    """A snapshot of that name exists: snapshots are immutable."""


class SnapshotNotFoundError(MillpondError, ValueError):
    """No snapshot of that name."""


def snapshot_source(spark: SparkSession, lakehouse: str | Path, spec: SnapshotSpec) -> tuple[str, int]:
    """The Delta path and current version of the table `spec` cuts from; refused when the table
    cannot be snapshotted, does not exist yet, or the name is taken."""
    try:
        source_spec = table(spec.source_table)
    except KeyError as err:
        raise SnapshotSpecError(str(err.args[0])) from None
    missing = [c for c in NEEDED if c not in source_spec.schema.fieldNames()]
    if missing:
        raise SnapshotSpecError(f"{spec.source_table} cannot be snapshotted: it has no {', '.join(missing)}")
    existing = snapshot_row(lakehouse, spec.name)
    if existing is not None:
        raise SnapshotExistsError(
            f"snapshot {spec.name!r} exists (cut from {existing['source_table']} v{existing['source_version']} "
            f"at {existing['created_at']:%Y-%m-%d %H:%M}); snapshots are immutable: choose a new name"
        )
    path = source_spec.path(lakehouse)
    if not DeltaTable.isDeltaTable(spark, path):
        raise SnapshotSpecError(f"{spec.source_table} does not exist yet: run `millpond curate` first")
    return path, latest_version(path)


def existing_snapshot(lakehouse: str | Path, name: str) -> dict[str, Any]:
    """The snapshot's row; a clear error when there is none."""
    row = snapshot_row(lakehouse, name)
    if row is None:
        raise SnapshotNotFoundError(f"no snapshot {name!r}; see `millpond snapshot list`")
    return row
