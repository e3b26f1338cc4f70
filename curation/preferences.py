"""From interaction events to preference pairs: `silver.interactions` and `silver.preferences`.

An interaction is one request with its response and the feedback on it. Pairs come from four
rules over scrubbed interactions and external preference records:
- `choice`: the user picked one of `n` alternatives: chosen over each other alternative;
- `edit`: the user corrected an answer: the edit over the answer it corrects;
- `rating`: an up-rated and a down-rated answer to the same normalized prompt;
- `external`: a `preference-jsonl` record in bronze.documents (chosen and rejected dialogues,
  such as Anthropic's hh-rlhf): the prompt is their shared turns, the answers their last turns.
No pair is made from a user without `preference` consent, with chosen equal to rejected, or
with a prompt that holds a registered eval item, or that repeats another pair exactly or nearly;
such candidates are decisions with a reason, as documents are. Pair ids are content-addressed
(prompt, chosen, rejected), so a pair made twice is one pair and the copy is an exact duplicate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from curation.decisions import DECISION, DROPPED, KEPT, decision
from curation.decontaminate import DecontaminateParams, EvalIndex, decontaminate
from curation.fuzzy_dedup import NEAR_DUPLICATE, FuzzyDedupParams, fuzzy_dedup
from curation.licensing import LicenseParams, carry_license
from curation.pii import PiiParams, pii
from lineage.catalog import (
    BRONZE_DOCUMENTS,
    BRONZE_INTERACTIONS,
    PREFERENCE_DOMAIN,
    SILVER_DECISIONS,
    SILVER_INTERACTIONS,
    SILVER_PREFERENCES,
)
from lineage.chat import render_prompt
from lineage.edges import edges, insert_edges
from lineage.tables import ensure_table, latest_version, merge_rows

CHOICE, EDIT, RATING, EXTERNAL = "choice", "edit", "rating", "external"
RULES = (CHOICE, EDIT, RATING, EXTERNAL)
SERVED = "served"  # the `origin` of rows from the served model's interactions (else EXTERNAL)
SOURCE = "interactions"  # the `source` of pairs made from the served model's interactions
LICENSE = "first-party"  # what the platform's own users wrote and were answered, under their consent


@dataclass(frozen=True)
class PreferenceParams:
    """The `[preferences]` section."""

    purpose: str = "preference"  # the consent a user must have given for a pair to be made
    max_rating_pairs_per_prompt: int = 16  # up x down answers to one prompt grow quadratically
    min_chars: int = 1  # chosen and rejected shorter than this (after stripping) make no pair


def normalized_prompt(text: str) -> str:
    """Case and whitespace do not make two prompts different."""
    return re.sub(r"\s+", " ", text).strip().lower()


def prompt_key(text: str) -> str:
    """The hash that groups equal prompts and splits pairs (a prompt never in train and test)."""
    return hashlib.sha256(normalized_prompt(text).encode()).hexdigest()[:32]


def pair_id(prompt: str, chosen: str, rejected: str) -> str:
    return hashlib.sha256("\x1f".join(("pair", prompt, chosen, rejected)).encode()).hexdigest()[:32]


_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|User|System):[ \t]?")
_ROLE = {"Human": "user", "User": "user", "Assistant": "assistant", "System": "system"}


def dialogue_turns(text: str) -> list[tuple[str, str]] | None:
    """`Human: ... Assistant: ...` turns (the hh-rlhf layout) as (role, content), or None when the
    text is not a dialogue."""
    marks = list(_TURN.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        return None
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [(_ROLE[m[1]], text[m.end() : end].strip()) for m, end in zip(marks, ends, strict=True)]


@dataclass(frozen=True)
class ExternalPair:
    """A preference record split into the prompt's messages and the two answers, or why it cannot be."""

    messages: list[dict[str, str]]
    chosen: str
    rejected: str
    refused: str | None = None


