"""Data jobs in MLflow: ingest, curate, snapshot and preference builds each log a run beside the
training runs, so data runs can be compared like training runs.

`tracked_run` is the one run lifecycle (`lineage.runs.recorded_run`) plus, when the job
succeeded, one MLflow run in the experiment `<prefix>-data`: params (the config digest and the
job's settings), metrics (its counts: the funnel), the tables it read as dataset inputs (Delta
path and version), tags (the table versions it read and wrote, and its `lineage.runs` id), its reports as JSON artifacts and plots as PNG (the curation funnel,
its near-duplicate cluster sizes and PII by type, a snapshot's source mixture). It goes through
`MlflowClient`, never the fluent API, so a job run inside a flywheel turn leaves the turn's
active run and experiment alone. `[mlflow] log_data_jobs = false` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from curation.commit import run_findings
from evals.plots import cluster_figure, counts_figure, funnel_figure, mixture_figure
from jobs.config import Config, MlflowSettings, params_from
from jobs.context import progress
from jobs.tracking import experiment_id, tracking_uri
from lineage.catalog import table
from lineage.runs import Run, recorded_run
from trainers.tracking import flatten

EXPERIMENT = "data"


@contextlib.contextmanager
def tracked_run(
    spark: SparkSession, config: Config, run: Run, on_failure: Callable[[BaseException], None] | None = None
) -> Iterator[Run]:
    """`recorded_run`, then the MLflow run of a job that succeeded (a tracking error is reported,
    never raised: the tables are already written)."""
    with recorded_run(spark, config.lakehouse, run, on_failure):
        yield run
    if not params_from(MlflowSettings, config.section("mlflow")).log_data_jobs:
        return
    try:
        log_data_run(config, run)
    except Exception as err:  # noqa: BLE001 - the job's tables are committed; MLflow is a view of it
        progress(f"could not log {run.run_id} to MLflow ({tracking_uri(config)}): {type(err).__name__}: {err}")


def metric_name(count: str) -> str:
    """`quality:min_word_count` -> `quality/min_word_count` (MLflow's grouping separator)."""
    return count.replace(":", "/")


def log_data_run(config: Config, run: Run) -> str:
    """One finished MLflow run for a finished job run; returns its id."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(tracking_uri(config))
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
    created = client.create_run(experiment_id(config, EXPERIMENT, client), start_time=_ms(run.started_at))
    mlflow_run_id = created.info.run_id
    if run.input_versions:
        client.log_inputs(mlflow_run_id, datasets=table_inputs(config, run.input_versions))
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

        for name, figure in plots(config, run).items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            client.log_artifact(mlflow_run_id, str(folder / f"{name}.png"), "plots")
    client.set_terminated(mlflow_run_id, "FINISHED", end_time=_ms(run.ended_at) if run.ended_at else None)
    return mlflow_run_id


def table_inputs(config: Config, versions: dict[str, int]) -> list[Any]:
    """The tables a job read, each as an MLflow dataset input: its Delta path and the version read,
    named `<table>@v<version>` as training runs name their snapshots."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for name, version in sorted(versions.items()):
        source = DeltaDatasetSource(path=table(name).path(config.lakehouse), delta_table_version=int(version))
        dataset = MetaDataset(source=source, name=f"{name}@v{version}")
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "source")]))
    return inputs


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def plots(config: Config, run: Run) -> dict[str, Any]:
    """The figures of a run: a curate run's funnel, its near-duplicate cluster sizes and the PII it
    found by type (read back from `silver.decisions` and `silver.pii_index`), a snapshot's source
    mixture, and the counts of every other job."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out = {}
    if run.job == "curate" and "funnel" in run.reports:
        out["funnel"] = funnel_figure(json.loads(run.reports["funnel"]))
        sizes, pii = run_findings(config.lakehouse, run.run_id)
        if sizes:
            out["near_duplicate_clusters"] = cluster_figure(sizes)
        if pii:
            out["pii_by_type"] = counts_figure("PII found by type (distinct values per document)", pii)
    if run.job == "snapshot" and "mixture" in run.reports:
        out["mixture"] = mixture_figure(json.loads(run.reports["mixture"]))
    if not out and run.counts:
        out["counts"] = counts_figure(f"{run.job}: counts", run.counts)
    return out
