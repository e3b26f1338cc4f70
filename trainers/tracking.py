"""MLflow for training and data runs, apart from where the store is (that is the job's to say): the
config as params, the snapshot a run is pinned to as params and as its dataset input, the
registered version of the run's model, and the run of a data job (ingest, curate, snapshot,
preference build) with its counts, tables and plots."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineage.catalog import table

if TYPE_CHECKING:
    from lineage.runs import Run


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


def metric_name(count: str) -> str:
    """`quality:min_word_count` -> `quality/min_word_count` (MLflow's grouping separator)."""
    return count.replace(":", "/")


def log_data_run(client: Any, experiment_id: str, lakehouse: Path, run: Run, figures: dict[str, Any]) -> str:
    """One finished MLflow run in `experiment_id` for a finished job run (`lineage.runs`), with
    `figures` (matplotlib) as PNG artifacts under `plots/`; returns its id. It goes through
    `client`, never the fluent API, so an active run (a flywheel turn's) is left alone."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = run.started_at.strftime("%Y%m%d-%H%M%S")
    named = run.params.get("name") or run.params.get("snapshot")
    tags = {
        "mlflow.runName": f"{run.job}-{named}-{stamp}" if named else f"{run.job}-{stamp}",
        "millpond.kind": "data",
        "millpond.job": run.job,
        "lineage.run_id": run.run_id,
        **{f"input.{table}": str(version) for table, version in run.input_versions.items()},
        **{f"output.{table}": str(version) for table, version in run.output_versions.items()},
    }
    if run.spark_app_id:
        tags["spark.app_id"] = run.spark_app_id
    created = client.create_run(experiment_id, start_time=_ms(run.started_at))
    mlflow_run_id = created.info.run_id
    if run.input_versions:
        client.log_inputs(mlflow_run_id, datasets=table_inputs(lakehouse, run.input_versions))
    params = {"config.digest": run.config_digest} | flatten(run.params, "job")
    timestamp = _ms(run.ended_at or run.started_at)
    client.log_batch(
        mlflow_run_id,
        metrics=[Metric(metric_name(k), float(v), timestamp, 0) for k, v in sorted(run.counts.items())],
        params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in run.reports.items():
            (folder / f"{name}.json").write_text(json.dumps(json.loads(text), indent=2, sort_keys=True))
            client.log_artifact(mlflow_run_id, str(folder / f"{name}.json"), "reports")
        import matplotlib.pyplot as plt

        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            client.log_artifact(mlflow_run_id, str(folder / f"{name}.png"), "plots")
    client.set_terminated(mlflow_run_id, "FINISHED", end_time=_ms(run.ended_at) if run.ended_at else None)
    return mlflow_run_id


def table_inputs(lakehouse: Path, versions: dict[str, int]) -> list[Any]:
    """The tables a job read, each as an MLflow dataset input: its Delta path and the version read,
    named `<table>@v<version>` as training runs name their snapshots."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for name, version in sorted(versions.items()):
        source = DeltaDatasetSource(path=table(name).path(lakehouse), delta_table_version=int(version))
        dataset = MetaDataset(source=source, name=f"{name}@v{version}")
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "source")]))
    return inputs


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


# MLflow's UI (3.x) opens every experiment in the view its "GenAI | Model training" switch last
# chose, GenAI's traces overview unless the user switched; the experiment's `mlflow.experimentKind`
# tag does not decide it. A link with this query opens the model-training view: the runs table.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def experiment_page(ui_url: str, experiment_id: str) -> str:
    """The link that opens an experiment on its runs table (params, metrics, dataset, model)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?{MODEL_TRAINING_VIEW}"


def experiment_pages(tracking_uri: str, ui_url: str) -> list[tuple[str, str]]:
    """(name, link) of each experiment in the store that holds runs, in the order they were made."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiments = sorted(client.search_experiments(), key=lambda e: e.creation_time or 0)
    held = [e for e in experiments if client.search_runs([e.experiment_id], max_results=1)]
    return [(e.name, experiment_page(ui_url, e.experiment_id)) for e in held]
