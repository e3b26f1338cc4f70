"""Data jobs in MLflow: ingest, curate, snapshot and preference builds each log a run beside the
training runs, so data runs can be compared like training runs.

`tracked_run` is the one run lifecycle (`lineage.runs.recorded_run`) plus, when the job
succeeded, one MLflow run in the experiment `<prefix>-data`: params (the config digest and the
job's settings), metrics (its counts: the funnel), tags (the table versions it read and wrote,
and its `lineage.runs` id), its reports as JSON artifacts and plots as PNG (the curation funnel,
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

from jobs.config import Config, MlflowSettings, params_from
from jobs.context import progress
from jobs.tracking import experiment_id, flatten, tracking_uri
from lineage.runs import Run, recorded_run

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
        sizes, pii = curate_findings(config, run.run_id)
        if sizes:
            out["near_duplicate_clusters"] = cluster_figure(sizes)
        if pii:
            out["pii_by_type"] = counts_figure("PII found by type (distinct values per document)", pii)
    if run.job == "snapshot" and "mixture" in run.reports:
        out["mixture"] = mixture_figure(json.loads(run.reports["mixture"]))
    if not out and run.counts:
        out["counts"] = counts_figure(f"{run.job}: counts", run.counts)
    return out


def curate_findings(config: Config, run_id: str) -> tuple[list[int], dict[str, int]]:
    """(the size of every near-duplicate cluster a curate run found, the PII values it indexed by
    entity type), from the tables it wrote."""
    from collections import Counter

    import pyarrow.dataset as ds

    from lineage.catalog import SILVER_DECISIONS, SILVER_PII_INDEX
    from lineage.tables import read_table

    near = read_table(SILVER_DECISIONS, config.lakehouse, ["duplicate_of"],
                      where=(ds.field("run_id") == run_id) & (ds.field("reason") == "near_duplicate"))  # fmt: skip
    kept = Counter(v for v in ([] if near is None else near.column("duplicate_of").to_pylist()) if v)
    found = read_table(SILVER_PII_INDEX, config.lakehouse, ["entity_type"], where=ds.field("curate_run_id") == run_id)
    pii = Counter([] if found is None else found.column("entity_type").to_pylist())
    return [1 + n for n in kept.values()], dict(pii)


def cluster_figure(sizes: list[int]) -> Any:
    """How many near-duplicate clusters of each size (the kept copy and the copies dropped for it)."""
    from collections import Counter

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_size = Counter(sizes)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar(list(by_size), list(by_size.values()), width=0.8, color="#4c72b0")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("documents in the cluster (the kept one and its near duplicates)")
    axis.set_ylabel("clusters")
    axis.set_title(f"near-duplicate clusters: {len(sizes)}, {sum(sizes) - len(sizes)} documents dropped")
    return figure


def funnel_figure(report: dict[str, Any]) -> Any:
    """Documents into each curation stage, kept and dropped (stacked), with the top drop reasons."""
    import matplotlib.pyplot as plt

    stages = report.get("stages", [])
    names = [s["stage"] for s in stages]
    kept = [s.get("kept", 0) + s.get("modified", 0) for s in stages]
    dropped = [sum((s.get("dropped") or {}).values()) for s in stages]
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    axis.barh(names, kept, color="#4c72b0", label="kept (or modified)")
    axis.barh(names, dropped, left=kept, color="#dd8452", label="dropped")
    for i, stage in enumerate(stages):
        reasons = sorted((stage.get("dropped") or {}).items(), key=lambda kv: -kv[1])[:2]
        if reasons:
            axis.text(
                kept[i] + dropped[i], i, "  " + ", ".join(f"{r} {n}" for r, n in reasons), va="center", fontsize=8
            )
    axis.invert_yaxis()
    axis.set_xlabel("documents")
    axis.set_title(
        f"curation funnel: {report.get('in', sum(kept[:1]) + sum(dropped[:1]))} in, {report.get('out', '?')} out"
    )
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    return figure


def mixture_figure(shares: dict[str, float]) -> Any:
    """The share of training words each source has in a snapshot."""
    import matplotlib.pyplot as plt

    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(ordered) + 1.4))
    axis.barh([s for s, _ in ordered], [v for _, v in ordered], color="#55a868")
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of training words")
    axis.set_title("source mixture of the training split")
    return figure


def counts_figure(title: str, counts: dict[str, int]) -> Any:
    import matplotlib.pyplot as plt

    ordered = sorted(counts.items())
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.4))
    axis.barh([k for k, _ in ordered], [v for _, v in ordered], color="#4c72b0")
    axis.invert_yaxis()
    axis.set_title(title)
    return figure
