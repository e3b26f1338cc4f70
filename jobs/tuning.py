"""What the tuning jobs (`train sft`, `train dpo`) share in MLflow: the model they start from, their
run as a child of the init run (or of a flywheel turn) in its experiment, the snapshot as the
run's dataset input (Delta path and version), and the params and tags every tuning run logs, so
MLflow's compare view and `lineage find` read SFT and DPO runs alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from jobs.config import Config, cache_dir
from jobs.tracking import tracking_uri
from jobs.train import TrainingInputError, git_commit, log_model
from trainers.loop import TrainSettings
from trainers.tracking import flatten, log_snapshot_dataset, register_run_model, snapshot_params


@dataclass
class InitModel:
    """The model a tuning run starts from, and the run it resumes (if any)."""

    named: str  # as the user named it: a run id or NAME[@ALIAS|/VERSION]
    served: Any  # serving.model's resolved model (run id, label, artifact uri)
    folder: Path  # its Hugging Face folder, downloaded once into the cache
    resumed: Any | None  # the MLflow run `--resume` continues


def init_model(config: Config, init: str | None, resume_run: str | None) -> InitModel:
    """Resolve `--init` (or the resumed run's remembered init) and download the model."""
    import mlflow

    from serving.model import download_model, resolve_any

    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    resumed = None
    if resume_run:
        try:
            resumed = mlflow.MlflowClient(uri).get_run(resume_run)
        except mlflow.exceptions.MlflowException:
            raise TrainingInputError(f"--resume {resume_run}: no such run at {uri}") from None
        init = init or resumed.data.params.get("init.model")
    if not init:
        raise TrainingInputError("--init is required: the run id or registered model to start from")
    served = resolve_any(uri, init)
    return InitModel(init, served, download_model(served, cache_dir()), resumed)


def start_run(config: Config, start: InitModel, parent_run_id: str | None, run_name: str) -> str:
    """Start (or reopen, on resume) the run beside its parent, nested inside a flywheel turn's run
    when one is active; returns its id."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(config))
    parent = client.get_run(parent_run_id or start.served.run_id)
    mlflow.set_experiment(experiment_id=parent.info.experiment_id)  # the compare view shows them together
    nested = mlflow.active_run() is not None
    if start.resumed is not None:
        return mlflow.start_run(run_id=start.resumed.info.run_id, nested=nested).info.run_id
    return mlflow.start_run(run_name=run_name, nested=nested).info.run_id


def run_label(start: InitModel) -> str:
    """The init model in a run name: `millpond-base-v1`."""
    return start.served.label.replace("/", "-v").replace(":", "-")


def log_snapshot_input(
    config: Config, name: str, snapshot: dict[str, Any], splits: Any, unit: str, kind: str, start: InitModel,
    parent_run_id: str | None,
) -> None:  # fmt: skip
    """The snapshot as the run's dataset input (named with the pinned table version, digest of its
    members, the count per split as its profile) and the tags every tuning run carries."""
    import mlflow
    import pandas as pd

    counts = pd.Series(splits).value_counts()
    summary = pd.DataFrame([{"split": s, unit: int(n)} for s, n in sorted(counts.items())])
    log_snapshot_dataset(config.lakehouse, name, snapshot, summary)
    mlflow.set_tags({
        "mlflow.parentRunId": parent_run_id or start.served.run_id, "snapshot": name, "millpond.kind": kind,
        "init": start.served.label, "git_commit": git_commit() or "unknown",
    })  # fmt: skip


def tuning_params(
    config: Config, kind: str, settings: Any, loop: TrainSettings, name: str, snapshot: dict[str, Any],
    start: InitModel, listing: Path, run_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    """The params every tuning run logs: its own section, the loop, the pinned snapshot, the init
    model, where its exposure listing is (`lineage find` reads it) and the whole config."""
    params = {f"{kind}.{k}": v for k, v in asdict(settings).items()}
    params |= {f"train.{k}": v for k, v in asdict(loop).items()}
    params |= snapshot_params(name, snapshot)
    params |= {
        "init.model": start.named, "init.run_id": start.served.run_id, "init.label": start.served.label,
        "exposure.listing": str(listing), "run_dir": str(run_dir), "config.digest": config.digest(),
        "lakehouse": str(config.lakehouse),
    }  # fmt: skip
    return params | flatten(config.values, "config")


def save_tuned(
    kind: str, name: str, description: str, start: InitModel, model: Any, ds_config: dict[str, Any], run_dir: Path
) -> dict[str, Any]:
    """Log the tuned model (with the init model's tokenizer) and register it as the next version of
    `millpond-<kind>-<snapshot>`; returns {model_dir, registered_model}."""
    from transformers import PreTrainedTokenizerFast

    model_dir = log_model(model, PreTrainedTokenizerFast.from_pretrained(start.folder), ds_config, run_dir)
    registered = register_run_model(f"millpond-{kind}-{name}", f"{description} {name}",
                                    {"snapshot": name, "init": start.served.label})  # fmt: skip
    return {"model_dir": str(model_dir), "registered_model": registered}


def tuning_options(kind: str, snapshot_help: str, init_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options `train sft` and `train dpo` share: the snapshot, the init model, the loop's
    overrides (`[<kind>] max_steps`, `seq_len`), resume, JSON."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            (
                click.option("--snapshot", "name", required=True, help=snapshot_help),
                click.option("--init", default=None, metavar="RUN_ID|NAME[@ALIAS|/VERSION]", help=init_help),
                click.option("--max-steps", type=int, default=None, help=f"Optimizer steps ([{kind}] max_steps)."),
                click.option(
                    "--seq-len", type=int, default=None, help=f"Context: prompt and answer ([{kind}] seq_len)."
                ),
                click.option(
                    "--resume",
                    "resume_run",
                    default=None,
                    metavar="RUN_ID",
                    help="Continue this run from its last checkpoint.",
                ),  # fmt: skip
                click.option("--json", "as_json", is_flag=True, help="Print the run's figures as JSON."),
            )
        ):
            command = option(command)
        return command

    return decorate


def section_with(config: Config, section: str, **overrides: Any) -> dict[str, Any]:
    """`[section]` with the options the user gave on the command line (None: not given)."""
    return dict(config.section(section)) | {k: v for k, v in overrides.items() if v is not None}


def tuning_result(figures: dict[str, Any]) -> dict[str, Any]:
    """What a tuning command prints of its run: the figures every objective has."""
    losses = figures["losses"]
    return {
        "run_id": figures["run_id"], "tracking_uri": figures["tracking_uri"], "init": figures["init"],
        "steps": figures["steps"], "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "tokens_per_s": round(figures.get("tokens_per_s", 0.0), 1), "registered_model": figures.get("registered_model"),
        "model_dir": figures.get("model_dir"), "start_step": figures.get("start_step", 0),
    }  # fmt: skip


def echo_tuning(result: dict[str, Any], details: list[str]) -> None:
    """The run's losses, the objective's own lines (`details`), where the model and the run are."""
    if result["first_loss"] is not None:
        click.echo(f"run {result['run_id']} (from {result['init']}): {result['steps']} steps, loss "
                   f"{result['first_loss']:.3f} -> {result['final_loss']:.3f}, {result['tokens_per_s']:,.0f} tokens/s")  # fmt: skip
    for line in details:
        click.echo(f"  {line}")
    click.echo(f"  model: {result['model_dir']} (registered {result['registered_model']})")
    click.echo(f"  MLflow: {result['tracking_uri']}")
