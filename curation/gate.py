"""`gate`: a Great Expectations 1.x suite run on the batch before it is committed.

The gate drops nothing: either the whole batch passes, or the run commits nothing and says
which expectations failed on how many rows. The kept result holds counts only, never the
offending values (they may be personal data).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame

from lineage.errors import MillpondError

PROVENANCE = ("doc_id", "source", "source_uri", "locator", "ingested_at", "ingest_run_id", "content_sha256")
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# An IPv4 address that can point at someone: loopback (127/8), unspecified (0.0.0.0), link-local
# (169.254/16) and multicast (224-239) addresses are left in the text by the pii stage, as in
# `host = 127.0.0.1` of a config file, so the gate does not count them either.
IPV4 = (
    r"\b(?!127\.|0\.0\.0\.0\b|169\.254\.|2(?:2[4-9]|3\d)\.)"
    r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\b"
)


@dataclass(frozen=True)
class GateParams:
    """The `[curate.gate]` section."""

    # "auto": check for residual e-mail and IP patterns only when the pii stage ran in this pipeline
    residual_pii: str = "auto"  # auto | on | off

    def __post_init__(self) -> None:
        if self.residual_pii not in ("auto", "on", "off"):
            raise ValueError(f"[curate.gate] residual_pii must be auto, on or off, got {self.residual_pii!r}")


class GateFailedError(MillpondError, RuntimeError):
    """The batch failed the quality gate: nothing was committed."""

    def __init__(self, result: GateResult) -> None:
        failed = [r for r in result.results if not r["success"]]
        parts = [f"{r['expectation']}({r['column']}) on {r['unexpected_count']} row(s)" for r in failed]
        super().__init__(f"the quality gate failed, nothing was committed: {'; '.join(parts)}")
        self.result = result


@dataclass(frozen=True)
class GateResult:
    success: bool
    rows: int
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "results": self.results}


def expectations(columns: list[str], check_lang: bool, check_license: bool, check_pii: bool) -> list[Any]:
    import great_expectations.expectations as gxe

    suite = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in PROVENANCE if c in columns]
    suite.append(gxe.ExpectColumnValuesToBeUnique(column="doc_id"))
    if check_lang:
        suite.append(gxe.ExpectColumnValuesToNotBeNull(column="lang"))
    if check_license:
        suite.append(gxe.ExpectColumnValuesToNotBeNull(column="license"))
    if check_pii:
        suite.append(gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL))
        suite.append(gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=IPV4))
    return suite


def validate(frame: DataFrame, *, check_lang: bool, check_license: bool, check_pii: bool) -> GateResult:
    """Run the suite on the batch and return its outcome (counts only)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network from a data job
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch_definition = (
        context.data_sources.add_spark("millpond")
        .add_dataframe_asset("curated_batch")
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = gx.ExpectationSuite(name="silver_documents_gate")
    for expectation in expectations(frame.columns, check_lang, check_license, check_pii):
        suite.add_expectation(expectation)
    outcome = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0}
    )
    results = []
    rows = 0
    for item in outcome.results:
        result = item.result or {}
        rows = max(rows, int(result.get("element_count") or 0))
        results.append(
            {
                "expectation": item.expectation_config.type,
                "column": item.expectation_config.kwargs.get("column"),
                "success": bool(item.success),
                "unexpected_count": int(result.get("unexpected_count") or 0),
            }
        )
    return GateResult(success=bool(outcome.success), rows=rows, results=results)


def gate(frame: DataFrame, params: GateParams, stages_run: Collection[str]) -> GateResult:
    """The quality gate on a batch's survivors: `lang` and `license` checked when their stages ran,
    residual e-mail and IPv4 patterns when `residual_pii` is on, or auto and the pii stage ran."""
    return validate(
        frame,
        check_lang="language" in stages_run,
        check_license="license" in stages_run,
        check_pii=params.residual_pii == "on" or (params.residual_pii == "auto" and "pii" in stages_run),
    )
