"""One preferences build: `bronze.interactions` and bronze's preference records into
`silver.interactions` and `silver.preferences`, with its report.

The build recomputes both tables from the pinned bronze versions (an interaction's feedback can
arrive any time later, and a rating pair joins two interactions), MERGEs the result and removes
rows no longer produced. `jobs/preferences.py` reads the configuration and records the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from curation.batch import eval_index
from curation.decontaminate import DecontaminateParams
from curation.fuzzy_dedup import FuzzyDedupParams
from curation.pii import PiiParams
from curation.preferences import (
    EXTERNAL,
    SERVED,
    PreferenceParams,
    candidate_pairs,
    commit_preferences,
    decontaminated,
    exact_duplicates,
    external_records,
    interactions,
    near_duplicates,
    scrub_interactions,
    with_prompt,
)
from lineage.catalog import BRONZE_DOCUMENTS, BRONZE_INTERACTIONS
from lineage.runs import last_read_version
from lineage.tables import ensure_table, latest_version


@dataclass
class PreferencesReport:
    run_id: str
    mode: str  # full | nothing_new
    bronze_version: int | None
    documents_version: int | None = None  # bronze.documents, for its preference records
    interactions: int = 0
    with_feedback: int = 0
    records: int = 0  # preference records (preference-jsonl) in bronze.documents
    candidates: dict[str, int] = field(default_factory=dict)  # rule -> pairs the rule made
    kept: dict[str, int] = field(default_factory=dict)  # rule -> pairs in silver.preferences
    refused: dict[str, int] = field(default_factory=dict)  # reason -> candidates refused
    pairs: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreferenceInputs:
    """The settings a build reads besides `[preferences]`: how to scrub, which licenses each purpose
    allows, the eval-set screen and the near-duplicate settings (the curate stages' own)."""

    params: PreferenceParams
    pii: PiiParams
    purposes: dict[str, tuple[str, ...]]
    screen: DecontaminateParams
    fuzzy: FuzzyDedupParams


def build_batch(
    spark: SparkSession,
    lakehouse: str | Path,
    run_id: str,
    job: str,
    settings: PreferenceInputs,
    full: bool,
    progress: Callable[[str], None] = lambda message: None,
) -> PreferencesReport:
    """Rebuild silver.interactions and silver.preferences from the latest bronze versions; nothing
    when neither bronze table changed since the last successful run of `job` (unless `full`)."""
    params = settings.params
    ensure_table(spark, BRONZE_INTERACTIONS, lakehouse)
    version = latest_version(BRONZE_INTERACTIONS.path(lakehouse))
    ensure_table(spark, BRONZE_DOCUMENTS, lakehouse)
    documents_version = latest_version(BRONZE_DOCUMENTS.path(lakehouse))
    report = PreferencesReport(run_id, "full", version, documents_version)
    read = {BRONZE_INTERACTIONS.name: version, BRONZE_DOCUMENTS.name: documents_version}
    if not full and all(last_read_version(lakehouse, job, name) == v for name, v in read.items()):
        report.mode = "nothing_new"
        return report
    events = spark.read.format("delta").option("versionAsOf", version).load(BRONZE_INTERACTIONS.path(lakehouse))
    records = spark.read.format("delta").option("versionAsOf", documents_version).load(BRONZE_DOCUMENTS.path(lakehouse))
    progress(f"scrubbing the interactions of {BRONZE_INTERACTIONS.name} v{version} and the preference "
             f"records of {BRONZE_DOCUMENTS.name} v{documents_version}")  # fmt: skip
    rows = interactions(events, params.purpose).unionByName(external_records(records, settings.purposes))
    scrubbed = with_prompt(scrub_interactions(rows, settings.pii)).localCheckpoint(eager=True)
    totals = scrubbed.agg(
        F.count(F.when(F.col("origin") == SERVED, 1)), F.count("feedback_at"), F.count(F.when(F.col("origin") == EXTERNAL, 1))
    ).first()  # fmt: skip
    report.interactions, report.with_feedback, report.records = totals[0], totals[1], totals[2]
    screen = settings.screen
    candidates = decontaminated(candidate_pairs(scrubbed, params), screen, eval_index(spark, lakehouse, screen.ngram))
    pairs = near_duplicates(exact_duplicates(candidates).localCheckpoint(eager=True), settings.fuzzy)
    pairs = pairs.localCheckpoint(eager=True)
    for row in pairs.groupBy("rule", "refused").count().collect():
        report.candidates[row["rule"]] = report.candidates.get(row["rule"], 0) + row["count"]
        if row["refused"] is None:
            report.kept[row["rule"]] = row["count"]
        else:
            report.refused[row["refused"]] = report.refused.get(row["refused"], 0) + row["count"]
    report.pairs = sum(report.kept.values())
    progress(f"merging {report.interactions} interactions and {report.pairs} pairs into silver")
    report.versions = commit_preferences(spark, lakehouse, run_id, version, documents_version, scrubbed, pairs, params)
    return report