def external_pair(chosen: str, rejected: str, prompt: str | None = None) -> ExternalPair:
    """The prompt and answers of a chosen/rejected record: a separate `prompt` when the record has
    one; else the turns two dialogues share (their last turns being the assistant's answers); else,
    for plain texts, their shared leading words."""
    if prompt is not None and prompt.strip():
        return ExternalPair([{"role": "user", "content": prompt.strip()}], chosen.strip(), rejected.strip())
    mine, theirs = dialogue_turns(chosen), dialogue_turns(rejected)
    if mine and theirs and mine[-1][0] == theirs[-1][0] == "assistant":
        messages = [{"role": r, "content": c} for r, c in mine[:-1]]
        if mine[:-1] != theirs[:-1]:
            return ExternalPair(messages, mine[-1][1], theirs[-1][1], "prompts_differ")
        if not messages:
            return ExternalPair(messages, mine[-1][1], theirs[-1][1], "no_prompt")
        return ExternalPair(messages, mine[-1][1], theirs[-1][1])
    shared = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        shared += 1
    while shared and not (chosen[shared - 1].isspace()):  # whole words only
        shared -= 1
    head = chosen[:shared].strip()
    if not head:
        return ExternalPair([], chosen.strip(), rejected.strip(), "no_prompt")
    return ExternalPair([{"role": "user", "content": head}], chosen[shared:].strip(), rejected[shared:].strip())


_EXTERNAL_TYPE = T.StructType([
    T.StructField("messages", T.ArrayType(T.StructType([T.StructField("role", T.StringType()),
                                                        T.StructField("content", T.StringType())]))),
    T.StructField("chosen", T.StringType()), T.StructField("rejected", T.StringType()),
    T.StructField("refused", T.StringType()),
])  # fmt: skip


def _split_values(chosen, rejected, prompt):  # noqa: ANN001, ANN202 - a Spark UDF body
    pair = external_pair(chosen, rejected or "", prompt)
    return (pair.messages, pair.chosen, pair.rejected, pair.refused)


_split_record = F.udf(_split_values, _EXTERNAL_TYPE)


def route_preference_records(frame: DataFrame) -> DataFrame:
    """Curate's first step when bronze holds preference records: they are pairs, not documents, so
    they leave the document pipeline with a reason (`preference_record`) for `preferences build`."""
    routed = F.coalesce(F.col("domain") == PREFERENCE_DOMAIN, F.lit(False))
    return frame.withColumn(DECISION, F.when(routed, decision(DROPPED, "preference_record")).otherwise(decision(KEPT)))


def external_records(documents: DataFrame, purposes: dict[str, list[str]]) -> DataFrame:
    """bronze.documents' preference records as interaction rows (answers: chosen, then rejected;
    `choice` 0), unscrubbed, with their source, license and its policy for each purpose."""
    records = documents.where(F.col("domain") == PREFERENCE_DOMAIN)
    split = _split_record("text", F.col("metadata")["rejected"], F.col("metadata")["prompt"])
    records = carry_license(records.withColumn("license_policy", F.lit(None).cast("map<string,string>")),
                           LicenseParams(purposes=purposes))  # fmt: skip
    return records.select(
        F.col("doc_id").alias("interaction_id"), F.lit(None).cast("string").alias("conversation_id"),
        F.lit(None).cast("string").alias("user"), "consent",
        *[F.lit(None).cast("string").alias(c) for c in ("model_name", "model_version", "model_run_id")],
        split["messages"].alias("messages"), F.lit(None).cast("string").alias("prompt"),
        F.col("ingested_at").alias("requested_at"),
        F.array(split["chosen"], split["rejected"]).alias("responses"),
        F.lit(None).cast("array<string>").alias("finish_reasons"), F.lit(None).cast("string").alias("rating"),
        F.lit(0).cast("long").alias("choice"), F.lit(None).cast("string").alias("edit"),
        F.lit(None).cast("string").alias("comment"), F.lit(None).cast("timestamp").alias("feedback_at"),
        F.lit(EXTERNAL).alias("origin"), F.col("subject_ids").alias("raw_subjects"), "source", "license",
        "license_policy", split["refused"].alias("parse_refused"),
    )  # fmt: skip


