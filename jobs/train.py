"""`millpond train pretrain --snapshot NAME`: DeepSpeed pretraining on a snapshot, tracked in MLflow.

The run reads the snapshot's token shards (cut now if they are not cached, with the
snapshot's tokenizer, trained now if there is none), never "the latest table". MLflow gets the
whole config as params, the snapshot as a dataset input (Delta path and version), per-step
loss, learning rate, grad norm, tokens/s and MFU, the DeepSpeed config, tokenizer, shard
manifest and the model (Hugging Face format, registered), and validation perplexity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from jobs.config import Config, cache_dir, params_from, project_root
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.tokens import snapshot_for
from jobs.tracking import step_logger, tracking_uri, use_experiment
from lineage.errors import MillpondError, NotEnoughDataError
from lineage.locations import latest_tokenizer, run_folder
from lineage.snapshots import existing_snapshot
from trainers.loop import TrainSettings, runtime_environment
from trainers.shards import ShardSettings
from trainers.tokenizer import EOS, PAD, TokenizerSettings
from trainers.tracking import flatten, log_snapshot_dataset, register_run_model, snapshot_params


class TrainingInputError(MillpondError, FileNotFoundError):
    """What a training or evaluation run reads is not there (shards, a checkpoint, a run)."""


def prepare_tokens(config: Config, name: str, tokenizer: str | None, master: str | None) -> dict[str, Any]:
    """The snapshot's shards (and tokenizer): cached ones, else made now on Spark."""
    from jobs.tokens import cached_shards, cut_shards, train_tokenizer

    snapshot_for(config, name, "train on")  # refused before any work when it is missing or empty
    path = Path(tokenizer) if tokenizer else latest_tokenizer(config.lakehouse, name)
    manifest = cached_shards(config, name, str(path)) if path is not None else None
    if manifest is not None:
        return manifest
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainingInputError(
            f"no token shards of {name} yet: cut them once before a multi-process run "
            f"(`millpond shards build --snapshot {name} --tokenizer ...`, or a single-process run)"
        )
    spark = open_spark(config, master, app_name=f"millpond-tokens-{name}")
    if path is None:
        made = train_tokenizer(spark, config, name, params_from(TokenizerSettings, config.section("tokenizer")))
        path = Path(made["path"])
    return cut_shards(spark, config, name, str(path), params_from(ShardSettings, config.section("shards")))


def git_commit() -> str | None:
    root = project_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def pretrain(
    config: Config, name: str, settings: TrainSettings, manifest: dict[str, Any], resume_run: str | None = None
) -> dict[str, Any]:
    """Train on the snapshot's shards; returns the run's figures."""
    runtime_environment(cache_dir())
    import mlflow

    from evals.perplexity import perplexity
    from trainers.data import TokenWindows
    from trainers.loop import NextToken, join_process_group, share_from_rank0, train
    from trainers.model import flops_per_token, llama_config, parameter_count
    from trainers.tokenizer import load_tokenizer

    snapshot = existing_snapshot(config.lakehouse, name)
    folder = Path(manifest["folder"])
    tokenizer = load_tokenizer(manifest["tokenizer"])
    model_config = llama_config(
        settings.preset, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD)
    )
    train_data = TokenWindows(folder, manifest, "train", settings.seq_len)
    validation = None
    if any(s["split"] == "validation" for s in manifest["shards"]):
        try:
            validation = TokenWindows(folder, manifest, "validation", settings.seq_len)
        except NotEnoughDataError as err:
            progress(f"no validation perplexity: {err}")
    # Under the deepspeed launcher every rank trains; rank 0 alone talks to MLflow and saves.
    rank, _ = join_process_group()
    tracking = rank == 0
    run_id = None
    if tracking:
        use_experiment(config, "pretrain")
        try:
            run = (
                mlflow.start_run(run_id=resume_run)
                if resume_run
                else mlflow.start_run(
                    run_name=f"pretrain-{name}-{settings.preset}-{settings.max_steps}steps-"
                    f"lr{settings.lr:g}-{time.strftime('%m%d-%H%M%S')}"
                )  # fmt: skip
            )
        except mlflow.exceptions.MlflowException as err:
            raise TrainingInputError(f"--resume {resume_run}: {err.message}") from None
        run_id = run.info.run_id
    run_id = share_from_rank0(run_id)
    run_dir = run_folder(config.lakehouse, run_id)
    figures: dict[str, Any] = {"steps": 0, "losses": []}
    try:
        if tracking and not resume_run:
            params = {f"train.{k}": v for k, v in asdict(settings).items()}
            params |= {f"model.{k}": getattr(model_config, k) for k in (
                "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "max_position_embeddings")}  # fmt: skip
            params |= snapshot_params(name, snapshot)
            params |= {
                "tokenizer.digest": manifest["tokenizer_digest"], "shards.folder": str(folder),
                "shards.train_tokens": manifest["tokens"]["train"], "run_dir": str(run_dir),
                "config.digest": config.digest(), "lakehouse": str(config.lakehouse),
            }  # fmt: skip
            import pandas as pd

            summary = pd.DataFrame([{"split": s, "tokens": t} for s, t in manifest["tokens"].items()])
            log_snapshot_dataset(config.lakehouse, name, snapshot, summary)
            mlflow.set_tags({"snapshot": name, "git_commit": git_commit() or "unknown", "millpond.kind": "pretrain"})
            params |= flatten(config.values, "config")
            params |= {"deepspeed.zero_stage": settings.zero_stage, "deepspeed.grad_clip": settings.grad_clip}
            mlflow.log_params(params)

        on_step = step_logger(figures, tracking, settings.max_steps)

        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(settings.seed)
        model, ds_config, start = train(
            LlamaForCausalLM(model_config),
            NextToken(train_data, settings),
            settings,
            run_dir / "checkpoints",
            bool(resume_run),
            on_step,
            flops_per_token(model_config, settings.seq_len),
        )
        figures["parameters"] = parameter_count(model)
        if tracking and validation is not None:
            figures |= perplexity(model, validation, settings.micro_batch, settings.eval_batches)
        if tracking:
            _log_outputs(model, manifest, ds_config, run_dir, name, figures)
        figures["start_step"] = start
    finally:
        if tracking:
            mlflow.end_run()
    return figures | {"run_id": run_id, "tracking_uri": tracking_uri(config), "run_dir": str(run_dir)}


def log_model(model: Any, tokenizer: Any, ds_config: dict[str, Any], run_dir: Path) -> Path:
    """Save the model and its tokenizer (Hugging Face format) in the run folder and log them as
    the active run's `model` artifacts, with the DeepSpeed config; returns the folder."""
    import mlflow

    model_dir = run_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2, sort_keys=True))
        mlflow.log_artifact(str(Path(tmp) / "deepspeed_config.json"))
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    # The same weights as an MLflow model (python_function flavor): the runs table's Model column,
    # the registered versions' link, and `mlflow models serve`.
    from serving.pyfunc import ARTIFACT, ChatModel, requirements, signature

    mlflow.pyfunc.log_model(
        name="chat-model", python_model=ChatModel(), artifacts={ARTIFACT: str(model_dir)}, signature=signature(),
        pip_requirements=requirements(),
    )  # fmt: skip
    return model_dir


