"""Small, real inputs for the curation tests: English prose, rows shaped like bronze documents."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from curation.pipeline import prepare
from lineage.catalog import BRONZE_DOCUMENTS, SILVER_DOCUMENTS
from lineage.tables import ensure_table

SENTENCES = [
    "The river that feeds the mill pond rises in the hills to the north of the village.",
    "Every spring the water level climbs and the old wheel turns faster than it has all year.",
    "The miller keeps a careful record of the flour he grinds and of the farmers who bring their grain.",
    "In the evening the children walk along the bank and count the ducks that nest in the reeds.",
    "A small bridge of grey stone crosses the stream just below the sluice gate.",
    "Travellers who stop at the inn often ask about the history of the mill and the family that built it.",
    "The records show that the first wheel was made of oak and had to be replaced after a great flood.",
    "Today the building is a museum, and volunteers grind a little flour on the first Sunday of each month.",
    "The museum also keeps a collection of tools, ledgers and letters that tell the story of the trade.",
    "Scholars have used these papers to study how prices changed over two hundred years.",
    "One letter describes a dispute between the miller and a neighbour about the height of the weir.",
    "The court decided that the weir could stay, but that the gate must be opened every winter.",
    "Fishermen were pleased with the decision because the trout could once again swim upstream.",
    "Over time the pond filled with silt, and in dry summers it became little more than a marsh.",
    "A local society raised money to dredge it, and the work took almost three years to finish.",
    "Now the water is deep and clear again, and herons stand in the shallows at dawn.",
    "Visitors are asked to keep to the paths so that the nesting birds are not disturbed.",
    "The society publishes a short guide that explains how the wheel, the gears and the stones work.",
    "It also lists the names of the millers who worked there from the first record to the last.",
    "Many of them were related, and the trade passed from father to son for six generations.",
    "The last miller retired when cheap flour from large factories made the work unprofitable.",
    "He gave the building to the village on the condition that it would be cared for and kept open.",
    "That promise has been kept, and the mill remains one of the best loved places in the county.",
    "Schools bring their pupils to see how bread was made before the age of machines.",
]


def prose(seed: int, sentences: int = 8) -> str:
    """A distinct, clean English paragraph of real sentences (passes the Gopher rules)."""
    rng = random.Random(seed)
    return " ".join(rng.sample(SENTENCES, sentences))


BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)


def bronze_row(doc_id: str, text: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "doc_id": doc_id,
        "record_id": doc_id,
        "text": text,
        "source": "test",
        "source_uri": "file:///test.jsonl",
        "locator": f"test.jsonl:{doc_id}",
        "ingested_at": BASE_TIME,
        "ingest_run_id": "ingest-test",
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "license": "MIT",
        "license_source": "declared",
        "subject_ids": [],
        "consent": [],
        "domain": "prose",
        "metadata": {},
    }
    row.update(overrides)
    if "ingested_after_hours" in row:
        row["ingested_at"] = BASE_TIME + timedelta(hours=row.pop("ingested_after_hours"))
    return row


def frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    """Rows shaped like bronze.documents, with the columns the stages fill in (empty)."""
    return prepare(spark.createDataFrame(rows, schema=BRONZE_DOCUMENTS.schema))


def decided(out: DataFrame) -> dict[str, dict[str, Any]]:
    """doc_id -> the row with its decision as a plain dict."""
    return {r["doc_id"]: {**r.asDict(recursive=True)} for r in out.collect()}


def silver_row(
    i: int, source: str, policy: str, consent: list[str], quality: float = 0.9, domain: str = "prose", text: str = ""
) -> dict[str, Any]:
    """A row shaped like silver.documents (as curate writes it), for tests that start from silver."""
    text = text or prose(i, 3) + f" Document {source} {i}."
    doc_id = hashlib.sha256(f"{source}:{i}".encode()).hexdigest()[:32]
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return {f.name: None for f in SILVER_DOCUMENTS.schema.fields} | {
        "doc_id": doc_id, "text": text, "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "source": source,
        "source_uri": f"file:///{source}.jsonl", "locator": f"{source}.jsonl:{i}", "ingested_at": now,
        "ingest_run_id": "ingest-test", "content_sha256": doc_id, "license_policy": {"pretraining": policy},
        "consent": consent, "quality_score": quality, "bronze_version": 1, "curate_run_id": "curate-test",
        "curated_at": now, "lang": "en", "domain": domain,
    }  # fmt: skip


def write_silver(spark: SparkSession, lakehouse: Path, rows: list[dict[str, Any]]) -> None:
    ensure_table(spark, SILVER_DOCUMENTS, lakehouse)
    spark.createDataFrame(rows, schema=SILVER_DOCUMENTS.schema).write.format("delta").mode("append").save(
        SILVER_DOCUMENTS.path(lakehouse)
    )