def interactions(events: DataFrame, purpose: str = "preference") -> DataFrame:
    """One row per interaction from its events (the last feedback wins), unscrubbed."""
    requests = events.where(F.col("event_type") == "request").select(
        "interaction_id", "conversation_id", "user", "consent", "model_name", "model_version", "model_run_id",
        "messages", "prompt", F.col("created_at").alias("requested_at"),
    )  # fmt: skip
    responses = events.where(F.col("event_type") == "response").select("interaction_id", "responses", "finish_reasons")
    latest = Window.partitionBy("interaction_id").orderBy(F.col("created_at").desc(), F.col("event_id").desc())
    feedback = (
        events.where(F.col("event_type") == "feedback")
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .select("interaction_id", "rating", "choice", "edit", "comment", F.col("created_at").alias("feedback_at"))
    )
    policy = F.create_map(F.lit(purpose), F.lit("allowed"), F.lit("sft"), F.lit("allowed"))
    return (
        requests.dropDuplicates(["interaction_id"])
        .join(responses.dropDuplicates(["interaction_id"]), "interaction_id", "left")
        .join(feedback, "interaction_id", "left")
        .select(
            "*",
            F.lit(SERVED).alias("origin"),
            F.when(F.col("user").isNotNull(), F.array("user")).alias("raw_subjects"),
            F.lit(SOURCE).alias("source"),
            F.lit(LICENSE).alias("license"),
            policy.alias("license_policy"),  # first-party data under the user's consent
            F.lit(None).cast("string").alias("parse_refused"),
        )
    )


_RENDER = F.udf(lambda messages: render_prompt([m.asDict() for m in messages]) if messages else None, T.StringType())


def scrub_interactions(rows: DataFrame, params: PiiParams) -> DataFrame:
    """Every text of an interaction scrubbed by the `pii` stage, its user and what it found keyed.

    The texts (message contents, completion prompt, answers, edit, comment) become rows the pii
    stage scrubs as it scrubs documents; they are put back in place afterwards."""
    parts = F.concat(
        F.transform(F.coalesce("messages", F.array()), lambda m, i: F.struct(F.lit("message").alias("part"), i.alias("i"), m["content"].alias("text"))),
        F.array(F.struct(F.lit("prompt").alias("part"), F.lit(0).alias("i"), F.col("prompt").alias("text"))),
        F.transform(F.coalesce("responses", F.array().cast("array<string>")), lambda r, i: F.struct(F.lit("response").alias("part"), i.alias("i"), r.alias("text"))),
        F.array(F.struct(F.lit("edit").alias("part"), F.lit(0).alias("i"), F.col("edit").alias("text"))),
        F.array(F.struct(F.lit("comment").alias("part"), F.lit(0).alias("i"), F.col("comment").alias("text"))),
        # the user's own id (an external record's declared subjects), keyed by the stage as subject ids
        F.array(F.struct(F.lit("user").alias("part"), F.lit(0).alias("i"), F.lit("").alias("text"))),
    )  # fmt: skip
    texts = rows.select("interaction_id", "raw_subjects", F.explode(parts).alias("t")).where(
        F.col("t.text").isNotNull() | (F.col("t.part") == "user")
    )
    texts = texts.select(
        F.concat_ws(":", "interaction_id", "t.part", F.col("t.i").cast("string")).alias("doc_id"),
        "interaction_id",
        F.col("t.part").alias("part"),
        F.col("t.i").alias("i"),
        F.col("t.text").alias("text"),
        F.lit(None).cast("map<string,string>").alias("metadata"),
        F.when((F.col("t.part") == "user") & (F.size("raw_subjects") > 0), F.col("raw_subjects")).alias("subject_ids"),
        F.lit("conversation").alias("domain"),
    )
    scrubbed = pii(texts, params)
    back = scrubbed.groupBy("interaction_id").agg(
        F.map_from_entries(
            F.collect_list(F.struct(F.concat_ws(":", "part", F.col("i").cast("string")), "text"))
        ).alias("_texts"),
        F.flatten(F.collect_list(F.coalesce("subject_ids", F.array().cast("array<string>")))).alias("subject_ids"),
        F.array_distinct(F.flatten(F.collect_list(F.transform("_pii_hashes", lambda h: h["value_hmac"])))).alias(
            "pii_hashes"
        ),
        F.aggregate(
            F.collect_list("pii_counts"),
            F.create_map().cast("map<string,bigint>"),
            lambda acc, m: F.map_zip_with(acc, F.coalesce(m, F.create_map().cast("map<string,bigint>")),
                                          lambda k, a, b: F.coalesce(a, F.lit(0)) + F.coalesce(b, F.lit(0))),
        ).alias("pii_counts"),
    )  # fmt: skip
    texts_of = F.col("_texts")
    out = rows.drop("user", "raw_subjects").join(back, "interaction_id", "left")
    return out.select(
        *[c for c in out.columns if c not in ("messages", "prompt", "responses", "edit", "comment", "_texts")],
        F.transform("messages", lambda m, i: F.struct(m["role"].alias("role"), texts_of[F.concat(F.lit("message:"), i.cast("string"))].alias("content"))).alias("messages"),
        texts_of["prompt:0"].alias("prompt"),
        F.transform("responses", lambda r, i: texts_of[F.concat(F.lit("response:"), i.cast("string"))]).alias("responses"),
        texts_of["edit:0"].alias("edit"),
        texts_of["comment:0"].alias("comment"),
    )  # fmt: skip