def _log_outputs(
    model: Any, manifest: dict[str, Any], ds_config: dict, run_dir: Path, name: str, figures: dict
) -> None:
    import mlflow
    from transformers import PreTrainedTokenizerFast

    mlflow.log_param("model.parameters", figures["parameters"])
    if "val_loss" in figures:
        mlflow.log_metrics({"val_loss": figures["val_loss"], "val_perplexity": figures["val_perplexity"]})
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=manifest["tokenizer"], eos_token=EOS, pad_token=PAD)
    log_model(model, hf_tokenizer, ds_config, run_dir)
    mlflow.log_artifact(manifest["tokenizer"], artifact_path="tokenizer")
    mlflow.log_artifact(str(Path(manifest["folder"]) / "manifest.json"), artifact_path="shards")
    figures["registered_model"] = register_run_model(
        f"millpond-pretrain-{name}", f"Pretrained on snapshot {name}", {"snapshot": name}
    )


@click.group("train")
def train_group() -> None:
    """Training runs on snapshots, tracked in MLflow."""


@train_group.command("pretrain")
@click.option("--snapshot", "name", required=True, help="Snapshot to train on (its train split).")
@click.option("--preset", default=None, help="Model preset: tiny (CPU tests) or small (~125M, a GPU).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (default: [train] max_steps).")
@click.option("--seq-len", type=int, default=None, help="Context length (default: [train] seq_len).")
@click.option(
    "--tokenizer", default=None, help="tokenizer.json to use (default: the snapshot's latest, else trained now)."
)
@click.option(
    "--resume", "resume_run", default=None, metavar="RUN_ID", help="Continue this run from its last checkpoint."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print {run_id, tracking_uri, steps, first_loss, final_loss, tokens_per_s}."
)
@spark_options
@lakehouse_options
def pretrain_command(
    name: str,
    preset: str | None,
    max_steps: int | None,
    seq_len: int | None,
    tokenizer: str | None,
    resume_run: str | None,
    as_json: bool,
    master: str | None,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Pretrain a Llama-style model on a snapshot with DeepSpeed (gloo on CPU, NCCL on GPU)."""  # fmt: skip
    config = effective_config(lakehouse, config_file)
    values = dict(config.section("train"))
    for key, value in (("preset", preset), ("max_steps", max_steps), ("seq_len", seq_len)):
        if value is not None:
            values[key] = value
    settings = params_from(TrainSettings, values)
    manifest = prepare_tokens(config, name, tokenizer, master)
    figures = pretrain(config, name, settings, manifest, resume_run)
    result = {
        "run_id": figures["run_id"],
        "tracking_uri": figures["tracking_uri"],
        "steps": figures["steps"],
        "first_loss": figures["losses"][0] if figures["losses"] else None,
        "final_loss": figures["losses"][-1] if figures["losses"] else None,
        "tokens_per_s": round(figures.get("tokens_per_s", 0.0), 1),
        "val_perplexity": figures.get("val_perplexity"),
        "registered_model": figures.get("registered_model"),
        "model_dir": str(Path(figures["run_dir"]) / "model"),
    }
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"run {result['run_id']}: {result['steps']} steps, loss {result['first_loss']:.3f} -> "
               f"{result['final_loss']:.3f}, {result['tokens_per_s']:,.0f} tokens/s")  # fmt: skip
    if result["val_perplexity"] is not None:
        click.echo(f"  validation perplexity {result['val_perplexity']:.2f}")
    click.echo(f"  model: {result['model_dir']} (registered {result['registered_model']})")
    click.echo(f"  MLflow: {result['tracking_uri']}")


if __name__ == "__main__":  # deepspeed --num_gpus 2 jobs/train.py pretrain --snapshot NAME ...
    from jobs.cli import main

    # The launcher passes --local_rank=N first; LOCAL_RANK in the environment says the same.
    main(["train", *[a for a in sys.argv[1:] if not a.startswith("--local_rank")]])
