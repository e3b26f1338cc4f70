"""A data subject's erasure carried out, step by step, with its audit trail.

`lineage.subjects` finds what holds a person's data and `lineage.erasure` knows how to remove
each kind of thing; this module runs one request through them in the order that leaves no copy
behind and can be re-run after a crash: the request row, tombstones (so re-ingesting the same
content is refused), DELETE + purge + VACUUM in every table, snapshots re-pinned, token shards
dropped, the events cut from the landing files, MLflow runs and model versions tagged, the
evaluation samples that hold the person's prompts deleted, and a certificate written and recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from lineage.catalog import GOVERNANCE_REQUESTS, GOVERNANCE_TOMBSTONES
from lineage.erasure import (
    ErasureCertificate,
    drop_shards,
    erase_documents,
    lost_words,
    new_request_id,
    record_request,
    repin_snapshots,
    tombstone_rows,
    write_tombstones,
)
from lineage.errors import MillpondError
from lineage.exposure import drop_eval_samples
from lineage.landing_files import erase_landing
from lineage.locations import certificates_folder, landing_folder
from lineage.runs import ERASE_JOB, Run, recorded_run
from lineage.subjects import ErasurePolicy, RequestError, SubjectForms
from lineage.tables import read_table

# What the certificate's `found` section copies from `find`'s answer: (certificate key, answer key).
FOUND_IN_CERTIFICATE = (
    ("documents", "documents"),
    ("rows", "row_counts"),
    ("clusters", "clusters"),
    ("copies_left", "copies_left"),
    ("snapshots", "snapshots"),
)


def earlier_requests(lakehouse: str | Path, labels: list[str]) -> list[dict[str, Any]]:
    """Completed erasures that named one of these subjects, with what they left pending."""
    stones = read_table(GOVERNANCE_TOMBSTONES, lakehouse, columns=["kind", "value", "request_id"])
    requests = read_table(GOVERNANCE_REQUESTS, lakehouse)
    if stones is None or requests is None:
        return []
    ids = {r["request_id"] for r in stones.to_pylist() if r["kind"] == "subject" and r["value"] in set(labels)}
    found = []
    for row in requests.to_pylist():
        if row["request_id"] in ids and row["status"] == "completed":
            certificate = json.loads(row["certificate"] or "{}")
            found.append(
                {
                    "request_id": row["request_id"],
                    "completed_at": str(row["completed_at"]),
                    "pending": certificate.get("pending", {}),
                }
            )
    return sorted(found, key=lambda r: r["completed_at"])


def check_reason(reason: str, identifiers: tuple[str, ...]) -> None:
    """The audit trail says why, and never who: the identifiers stay keyed hashes."""
    if not reason.strip():
        raise RequestError("--reason is required: the audit trail says why data was erased")
    if any(i.strip().lower() in reason.lower() for i in identifiers if i.strip()):
        raise RequestError("the reason must not contain the identifiers: they are kept only as keyed hashes")


def erasure_plan(found: dict[str, Any], policy: ErasurePolicy) -> dict[str, Any]:
    """What `erase` would do with what `find` found (the dry run's answer)."""
    return {
        "delete": found["row_counts"],
        "vacuum_retention_hours": policy.vacuum_retention_hours,
        "drop_shards_of": [s["name"] for s in found["snapshots"]],
        "tag_runs": [r["run_id"] for r in found["runs"]],
        "drop_eval_samples_of": found["eval_samples"],
        "tag_models": found["models"],
    }


def tag_exposed(client: Any, request_id: str, runs: list[dict[str, Any]], models: list[dict[str, Any]]) -> None:
    """Tag the MLflow runs and model versions that trained on the erased data: they stay pending."""
    key = f"millpond.erasure.{request_id}"
    for run in runs:
        tokens = "unknown" if run["tokens"] is None else str(run["tokens"])
        client.set_tag(run["run_id"], key, f"trained on erased data: {tokens} tokens; retrain or retire")
    for model in models:
        client.set_model_version_tag(model["name"], model["version"], key, "trained on erased data; retrain")


def erase_found(
    spark: SparkSession,
    lakehouse: str | Path,
    found: dict[str, Any],
    subjects: list[SubjectForms],
    policy: ErasurePolicy,
    reason: str,
    *,
    client: Any | None,
    config_digest: str,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[ErasureCertificate, Path, str]:
    """Erase everything `find` found for `subjects`; the certificate, its file and its sha256.

    `client` is the MLflow tracking store's client (None without a store): runs and models are
    tagged there and evaluation samples deleted from it.
    """
    if not subjects:
        raise MillpondError("an erasure needs at least one subject")
    documents = found["documents"]
    affected = [s["name"] for s in found["snapshots"]]
    request_id = new_request_id()
    labels = [s["hmac"] for s in found["subjects"]]
    requested_at = datetime.now(UTC)
    request = {
        "request_id": request_id,
        "kind": "erase",
        "status": "running",
        "reason": reason,
        "subjects": labels,
        "requested_at": requested_at,
        "found": found["row_counts"],
    }
    run = Run(job=ERASE_JOB, config_digest=config_digest, params={"request_id": request_id, "subjects": len(labels)})

    def record_failure(err: BaseException) -> None:
        record_request(spark, lakehouse, request | {"status": "failed", "error": f"{type(err).__name__}: {err}"[:4000]})

    with recorded_run(spark, lakehouse, run, on_failure=record_failure):
        record_request(spark, lakehouse, request)
        progress(f"request {request_id}: writing tombstones")
        words = lost_words(spark, lakehouse, documents) if documents else {}
        stones = write_tombstones(spark, lakehouse, tombstone_rows(spark, lakehouse, documents, labels, request_id))
        progress(f"request {request_id}: deleting {len(documents)} document(s) from every table, purging, vacuuming")
        erased = erase_documents(
            spark, lakehouse, documents, policy.vacuum_retention_hours, holding=set(found["row_counts"]),
            on_table=lambda e, s: progress(
                f"  {e.table}: {e.rows_deleted} row(s) deleted, {e.bytes_written / 1e6:.1f} MB rewritten, "
                f"{e.bytes_removed / 1e6:.1f} MB vacuumed ({s:.1f} s)"
            ),
        )  # fmt: skip
        vacuumed = {e.table: e.version_after for e in erased}
        removed = {s["name"]: s["members"] for s in found["snapshots"]}
        progress(f"request {request_id}: re-pinning snapshots, dropping shards, tagging MLflow runs")
        amendments = repin_snapshots(spark, lakehouse, vacuumed, removed, words, request_id)
        dropped = drop_shards(lakehouse, affected)
        progress(f"request {request_id}: cutting their events out of the landing files")
        landing = erase_landing(landing_folder(lakehouse), subjects, set(documents), policy.landing_wait_seconds)
        samples = []
        if client is not None:
            tag_exposed(client, request_id, found["runs"], found["models"])
            samples = [r for r in found["eval_samples"] if drop_eval_samples(client, r)]
        certificate = ErasureCertificate(
            request_id=request_id,
            reason=reason,
            subjects=found["subjects"],
            requested_at=requested_at,
            completed_at=datetime.now(UTC),
            policy=found["policy"],
            found={key: found[name] for key, name in FOUND_IN_CERTIFICATE},
            deleted=erased,
            tombstones=stones,
            snapshots_repinned=amendments,
            shards_dropped=dropped,
            runs=found["runs"],
            models=found["models"],
            landing=landing.as_json(),
            eval_samples_dropped=samples,
        )
        path, digest = certificate.write(certificates_folder(lakehouse))
        deleted = {e.table: e.rows_deleted for e in erased}
        record_request(
            spark,
            lakehouse,
            request
            | {"status": "completed", "completed_at": certificate.completed_at, "deleted": deleted,
               "certificate": certificate.text(), "certificate_sha256": digest},
        )  # fmt: skip
        run.input_versions = {e.table: e.version_before for e in erased}
        run.output_versions = {e.table: e.version_after for e in erased}
        run.counts = {f"deleted:{k}": v for k, v in deleted.items()} | {"documents": len(documents)}
    return certificate, path, digest