def with_prompt(rows: DataFrame) -> DataFrame:
    """The prompt as the model saw it (the one chat template) and its key."""
    key = F.udf(prompt_key, T.StringType())
    text = F.coalesce(_RENDER("messages"), F.col("prompt"))
    return rows.withColumn("prompt_text", text).withColumn("prompt_key", key(text))


def _answer(index: Column) -> Column:
    return F.element_at("responses", (index + 1).cast("int"))


def candidate_pairs(rows: DataFrame, params: PreferenceParams) -> DataFrame:
    """Every pair the rules make from scrubbed interactions (with `prompt_text`, `prompt_key`), with
    the reason it is refused (null when it is not)."""
    common = ["prompt_text", "prompt_key", "subject_ids", "consent", "source", "license", "license_policy",
              "parse_refused"]  # fmt: skip
    external = rows.where(F.col("origin") == EXTERNAL).select(
        *common, "interaction_id", F.lit(None).cast("string").alias("other_interaction_id"),
        _answer(F.lit(0)).alias("chosen"), _answer(F.lit(1)).alias("rejected"), F.lit(EXTERNAL).alias("rule"),
    )  # fmt: skip
    rows = rows.where(F.col("origin") == SERVED)
    picked = F.coalesce(F.col("choice"), F.lit(0))
    valid_choice = F.col("choice").isNotNull() & (F.col("choice") >= 0) & (F.col("choice") < F.size("responses"))
    choice = (
        rows.where(valid_choice & (F.size("responses") >= 2))
        .select(*common, "interaction_id", "responses", "choice", F.posexplode("responses").alias("i", "other"))
        .where(F.col("i") != F.col("choice"))
        .select(*common, "interaction_id", F.lit(None).cast("string").alias("other_interaction_id"),
                _answer(F.col("choice")).alias("chosen"), F.col("other").alias("rejected"), F.lit(CHOICE).alias("rule"))
    )  # fmt: skip
    edit = rows.where(F.col("edit").isNotNull() & (F.size("responses") >= 1)).select(
        *common, "interaction_id", F.lit(None).cast("string").alias("other_interaction_id"),
        F.col("edit").alias("chosen"), _answer(picked).alias("rejected"), F.lit(EDIT).alias("rule"),
    )  # fmt: skip
    rated = rows.where(F.col("rating").isNotNull() & (F.size("responses") >= 1)).select(
        *common, "interaction_id", "rating", _answer(picked).alias("answer"), "requested_at"
    )
    up, down = rated.where("rating = 'up'").alias("u"), rated.where("rating = 'down'").alias("d")
    per_prompt = Window.partitionBy("u.prompt_key").orderBy("u.requested_at", "d.requested_at", "u.interaction_id",
                                                            "d.interaction_id")  # fmt: skip
    rating = (
        up.join(down, F.col("u.prompt_key") == F.col("d.prompt_key"))
        .withColumn("_n", F.row_number().over(per_prompt))
        .where(F.col("_n") <= params.max_rating_pairs_per_prompt)
        .select(
            F.col("u.prompt_text").alias("prompt_text"), F.col("u.prompt_key").alias("prompt_key"),
            F.array_distinct(F.concat("u.subject_ids", "d.subject_ids")).alias("subject_ids"),
            F.array_intersect("u.consent", "d.consent").alias("consent"),
            *[F.col(f"u.{c}").alias(c) for c in ("source", "license", "license_policy", "parse_refused")],
            F.col("u.interaction_id").alias("interaction_id"), F.col("d.interaction_id").alias("other_interaction_id"),
            F.col("u.answer").alias("chosen"), F.col("d.answer").alias("rejected"), F.lit(RATING).alias("rule"),
        )
    )  # fmt: skip
    pairs = choice.unionByName(edit).unionByName(rating).unionByName(external)
    ident = F.udf(pair_id, T.StringType())
    short = (F.length(F.trim(F.coalesce("chosen", F.lit("")))) < params.min_chars) | (
        F.length(F.trim(F.coalesce("rejected", F.lit("")))) < params.min_chars
    )
    reason = (
        F.when(~F.coalesce(F.array_contains("consent", params.purpose), F.lit(False)), "no_preference_consent")
        .when(F.col("parse_refused").isNotNull(), F.col("parse_refused"))
        .when(short, "empty_answer")
        .when(F.trim("chosen") == F.trim("rejected"), "identical_responses")
    )
    return (
        pairs.withColumn("pair_id", ident("prompt_text", F.coalesce("chosen", F.lit("")), F.coalesce("rejected", F.lit(""))))
        # readable and unique per candidate: `millpond why INTERACTION_ID` finds its decisions by prefix
        .withColumn("candidate_id", F.concat_ws(":", "interaction_id", "rule", F.substring("pair_id", 1, 12), "other_interaction_id"))
        .withColumn("refused", reason)
    )  # fmt: skip


