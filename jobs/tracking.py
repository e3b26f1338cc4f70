"""MLflow tracking for millpond's runs: one place decides the tracking URI and the experiments."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.config import Config, MlflowSettings, params_from
from jobs.context import progress
from lineage.locations import mlflow_folder

# What kind of experiment it is, as an MLflow tag. MLflow 3.17's UI does not open an experiment by
# it (it opens the view its switch last chose): millpond's links carry
# `trainers.tracking.MODEL_TRAINING_VIEW`.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


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
