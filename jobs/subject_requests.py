"""`millpond lineage find` and `millpond lineage erase`: data subject requests.

`find` answers "which rows, snapshots, training runs and models hold data of this person?":
identifiers (a user id, an e-mail address, a phone number) are normalized and keyed as the
pii stage keyed them, matched in every table that declares subject, text or document columns,
closed over lineage.edges (duplicate clusters included), and followed into gold snapshots and
the MLflow runs that trained on them, with how many of the person's tokens each run saw.

`erase` removes all of it physically, with an audit trail: governance.requests, tombstones
that keep the content from being ingested again, DELETE + purge + VACUUM per table, token
shards dropped, snapshots re-pinned, MLflow runs and model versions tagged, and a certificate
that says what stays pending: the models that saw the data.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from pyspark.sql import SparkSession

from curation.pii import PiiParams, pii_key
from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.tracking import tracking_uri
from lineage.exposure import all_runs, runs_with_eval_samples, training_runs
from lineage.requests import check_reason, earlier_requests, erase_found, erasure_plan
from lineage.subjects import ErasurePolicy, RequestError, SubjectForms, find_lineage, subject_forms


def _forms(config: Config, identifiers: tuple[str, ...]) -> list[SubjectForms]:
    if not identifiers:
        raise RequestError("name at least one --subject")
    params = params_from(PiiParams, config.section("curate")["pii"])
    key = pii_key(params)
    return [subject_forms(i, key, params.phone_region) for i in identifiers]


def _mlflow_client(config: Config) -> Any | None:
    """A client of the configured tracking store; None when there is no store yet."""
    uri = tracking_uri(config)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def find_subjects(spark: SparkSession, config: Config, identifiers: tuple[str, ...]) -> dict[str, Any]:
    """The answer of `lineage find` as JSON-ready data."""
    subjects = _forms(config, identifiers)
    policy = params_from(ErasurePolicy, config.section("lineage"))
    progress(f"looking for {len(subjects)} subject(s) in every table the catalog knows")
    lineage = find_lineage(spark, config.lakehouse, subjects, policy)
    client = _mlflow_client(config) if lineage.snapshots else None
    every = all_runs(client) if client is not None else []  # one pass over the store for both questions
    runs, models = training_runs(client, lineage, every)
    return {
        "subjects": [{"kind": s.kind, "hmac": s.label} for s in subjects],
        "documents": lineage.documents,
        "seeds": lineage.seeds,
        "rows": lineage.rows,
        "row_counts": lineage.row_counts,
        "clusters": lineage.clusters,
        "copies_left": lineage.kept_copies,
        "snapshots": lineage.snapshots,
        "runs": runs,
        "models": models,
        "eval_samples": runs_with_eval_samples(every, {s["name"] for s in lineage.snapshots}),
        "requests": earlier_requests(config.lakehouse, [s.label for s in subjects]),
        "policy": asdict(policy),
    }


def erase_subjects(
    spark: SparkSession, config: Config, identifiers: tuple[str, ...], reason: str, dry_run: bool = False
) -> dict[str, Any]:
    """Erase everything `find` finds; returns the certificate (or, dry, the plan)."""
    check_reason(reason, identifiers)
    policy = params_from(ErasurePolicy, config.section("lineage"))
    found = find_subjects(spark, config, identifiers)
    if dry_run:
        return {"dry_run": True, "found": found, "plan": erasure_plan(found, policy)}
    certificate, path, digest = erase_found(
        spark,
        config.lakehouse,
        found,
        _forms(config, identifiers),
        policy,
        reason,
        client=_mlflow_client(config),
        config_digest=config.digest(),
        progress=progress,
    )
    return certificate.as_json() | {"certificate_file": str(path), "certificate_sha256": digest}


@click.group("lineage")
def lineage_group() -> None:
    """Data subject requests: find a person's rows, snapshots and models; erase them."""


def _print_found(found: dict[str, Any]) -> None:
    click.echo(f"{len(found['documents'])} document(s) ({len(found['seeds'])} naming the subject directly)")
    for table, count in sorted(found["row_counts"].items()):
        click.echo(f"  {table:<24} {count:>6} row(s)")
    for cluster, members in found["clusters"].items():
        click.echo(f"  duplicate cluster {cluster}: {len(members)} member(s)")
    if found["copies_left"]:
        click.echo(f"  {len(found['copies_left'])} copy(ies) left by the duplicates policy 'own'")
    for snap in found["snapshots"]:
        click.echo(
            f"  snapshot {snap['name']} ({snap['source_table']} v{snap['version']}): {snap['members']} member(s)"
        )
    for run in found["runs"]:
        tokens = "?" if run["tokens"] is None else f"{run['tokens']:,}"
        click.echo(f"  {run['kind']} run {run['run_id']} on {run['snapshot']}: saw {tokens} of their tokens")
    for model in found["models"]:
        click.echo(f"  model {model['name']} v{model['version']} (run {model['run_id']})")
    for run_id in found["eval_samples"]:
        click.echo(f"  evaluation samples of run {run_id} (`millpond eval --suite samples`) hold their prompts")
    for request in found["requests"]:
        click.echo(f"  erased before by {request['request_id']} ({request['completed_at']})")


@lineage_group.command("find")
@click.option("--subject", "subjects", multiple=True, required=True, help="User id, e-mail or phone (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@spark_options
@lakehouse_options
def find_command(
    subjects: tuple[str, ...], as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """List every row, snapshot, training run and model that holds data of a person."""
    config = effective_config(lakehouse, config_file)
    _forms(config, subjects)  # the key is checked before Spark starts
    spark = open_spark(config, master, app_name="millpond-lineage-find")
    found = find_subjects(spark, config, subjects)
    if as_json:
        click.echo(json.dumps(found, sort_keys=True, default=str))
    else:
        _print_found(found)


@lineage_group.command("erase")
@click.option("--subject", "subjects", multiple=True, required=True, help="User id, e-mail or phone (repeatable).")
@click.option("--reason", required=True, help="Why (e.g. 'GDPR art. 17 request #1234'); no identifiers.")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the certificate (or the plan) as JSON.")
@spark_options
@lakehouse_options
def erase_command(
    subjects: tuple[str, ...],
    reason: str,
    dry_run: bool,
    as_json: bool,
    master: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Erase a person's data physically from every table, with tombstones and a certificate."""
    config = effective_config(lakehouse, config_file)
    _forms(config, subjects)
    spark = open_spark(config, master, app_name="millpond-lineage-erase")
    result = erase_subjects(spark, config, subjects, reason, dry_run)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True, default=str))
        return
    if dry_run:
        click.echo("dry run: nothing changed")
        _print_found(result["found"])
        return
    click.echo(f"request {result['request_id']}: erased {len(result['found']['documents'])} document(s)")
    for table in result["deleted"]:
        click.echo(
            f"  {table['table']:<24} {table['rows_deleted']:>6} row(s) deleted, v{table['version_before']} -> "
            f"v{table['version_after']}, vacuumed (retention {table['retention_hours']} h)"
        )
    for model in result["pending"]["models"]:
        click.echo(f"  pending: {model['kind']} run {model['run_id']} saw {model['tokens']} tokens: {model['action']}")
    click.echo(f"certificate: {result['certificate_file']} (sha256 {result['certificate_sha256'][:16]})")


if __name__ == "__main__":  # spark-submit jobs/subject_requests.py find --subject ... (millpond submit lineage)
    from jobs.cli import run_job_file

    run_job_file(["lineage"], sys.argv[1:])