def decontaminated(pairs: DataFrame, params: DecontaminateParams, index: EvalIndex) -> DataFrame:
    """Pairs whose prompt shares an n-gram with a registered eval item are refused
    (`eval_item:<set>`), as documents are dropped by the decontaminate stage."""
    decided = decontaminate(pairs.withColumn("text", F.col("prompt_text")), params, index)
    hit = F.col(f"{DECISION}.action") == DROPPED
    refused = F.when(F.col("refused").isNull() & hit, F.concat(F.lit("eval_item:"), F.col(f"{DECISION}.reason")))
    return decided.withColumn("refused", F.coalesce("refused", refused)).drop(DECISION, "_eval_hits", "text")


def exact_duplicates(pairs: DataFrame) -> DataFrame:
    """Pairs made more than once (same prompt, chosen, rejected): the first (by rule, then the
    interactions) is kept, the others are refused as exact duplicates of it."""
    first = Window.partitionBy("pair_id").orderBy(
        F.col("refused").isNotNull(), "rule", "interaction_id", F.coalesce("other_interaction_id", F.lit(""))
    )
    ranked = pairs.withColumn("_rank", F.row_number().over(first))
    refused = F.when(F.col("refused").isNull() & (F.col("_rank") > 1), "exact_duplicate").otherwise(F.col("refused"))
    duplicate_of = F.when(F.col("refused") == "exact_duplicate", F.col("pair_id"))
    return ranked.withColumn("refused", refused).withColumn("duplicate_of", duplicate_of).drop("_rank")


def near_duplicates(pairs: DataFrame, params: FuzzyDedupParams) -> DataFrame:
    """Pairs whose prompt, chosen and rejected are each a near duplicate of another pair's (one
    MinHash clustering, the fuzzy_dedup stage's, over every distinct text of the pairs not refused):
    the first (by rule, then the interactions) is kept, the others are refused as `near_duplicate`
    with `duplicate_of` it. A long shared prompt alone never makes two pairs duplicates."""
    live = pairs.where(F.col("refused").isNull())
    parts = ("prompt_text", "chosen", "rejected")
    texts = (
        live.select(F.explode(F.array(*parts)).alias("text"))
        .distinct()
        .select(
            F.substring(F.sha2("text", 256), 1, 32).alias("doc_id"), "text",
            F.lit(None).cast("double").alias("quality_score"),
            F.lit(None).cast("map<string,string>").alias("license_policy"),
            F.lit(None).cast("timestamp").alias("ingested_at"),
        )
    )  # fmt: skip
    decided = fuzzy_dedup(texts, params)
    groups = decided.select(
        F.col("doc_id").alias("_text_id"), F.coalesce(f"{DECISION}.cluster_id", "doc_id").alias("_group")
    )
    keyed = live.select("candidate_id", "pair_id", "rule", "interaction_id", "other_interaction_id", *parts)
    for part in parts:
        keyed = keyed.join(
            groups.withColumnRenamed("_group", f"_{part}_group"),
            F.substring(F.sha2(part, 256), 1, 32) == F.col("_text_id"),
        ).drop("_text_id")
    first = Window.partitionBy(*[f"_{p}_group" for p in parts]).orderBy(
        "rule", "interaction_id", F.coalesce("other_interaction_id", F.lit("")), "pair_id"
    )
    kept_first = F.first("pair_id").over(first.rowsBetween(Window.unboundedPreceding, 0))
    near = keyed.select("candidate_id", "pair_id", kept_first.alias("_kept")).where(F.col("_kept") != F.col("pair_id"))
    marked = pairs.join(near.select("candidate_id", "_kept"), "candidate_id", "left")
    return (
        marked.withColumn(
            "refused", F.when(F.col("_kept").isNotNull(), F.lit(NEAR_DUPLICATE)).otherwise(F.col("refused"))
        )
        .withColumn("duplicate_of", F.coalesce("_kept", "duplicate_of"))
        .drop("_kept")
    )


