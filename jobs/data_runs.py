"""Data jobs in MLflow: ingest, curate, snapshot and preference builds each log a run beside the
training runs, so data runs can be compared like training runs.

`tracked_run` is the one run lifecycle (`lineage.runs.recorded_run`) plus, when the job
succeeded, one MLflow run in the experiment `<prefix>-data` (`trainers.tracking.log_data_run`):
params (the config digest and the job's settings), metrics (its counts: the funnel), the tables
it read as dataset inputs (Delta path and version), tags (the table versions it read and wrote,
and its `lineage.runs` id), its reports as JSON artifacts and plots as PNG (the curation funnel,
its near-duplicate cluster sizes and PII by type, a snapshot's source mixture, drawn here). It goes through
`MlflowClient`, never the fluent API, so a job run inside a flywheel turn leaves the turn's
active run and experiment alone. `[mlflow] log_data_jobs = false` turns it off.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pyspark.sql import SparkSession

from curation.commit import run_findings
from evals.plots import cluster_figure, counts_figure, funnel_figure, mixture_figure
from jobs.config import Config, MlflowSettings, params_from
from jobs.context import progress
from jobs.tracking import experiment_id, tracking_uri
from lineage.runs import Run, recorded_run
from trainers.tracking import log_data_run

EXPERIMENT = "data"


@contextlib.contextmanager
def tracked_run(
    spark: SparkSession, config: Config, run: Run, on_failure: Callable[[BaseException], None] | None = None
) -> Iterator[Run]:
    """`recorded_run`, then the MLflow run of a job that succeeded (a tracking error is reported,
    never raised: the tables are already written).

    The tracking store is opened (and, in a new lakehouse, created: a second of SQLite schema
    migrations) in a thread while the job runs, since the driver mostly waits on Spark then."""
    if not params_from(MlflowSettings, config.section("mlflow")).log_data_jobs:
        with recorded_run(spark, config.lakehouse, run, on_failure):
            yield run
        return
    store: concurrent.futures.Future[tuple[Any, str]] = concurrent.futures.Future()
    # A daemon thread: a job that fails does not wait for a slow tracking server.
    threading.Thread(target=_open_store, args=(config, store), name="mlflow-store", daemon=True).start()
    with recorded_run(spark, config.lakehouse, run, on_failure):
        yield run
    try:
        client, experiment = store.result()
        log_data_run(client, experiment, config.lakehouse, run, plots(config, run))
    except Exception as err:  # noqa: BLE001 - the job's tables are committed; MLflow is a view of it
        progress(f"could not log {run.run_id} to MLflow ({tracking_uri(config)}): {type(err).__name__}: {err}")


def _open_store(config: Config, store: concurrent.futures.Future[tuple[Any, str]]) -> None:
    """An MLflow client on the configured store and the id of the data jobs' experiment, into `store`."""
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri(config))
        store.set_result((client, experiment_id(config, EXPERIMENT, client)))
    except BaseException as err:  # noqa: BLE001 - handed to the job's thread, which reports it
        store.set_exception(err)


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
