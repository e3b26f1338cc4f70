"""Running stages in order: decisions collected, dropped rows held back, the funnel counted.

Each stage's output is materialized once (a local checkpoint: executor memory, spilling to
local disk), so the stage runs once, its decisions are counted exactly and logged, and the
next stage reads the survivors from there with a short plan. Local checkpoints rather than
`persist`: uncaching persisted frames that depend on each other costs seconds apiece.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.decisions import DECISION, DROPPED, KEPT, MODIFIED
from lineage.catalog import SILVER_DOCUMENTS
from lineage.errors import MillpondError

Stage = Callable[[DataFrame], DataFrame]

# Columns a stage fills in; present (null) from the start, so any subset of stages can run.
_STAGE_COLUMNS: dict[str, T.DataType] = {
    name: SILVER_DOCUMENTS.schema[name].dataType
    for name in ("text_sha256", "license_policy", "lang", "lang_score", "signals", "quality_score", "pii_counts")
}


def prepare(bronze: DataFrame) -> DataFrame:
    """Bronze rows with every column the stages fill in, still empty."""
    out = bronze
    for name, kind in _STAGE_COLUMNS.items():
        if name not in out.columns:
            out = out.withColumn(name, F.lit(None).cast(kind))
    return out


@dataclass
class StageCounts:
    stage: str
    rows_in: int
    kept: int = 0
    modified: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_out(self) -> int:
        return self.kept + self.modified

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "in": self.rows_in,
            "kept": self.kept,
            "modified": self.modified,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": self.seconds,
        }


@dataclass
class PipelineRun:
    """The survivors, every stage's decisions and the funnel; `release()` frees the cached frames."""

    survivors: DataFrame
    decisions: DataFrame | None
    funnel: list[StageCounts]
    rows_in: int
    outputs: dict[str, DataFrame] = field(default_factory=dict)  # each stage's decided frame
    _cached: list[DataFrame] = field(default_factory=list)

    @property
    def rows_out(self) -> int:
        return self.funnel[-1].rows_out if self.funnel else self.rows_in

    @property
    def batch(self) -> DataFrame:
        """The (cached) input rows."""
        return self._cached[0]

    def release(self) -> None:
        """Forget the materialized frames; Spark's cleaner frees their blocks."""
        self._cached.clear()


class FunnelMismatchError(MillpondError, RuntimeError):
    """A stage lost or invented rows: the funnel does not reconcile."""


def run_stages(
    frame: DataFrame, stages: list[tuple[str, Stage]], report: Callable[[str], None] | None = None
) -> PipelineRun:
    """Run the stages in order over `frame`; each sees only the rows not dropped before it."""
    current = _materialize(frame)
    cached = [current]
    rows_in = current.count()
    run = PipelineRun(survivors=current, decisions=None, funnel=[], rows_in=rows_in, _cached=cached)
    alive_rows = rows_in
    decision_frames = []
    for name, stage in stages:
        started = time.monotonic()
        decided = _materialize(stage(current))
        cached.append(decided)
        counts = StageCounts(stage=name, rows_in=alive_rows)
        for row in decided.groupBy(f"{DECISION}.action", f"{DECISION}.reason").count().collect():
            action, reason, count = row[0], row[1], row[2]
            if action == KEPT:
                counts.kept += count
            elif action == MODIFIED:
                counts.modified += count
            elif action == DROPPED:
                counts.dropped[reason or "unspecified"] = counts.dropped.get(reason or "unspecified", 0) + count
            else:
                raise FunnelMismatchError(f"stage {name} returned an unknown action {action!r}")
        total = counts.kept + counts.modified + sum(counts.dropped.values())
        if total != alive_rows:
            raise FunnelMismatchError(f"stage {name} was given {alive_rows} rows and decided on {total}")
        counts.seconds = round(time.monotonic() - started, 2)
        run.funnel.append(counts)
        if report is not None:
            report(f"{name}: {alive_rows} in, {counts.rows_out} out ({counts.seconds:.1f} s)")
        run.outputs[name] = decided
        decision_frames.append(decided.select("doc_id", F.lit(name).alias("stage"), f"{DECISION}.*"))
        current = decided.where(F.col(f"{DECISION}.action") != DROPPED).drop(DECISION)
        alive_rows = counts.rows_out
    run.survivors = current
    if decision_frames:
        union = decision_frames[0]
        for more in decision_frames[1:]:
            union = union.unionByName(more)
        run.decisions = union
    return run


def _materialize(frame: DataFrame) -> DataFrame:
    """Each stage's output, text and all, on local disk and read back as a stream: a large batch
    never fits in memory, and a block kept in memory and on disk is read back into one buffer the
    size of the block (at 1M documents that ran an 8 GB driver out of heap)."""
    return frame.localCheckpoint(eager=True, storageLevel=StorageLevel.DISK_ONLY)