def pair_verdict(refused: Column) -> Column:
    return F.when(refused.isNull(), F.lit(KEPT)).otherwise(F.lit(DROPPED))


STAGE = "preferences"  # the stage name of pair decisions in silver.decisions


def commit_preferences(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    bronze_version: int,
    documents_version: int | None,
    scrubbed: DataFrame,
    pairs: DataFrame,
    params: PreferenceParams,
) -> dict[str, int]:
    """Make silver.interactions and silver.preferences hold exactly this build (insert, update,
    delete what is no longer produced), append a decision for every candidate and link each pair
    to its interactions. Returns the two tables' new versions."""
    now = datetime.now(UTC)
    schema = {f.name: f.dataType for f in SILVER_INTERACTIONS.schema.fields}
    extra = {"bronze_version": F.lit(bronze_version).cast("long"), "build_run_id": F.lit(run_id)}
    interaction_rows = scrubbed.where(F.col("origin") == SERVED).select(
        *[(extra[n] if n in extra else F.col(n)).cast(schema[n]).alias(n) for n in schema]
    )
    kept = pairs.where(F.col("refused").isNull())
    text = F.concat_ws("\n", "prompt_text", "chosen", "rejected")
    pair_rows = kept.select(
        F.col("pair_id").alias("doc_id"), F.col("prompt_text").alias("prompt"), "chosen", "rejected", "rule",
        text.alias("text"), F.sha2(text, 256).alias("text_sha256"), F.col("prompt_key").alias("split_key"),
        "source", "interaction_id", "other_interaction_id", "subject_ids", "consent", "license", "license_policy",
        F.lit(now).cast("timestamp").alias("created_at"), F.lit(run_id).alias("build_run_id"),
    )  # fmt: skip
    versions = {}
    for spec, rows in ((SILVER_INTERACTIONS, interaction_rows), (SILVER_PREFERENCES, pair_rows)):
        table = ensure_table(spark, spec, lakehouse)
        merge_rows(spark, table, spec.key, rows, changed_when="true", delete_missing=True)
        versions[spec.name] = latest_version(spec.path(lakehouse))
    decisions = pairs.select(
        F.col("candidate_id").alias("doc_id"), F.lit(STAGE).alias("stage"),
        F.when(F.col("refused").isNull(), KEPT).otherwise(DROPPED).alias("action"),
        F.coalesce("refused", F.concat(F.lit("rule:"), "rule")).alias("reason"), F.lit(None).cast("double").alias("score"),
        F.lit(None).cast("string").alias("cluster_id"),
        "duplicate_of",
        F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("decided_at"),
    )  # fmt: skip
    ensure_table(spark, SILVER_DECISIONS, lakehouse)
    decisions.write.format("delta").mode("append").save(SILVER_DECISIONS.path(lakehouse))
    for parent_table, version, rows in (
        (BRONZE_INTERACTIONS.name, bronze_version, kept.where(F.col("rule") != EXTERNAL)),
        (BRONZE_DOCUMENTS.name, documents_version, kept.where(F.col("rule") == EXTERNAL)),
    ):
        parents = rows.select("pair_id", F.explode(F.array_compact(F.array("interaction_id", "other_interaction_id"))).alias("parent"))  # fmt: skip
        insert_edges(spark, lakehouse, edges(parents, child="pair_id", child_table=SILVER_PREFERENCES.name,
                                             parent="parent", parent_table=parent_table, relation="pair_of",
                                             run_id=run_id, table_version=version or 0))  # fmt: skip
    return versions
