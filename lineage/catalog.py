"""Every Delta table of the lakehouse, declared once: name, layer, schema, keys and properties.

Jobs and stages never build table paths themselves; they ask the catalog, so that a table's
location, its merge key, which columns hold subject ids and which columns may carry Delta
data-skipping statistics are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import types as T

from lineage.errors import MillpondError


@dataclass(frozen=True)
class TableSpec:
    """One Delta table: where it lives and what it promises."""

    name: str  # "<layer>.<table>", e.g. "bronze.documents"
    schema: T.StructType
    key: tuple[str, ...]  # the MERGE key: unique per row
    description: str
    # Columns holding whose data a row is: clear identifiers, or keyed hashes (HMAC) when `subjects_keyed`.
    subject_columns: tuple[str, ...] = ()
    subjects_keyed: bool = False
    # Columns holding document ids: a data subject request finds and erases a row when any of them
    # names one of the person's documents. Lineage and erasure cover every table that declares them.
    document_columns: tuple[str, ...] = ()
    # Columns of clear text (strings, or maps of strings) a request scans for an e-mail or phone number.
    text_columns: tuple[str, ...] = ()
    # Only these columns get min/max statistics in the Delta log. Free text and identifiers
    # are never listed, so no personal data is copied into `_delta_log`.
    stats_columns: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    def path(self, lakehouse: str | Path) -> str:
        """`<lakehouse>/<layer>/<table>` as an absolute path."""
        return str(Path(lakehouse).expanduser().resolve() / self.layer / self.short_name)

    def delta_properties(self) -> dict[str, str]:
        props = {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)}
        props.update(self.properties)
        return props


def _fields(*fields: T.StructField) -> T.StructType:
    return T.StructType(list(fields))


def _str(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.StringType(), nullable)


def _long(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.LongType(), nullable)


def _ts(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.TimestampType(), nullable)


def _strings(name: str) -> T.StructField:
    return T.StructField(name, T.ArrayType(T.StringType(), True), True)


def _double(name: str, nullable: bool = True) -> T.StructField:
    return T.StructField(name, T.DoubleType(), nullable)


def _double_map(name: str) -> T.StructField:
    return T.StructField(name, T.MapType(T.StringType(), T.DoubleType(), True), True)


def _str_map(name: str) -> T.StructField:
    return T.StructField(name, T.MapType(T.StringType(), T.StringType(), True), True)


def _long_map(name: str) -> T.StructField:
    return T.StructField(name, T.MapType(T.StringType(), T.LongType(), True), True)


# Values of the `domain` column that mean more than a rule set: preference records, which curate
# routes to `preferences build` instead of silver.documents, and demonstrations for SFT.
PREFERENCE_DOMAIN = "preference"
SFT_DOMAIN = "sft"

# Columns whose values are all different wherever they appear (hashes, ids, whole texts): for
# them a Parquet dictionary never pays, yet the writer builds one for every column chunk before
# it gives up; at 1M bronze rows that was a fifth of the write. The Spark session turns
# dictionaries off for these names (`jobs.spark.spark_conf`); delta-rs refuses the per-column
# setting as a table property.
PLAIN_ENCODED_COLUMNS = ("doc_id", "record_id", "text", "locator", "content_sha256")

BRONZE_DOCUMENTS = TableSpec(
    name="bronze.documents",
    schema=_fields(
        _str("doc_id", False),
        _str("record_id", False),
        _str("text", False),
        _str("source", False),
        _str("source_uri", False),
        _str("locator", False),
        _ts("ingested_at", False),
        _str("ingest_run_id", False),
        _str("content_sha256", False),
        _str("license"),
        _str("license_source", False),
        _strings("subject_ids"),
        _strings("consent"),
        _str("domain"),
        _str_map("metadata"),
    ),
    key=("doc_id",),
    description="One row per raw record, with provenance, license, subjects and consent.",
    subject_columns=("subject_ids",),
    document_columns=("doc_id",),
    text_columns=("text", "metadata"),
    stats_columns=("ingested_at", "ingest_run_id", "source", "license_source", "domain"),
    properties={"delta.enableChangeDataFeed": "true"},
)

QUARANTINE_RECORDS = TableSpec(
    name="quarantine.records",
    schema=_fields(
        _str("quarantine_id", False),
        _str("reason", False),
        _str("detail"),
        _str("source", False),
        _str("source_uri", False),
        _str("locator", False),
        _long("byte_offset"),
        _long("byte_length"),
        _str("ingest_run_id", False),
        _ts("quarantined_at", False),
    ),
    key=("quarantine_id",),
    description="What could not be read: the reason and where the raw bytes are (first sighting).",
    stats_columns=("reason", "source", "ingest_run_id", "quarantined_at"),
)

LINEAGE_RUNS = TableSpec(
    name="lineage.runs",
    schema=_fields(
        _str("run_id", False),
        _str("job", False),
        _str("status", False),  # running, succeeded, failed
        _str("config_digest", False),
        _str("params"),  # JSON of the job's own arguments
        _ts("started_at", False),
        _ts("ended_at"),
        _str("spark_master"),
        _str("spark_app_id"),
        _long_map("input_versions"),
        _long_map("output_versions"),
        _long_map("counts"),
        _str("error"),
        # JSON documents kept with the run: the curation funnel, the quality gate's result, ...
        _str_map("reports"),
    ),
    key=("run_id",),
    description="One row per job run: what it read and wrote, at which versions, with its counts.",
    stats_columns=("run_id", "job", "status", "started_at", "ended_at"),
)

# The quality signals of a document (Gopher quality and repetition rules, C4 rules, character
# entropy), computed by `curation.signals` and stored as the `signals` struct of silver.documents.
QUALITY_SIGNALS = (
    "word_count",
    "mean_word_length",
    "symbol_to_word_ratio",
    "bullet_lines_fraction",
    "ellipsis_lines_fraction",
    "alpha_words_fraction",
    "stop_word_count",
    "dup_line_fraction",
    "dup_line_char_fraction",
    "dup_paragraph_fraction",
    "dup_paragraph_char_fraction",
    "terminal_punctuation_lines_fraction",
    "has_javascript",
    "has_lorem_ipsum",
    "has_curly_brace",
    "char_entropy",
    "top_2gram_char_fraction",
    "top_3gram_char_fraction",
    "top_4gram_char_fraction",
    "dup_5gram_char_fraction",
    "dup_6gram_char_fraction",
    "dup_7gram_char_fraction",
    "dup_8gram_char_fraction",
    "dup_9gram_char_fraction",
    "dup_10gram_char_fraction",
)

SILVER_DOCUMENTS = TableSpec(
    name="silver.documents",
    schema=_fields(
        _str("doc_id", False),
        _str("text", False),  # cleaned (and, once the pii stage runs, scrubbed) text
        _str("text_sha256", False),  # of the cleaned text: the exact-duplicate key
        _str("source", False),
        _str("source_uri", False),
        _str("locator", False),
        _ts("ingested_at", False),
        _str("ingest_run_id", False),
        _str("content_sha256", False),  # of the raw bronze text
        _str("license"),
        _str("license_source"),
        _str_map("license_policy"),  # purpose -> allowed | not_allowed | unknown
        _strings("subject_ids"),  # once the pii stage runs: keyed hashes, as in silver.pii_index
        _strings("consent"),
        _str("domain"),
        _str_map("metadata"),  # identifiers in values scrubbed by the pii stage
        _str("lang"),
        _double("lang_score"),
        T.StructField("signals", T.StructType([_double(n) for n in QUALITY_SIGNALS]), True),
        _double("quality_score"),
        _long_map("pii_counts"),
        _long("bronze_version", False),
        _str("curate_run_id", False),
        _ts("curated_at", False),
    ),
    key=("doc_id",),
    description="Cleaned, scored, license-checked, deduplicated documents: what snapshots are cut from.",
    subject_columns=("subject_ids",),
    subjects_keyed=True,
    document_columns=("doc_id",),
    text_columns=("text", "metadata"),
    stats_columns=(
        "ingested_at",
        "ingest_run_id",
        "source",
        "license_source",
        "domain",
        "lang",
        "lang_score",
        "quality_score",
        "bronze_version",
        "curate_run_id",
        "curated_at",
    ),
    properties={"delta.enableChangeDataFeed": "true"},
)

SILVER_DECISIONS = TableSpec(
    name="silver.decisions",
    schema=_fields(
        _str("doc_id", False),
        _str("stage", False),
        _str("action", False),  # kept, dropped, modified
        _str("reason"),
        _double("score"),
        _str("cluster_id"),
        _str("duplicate_of"),
        _str("run_id", False),
        _ts("decided_at", False),
    ),
    key=("doc_id", "stage", "run_id"),
    description="One row per (document, stage, curate run): kept, dropped or modified, and why.",
    document_columns=("doc_id",),
    stats_columns=("stage", "action", "reason", "score", "run_id", "decided_at"),
)

SILVER_MINHASH = TableSpec(
    name="silver.minhash",
    schema=_fields(
        _str("doc_id", False),
        T.StructField("signature", T.ArrayType(T.IntegerType(), True), False),  # uint32 values as int32
        T.StructField("bands", T.ArrayType(T.LongType(), True), False),
        # the keep rule's inputs, so that a later batch ranks against them without silver
        _double("quality_score"),
        _str_map("license_policy"),
        _ts("ingested_at"),
        _str("status", False),  # kept (in silver.documents) | dropped (a near duplicate: links its cluster)
        _str("params_digest", False),  # the settings the signature depends on
        _str("curate_run_id", False),
    ),
    key=("doc_id",),
    description="MinHash signatures and LSH band hashes of curated documents: the incremental near-duplicate index.",
    document_columns=("doc_id",),
    stats_columns=("status", "params_digest", "curate_run_id"),
)

SILVER_PII_INDEX = TableSpec(
    name="silver.pii_index",
    schema=_fields(
        _str("doc_id", False),
        _str("entity_type", False),  # EMAIL_ADDRESS, PHONE_NUMBER, ..., SUBJECT_ID
        _str("value_hmac", False),  # HMAC-SHA256(key, "TYPE:normalized value"), hex; the key is never stored
        _str("curate_run_id", False),
    ),
    key=("doc_id", "entity_type", "value_hmac"),
    description="What the pii stage found in each silver document, keyed: finds a subject's documents "
    "by e-mail, phone, card, ... without keeping the value.",
    subject_columns=("value_hmac",),
    subjects_keyed=True,
    document_columns=("doc_id",),
    stats_columns=("entity_type", "curate_run_id"),
)

GOLD_SNAPSHOTS = TableSpec(
    name="gold.snapshots",
    schema=_fields(
        _str("name", False),
        _str("source_table", False),
        _long("source_version", False),  # the Delta version of the source table it was cut from
        _str("filter"),  # the parsed filter as JSON: [[column, operator, value], ...]
        T.StructField("mix", T.MapType(T.StringType(), T.DoubleType()), True),  # requested weights by source
        _double("temperature"),
        _str("purpose", False),
        T.StructField("splits", T.MapType(T.StringType(), T.DoubleType()), True),  # validation, test shares
        _long("rows", False),  # member documents (each once)
        _long("train_rows", False),  # training examples after mixing (repeats counted)
        _long("words", False),  # in the training examples
        _long("tokens"),  # filled in once a tokenizer has cut the snapshot into shards
        _long_map("excluded"),  # reason -> documents left out (policy, consent, filter, mixing)
        T.StructField("realized_mix", T.MapType(T.StringType(), T.DoubleType()), True),  # share of training words
        _str("content_digest", False),  # sha256 over the sorted (doc_id, text_sha256, split, repeats)
        _str("run_id", False),
        _ts("created_at", False),
        # erasure requests that removed members or re-pinned the source version, comma-separated
        _str("amended_by"),
    ),
    key=("name",),
    description="Named, immutable training sets cut from a pinned table version.",
    stats_columns=("name", "source_table", "source_version", "purpose", "rows", "created_at"),
)

GOLD_SNAPSHOT_MEMBERS = TableSpec(
    name="gold.snapshot_members",
    schema=_fields(
        _str("snapshot", False),
        _str("doc_id", False),
        _str("source", False),
        _str("split", False),  # train | validation | test (sealed: never trained on)
        T.StructField("repeats", T.IntegerType(), False),  # times the document is seen per epoch (train)
        _str("text_sha256", False),
    ),
    key=("snapshot", "doc_id"),
    description="The documents of each snapshot, their split and how often mixing repeats them.",
    document_columns=("doc_id",),
    stats_columns=("snapshot", "source", "split", "repeats"),
)

GOVERNANCE_EVAL_ITEMS = TableSpec(
    name="governance.eval_items",
    schema=_fields(
        _str("item_id", False),  # sha256(eval set, text)
        _str("eval_set", False),
        _str("text", False),
        _str("source_uri", False),
        _str("locator", False),
        _ts("added_at", False),
    ),
    key=("item_id",),
    description="Evaluation items that training data must not contain (decontamination).",
    stats_columns=("eval_set", "added_at"),
)

LINEAGE_EDGES = TableSpec(
    name="lineage.edges",
    schema=_fields(
        _str("child_id", False),
        _str("child_table", False),
        _str("parent_id", False),
        _str("parent_table", False),
        # derived_from, scrubbed_from (the pii stage changed it), duplicate_of, snapshot_member, pair_of
        _str("relation", False),
        _str("cluster_id"),  # duplicate_of: the exact or near-duplicate cluster both ends belong to
        _str("run_id", False),
        _long("table_version"),  # the child table's version the run wrote (the source version for a snapshot)
        _ts("created_at", False),
    ),
    key=("child_id", "child_table", "parent_id", "parent_table", "relation"),
    description="Which row came from, copies or belongs to which: the graph a data subject request closes over.",
    document_columns=("child_id", "parent_id"),
    stats_columns=("child_table", "parent_table", "relation", "run_id", "table_version", "created_at"),
)

GOVERNANCE_REQUESTS = TableSpec(
    name="governance.requests",
    schema=_fields(
        _str("request_id", False),
        _str("kind", False),  # erase
        _str("status", False),  # running, completed, failed
        _str("reason", False),
        _strings("subjects"),  # keyed hashes of the identifiers named, never the identifiers
        _ts("requested_at", False),
        _ts("completed_at"),
        _long_map("found"),  # table -> rows found
        _long_map("deleted"),  # table -> rows deleted
        _str("certificate"),  # the erasure certificate, JSON
        _str("certificate_sha256"),
        _str("error"),
    ),
    key=("request_id",),
    description="Data subject requests: what was asked, found and erased, and the certificate.",
    stats_columns=("request_id", "kind", "status", "requested_at", "completed_at"),
)

GOVERNANCE_TOMBSTONES = TableSpec(
    name="governance.tombstones",
    schema=_fields(
        _str("kind", False),  # subject (a keyed hash), doc_id, content_sha256 (raw text), text_sha256 (clean)
        _str("value", False),
        T.StructField("signature", T.ArrayType(T.IntegerType(), True), True),  # MinHash of an erased text
        _str("request_id", False),
        _ts("created_at", False),
    ),
    key=("kind", "value"),
    description="What erasure removed, as hashes: stops erased content from being ingested again.",
    stats_columns=("kind", "request_id", "created_at"),
)

_MESSAGE = T.StructType([_str("role"), _str("content")])

BRONZE_INTERACTIONS = TableSpec(
    name="bronze.interactions",
    schema=_fields(
        _str("event_id", False),
        _str("event_type", False),  # request, response, feedback
        _str("interaction_id", False),
        _str("conversation_id"),
        _str("user"),  # the OpenAI `user` field as sent: a clear subject id
        _strings("consent"),
        _str("model_name"),
        _str("model_version"),
        _str("model_run_id"),
        T.StructField("messages", T.ArrayType(_MESSAGE, True), True),  # request: the conversation
        _str("prompt"),  # request to /v1/completions: the prompt
        _strings("responses"),  # response: the n alternatives
        _strings("finish_reasons"),
        _str("params"),  # request: sampling parameters, JSON
        _str("rating"),  # feedback: up | down
        _long("choice"),  # feedback: the chosen alternative
        _str("edit"),  # feedback: the user's corrected answer
        _str("comment"),
        _double("latency_ms"),
        _long_map("usage"),
        _str_map("metadata"),
        _ts("created_at", False),
        _str("replica"),
        _long("schema_version", False),
        _str("source_uri", False),  # the landing file
        _str("locator", False),  # file:line
        _ts("ingested_at", False),
        _str("ingest_run_id", False),  # the stream micro-batch's run
    ),
    key=("event_id",),
    description="Every event the served model saw (requests, responses, feedback), once, from the landing files.",
    subject_columns=("user",),
    # An interaction's events are one unit for a data subject request: found and erased together.
    document_columns=("interaction_id",),
    text_columns=("prompt", "edit", "comment", "metadata"),
    stats_columns=("event_type", "created_at", "model_name", "model_version", "ingested_at", "ingest_run_id"),
    properties={"delta.enableChangeDataFeed": "true"},
)

SILVER_INTERACTIONS = TableSpec(
    name="silver.interactions",
    schema=_fields(
        _str("interaction_id", False),
        _str("conversation_id"),
        _strings("subject_ids"),  # the user, keyed (HMAC) as the pii stage keys subject ids
        _strings("pii_hashes"),  # what the pii stage found in the texts, keyed
        _strings("consent"),
        _str("model_name"),
        _str("model_version"),
        _str("model_run_id"),
        T.StructField("messages", T.ArrayType(_MESSAGE, True), True),  # scrubbed
        _str("prompt"),  # scrubbed (completions)
        _str("prompt_text"),  # the conversation as the model saw it (the chat template), scrubbed
        _str("prompt_key"),  # hash of the normalized prompt: groups equal prompts, splits pairs
        _strings("responses"),  # scrubbed
        _strings("finish_reasons"),
        _str("rating"),
        _long("choice"),
        _str("edit"),  # scrubbed
        _str("comment"),  # scrubbed
        _long_map("pii_counts"),
        _ts("requested_at", False),
        _ts("feedback_at"),
        _long("bronze_version", False),
        _str("build_run_id", False),
    ),
    key=("interaction_id",),
    description="One row per interaction (prompt, answers, the latest feedback), scrubbed, with keyed subjects.",
    subject_columns=("subject_ids", "pii_hashes"),
    subjects_keyed=True,
    document_columns=("interaction_id",),
    text_columns=("prompt", "prompt_text", "edit", "comment"),
    stats_columns=("model_name", "model_version", "rating", "requested_at", "bronze_version", "build_run_id"),
)

SILVER_PREFERENCES = TableSpec(
    name="silver.preferences",
    schema=_fields(
        _str("doc_id", False),  # the pair id: sha256 of (prompt, chosen, rejected)
        _str("prompt", False),  # rendered with the one chat template
        _str("chosen", False),
        _str("rejected", False),
        _str("rule", False),  # choice | edit | rating
        _str("text", False),  # prompt, chosen and rejected: what snapshots count and lineage scans
        _str("text_sha256", False),
        _str("split_key", False),  # the prompt's key: snapshots split by it
        _str("source", False),
        _str("interaction_id"),  # the interaction it came from (for rating: the up-rated one)
        _str("other_interaction_id"),  # rating: the down-rated one
        _strings("subject_ids"),  # keyed
        _strings("consent"),
        _str("license"),
        _str_map("license_policy"),
        _ts("created_at", False),
        _str("build_run_id", False),
    ),
    key=("doc_id",),
    description="Preference pairs (prompt, chosen, rejected) from feedback, with the rule and interactions they came from.",
    subject_columns=("subject_ids",),
    subjects_keyed=True,
    document_columns=("doc_id", "interaction_id", "other_interaction_id"),
    text_columns=("prompt", "chosen", "rejected"),
    stats_columns=("rule", "source", "license", "created_at", "build_run_id"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        BRONZE_DOCUMENTS,
        BRONZE_INTERACTIONS,
        QUARANTINE_RECORDS,
        LINEAGE_RUNS,
        SILVER_DOCUMENTS,
        SILVER_INTERACTIONS,
        SILVER_PREFERENCES,
        SILVER_DECISIONS,
        SILVER_MINHASH,
        SILVER_PII_INDEX,
        GOLD_SNAPSHOTS,
        GOLD_SNAPSHOT_MEMBERS,
        GOVERNANCE_EVAL_ITEMS,
        LINEAGE_EDGES,
        GOVERNANCE_REQUESTS,
        GOVERNANCE_TOMBSTONES,
    )
}


class UnknownTableError(MillpondError, KeyError):
    """A table name the catalog does not hold."""

    def __str__(self) -> str:  # KeyError's own would quote the whole message
        return str(self.args[0])


def table(name: str) -> TableSpec:
    """The spec of a registered table; a clear error for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise UnknownTableError(f"unknown table {name!r}; known tables: {known}") from None
