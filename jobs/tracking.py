"""MLflow tracking for millpond's runs: one place decides the tracking URI and the experiments."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.config import Config, MlflowSettings, params_from
from jobs.context import progress
from lineage.locations import mlflow_folder

# The UI opens an experiment by this tag: the runs table of a model-training experiment, not the
# GenAI traces overview it shows an untagged one.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def flatten(values: Any, prefix: str) -> dict[str, Any]:
    """The whole config as MLflow params: `config.curate.pii.score_threshold = 0.4`; lists as JSON."""
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out |= flatten(value, f"{prefix}.{key}")
        return out
    return {prefix: json.dumps(values) if isinstance(values, list | tuple) else values}


def tracking_uri(config: Config) -> str:
    """`[mlflow] tracking_uri`, else MLFLOW_TRACKING_URI, else a SQLite store in the lakehouse."""
    settings = params_from(MlflowSettings, config.section("mlflow"))
    if settings.tracking_uri:
        return settings.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = mlflow_folder(config.lakehouse)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def experiment_id(config: Config, name: str, client: Any) -> str:
    """The id of experiment `<prefix>-<name>`, created (and tagged a model-training experiment) when
    missing. A new experiment on a local store keeps its artifacts next to the store, not in ./mlruns."""
    settings = params_from(MlflowSettings, config.section("mlflow"))
    full_name = f"{settings.experiment_prefix}-{name}"
    experiment = client.get_experiment_by_name(full_name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return experiment.experiment_id
    uri = tracking_uri(config)
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / full_name).as_uri()
    return client.create_experiment(full_name, artifact_location=artifacts, tags={EXPERIMENT_KIND: MODEL_TRAINING})


def use_experiment(config: Config, name: str) -> str:
    """Point MLflow at the configured store and experiment `<prefix>-<name>`; returns its id."""
    import mlflow

    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    found = experiment_id(config, name, mlflow.MlflowClient(uri))
    mlflow.set_experiment(experiment_id=found)
    return found


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

    from lineage.catalog import table

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


def step_logger(
    figures: dict[str, Any], tracking: bool, max_steps: int, detail: Callable[[Any], str] | None = None
) -> Callable[[Any], None]:
    """The training loop's `on_step` for a run: collect the losses in `figures`, log the step's
    metrics (rank 0 only) and print progress every 10 steps (`detail` adds to the line)."""

    def on_step(report: Any) -> None:
        import mlflow

        figures["losses"].append(report.loss)
        figures["steps"] = report.step
        figures["tokens_per_s"] = report.tokens_per_s
        figures["last"] = report.figures
        if tracking:
            mlflow.log_metrics(report.metrics(), step=report.step)
        if report.step % 10 == 0 or report.step == max_steps:
            more = f", {detail(report)}" if detail else ""
            progress(
                f"step {report.step}/{max_steps}: loss {report.loss:.4f}{more}, {report.tokens_per_s:,.0f} tokens/s"
            )

    return on_step
