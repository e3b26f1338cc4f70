"""MLflow for training runs, apart from where the store is (that is the job's to say): the config
as params, the snapshot a run is pinned to as params and as its dataset input, and the
registered version of the run's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lineage.catalog import table


def flatten(values: Any, prefix: str) -> dict[str, Any]:
    """The whole config as MLflow params: `config.curate.pii.score_threshold = 0.4`; lists as JSON."""
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out |= flatten(value, f"{prefix}.{key}")
        return out
    return {prefix: json.dumps(values) if isinstance(values, list | tuple) else values}


def snapshot_params(name: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The params that pin a training run to its snapshot: the name, the table and version it was cut
    from, the digest of its members."""
    return {
        "snapshot": name, "snapshot.source_table": snapshot["source_table"],
        "snapshot.source_version": snapshot["source_version"], "snapshot.digest": snapshot["content_digest"],
    }  # fmt: skip


def log_snapshot_dataset(lakehouse: Path, name: str, snapshot: dict[str, Any], summary: Any) -> None:
    """The snapshot as the active run's `training` dataset input: the Delta path and the table
    version it pins, named `<snapshot>@v<version>` (what the UI's Dataset column shows), the
    digest of its members, `summary` (a pandas frame: what the run read per split) as its profile."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    source = DeltaDatasetSource(
        path=table(snapshot["source_table"]).path(lakehouse), delta_table_version=snapshot["source_version"]
    )
    dataset = mlflow.data.from_pandas(
        summary, source=source, name=f"{name}@v{snapshot['source_version']}", digest=snapshot["content_digest"][:16]
    )
    mlflow.log_input(dataset, context="training")


def model_source(run_id: str, experiment_id: str, artifact_uri: str) -> tuple[str, str | None]:
    """(source, model id) of a registered version of a run's model: the MLflow model the run logged
    (`jobs.train.log_model`; `models:/<id>`, as `mlflow.register_model` links them), else the
    run's `model` artifacts."""
    import mlflow

    found = mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                        output_format="list")  # fmt: skip
    if not found:
        return f"{artifact_uri}/model", None
    return f"models:/{found[0].model_id}", found[0].model_id


def register_run_model(model_name: str, description: str, tags: dict[str, str]) -> dict[str, str]:
    """Register the active run's model (its MLflow model, see `model_source`) as a new version of
    `model_name`; returns {name, version}."""
    import mlflow

    client = mlflow.MlflowClient()
    if client.search_registered_models(filter_string=f"name = '{model_name}'") == []:
        client.create_registered_model(model_name, description=description)
    active = mlflow.active_run().info
    source, model_id = model_source(active.run_id, active.experiment_id, active.artifact_uri)
    version = client.create_model_version(model_name, source=source, run_id=active.run_id, tags=tags, model_id=model_id)
    return {"name": version.name, "version": str(version.version)}
