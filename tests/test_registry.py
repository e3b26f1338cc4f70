"""A new curation stage is its function, its parameter class and one registry entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from conftest import make_config, write_jsonl, write_manifest
from curation import registry
from curation.decisions import DECISION, DROPPED, MODIFIED, decision, kept
from curation.registry import StageSpec
from jobs.config import load_config
from jobs.curate import plan_stages, run_curate
from jobs.ingest import run_ingest
from lineage.catalog import SILVER_DECISIONS, SILVER_DOCUMENTS
from lineage.tables import read_table


@dataclass(frozen=True)
class ShoutParams:
    """The `[curate.shout]` section of a toy stage."""

    suffix: str = "!"
    min_letters: int = 3


def shout(frame: DataFrame, params: ShoutParams) -> DataFrame:
    """Upper-case the text and add a suffix; drop texts with too few letters."""
    letters = F.length(F.regexp_replace("text", r"[^A-Za-z]", ""))
    verdict = (
        F.when(letters < params.min_letters, decision(DROPPED, "too_quiet"))
        .when(F.upper("text") != F.col("text"), decision(MODIFIED, "shouted"))
        .otherwise(kept())
    )
    loud = F.when(letters >= params.min_letters, F.concat(F.upper("text"), F.lit(params.suffix))).otherwise(
        F.col("text")
    )
    return frame.withColumn(DECISION, verdict).withColumn("text", loud)


@pytest.fixture
def with_shout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", list(registry._REGISTRY))
    registry.register(StageSpec("shout", ShoutParams, shout), before="exact_dedup")


def test_a_toy_stage_runs_through_config_plan_and_curate(
    with_shout: None, spark, tmp_path: Path, lakehouse: Path
) -> None:
    names = registry.stage_names()
    assert names.index("license") < names.index("shout") < names.index("exact_dedup")
    toml = tmp_path / "millpond.toml"
    toml.write_text('[curate.shout]\nsuffix = "?!"\n')  # its section is a known one now
    config = load_config(toml, lakehouse)
    assert config.section("curate")["shout"] == {"suffix": "?!", "min_letters": 3}
    assert "shout" in plan_stages(None, config)[0]

    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "hello mill"}, {"id": "2", "text": "ok"}])
    write_manifest(tmp_path / "in" / "m.toml", [{"name": "toy", "path": "a.jsonl", "format": "jsonl"}])
    run_ingest(spark, make_config(lakehouse), tmp_path / "in" / "m.toml")
    report = run_curate(spark, config, ["normalize", "shout"])
    assert [s["stage"] for s in report.stages] == ["normalize", "shout"]
    assert report.stages[1]["dropped"] == {"too_quiet": 1} and report.stages[1]["modified"] == 1
    assert read_table(SILVER_DOCUMENTS, lakehouse).column("text").to_pylist() == ["HELLO MILL?!"]
    reasons = {(r["stage"], r["reason"]) for r in read_table(SILVER_DECISIONS, lakehouse).to_pylist()}
    assert {("shout", "shouted"), ("shout", "too_quiet")} <= reasons
