"""`millpond train sft --snapshot SNAPSHOT --init MODEL`: supervised fine-tuning on the DeepSpeed loop, in MLflow.

The demonstrations come from a snapshot of silver.preferences (each pair's prompt and chosen
answer: what users picked, and their edits) or of silver.documents (conversations ingested as
`sft-jsonl`, rendered with the chat template `millpond serve` uses). The loss counts the answer's
tokens only. The run is a child of the init run; the snapshot is its dataset input; the model is
registered as a version of `millpond-sft-<snapshot>`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from jobs.config import Config, cache_dir, params_from
from jobs.context import effective_config, lakehouse_options, progress
from jobs.tracking import step_logger
from jobs.tuning import (
    echo_tuning,
    init_model,
    log_snapshot_input,
    run_label,
    save_tuned,
    section_with,
    start_run,
    tuning_options,
    tuning_params,
    tuning_result,
)
from lineage.locations import run_folder
from lineage.snapshots import existing_snapshot
from trainers.loop import TrainSettings, runtime_environment
from trainers.sft import Demonstration, SftSettings, snapshot_demonstrations

KIND = "sft"


def demonstrations(config: Config, name: str) -> tuple[dict[str, Any], list[Demonstration]]:
    """The snapshot's row and its demonstrations as the pinned table version holds them."""
    snapshot = existing_snapshot(config.lakehouse, name)
    return snapshot, snapshot_demonstrations(config.lakehouse, snapshot)


def run_sft(
    config: Config, name: str, init: str | None, settings: SftSettings, resume_run: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Tune the init model on the snapshot's demonstrations; returns the run's figures. The run's
    parent is the init run, or `parent_run_id` (a flywheel turn) when given."""
    runtime_environment(cache_dir())
    import mlflow
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from trainers.loop import join_process_group, share_from_rank0, train
    from trainers.model import flops_per_token
    from trainers.sft import SupervisedResponses, held_out_loss, tokenize_demonstrations
    from trainers.shards import write_exposure_listing
    from trainers.tokenizer import EOS, PAD

    start = init_model(config, init, resume_run)
    snapshot, demos = demonstrations(config, name)
    loop = settings.loop(params_from(TrainSettings, config.section("train")))
    tokenizer = Tokenizer.from_file(str(start.folder / "tokenizer.json"))
    tensors = tokenize_demonstrations(demos, tokenizer, loop.seq_len, tokenizer.token_to_id(EOS),
                                      tokenizer.token_to_id(PAD))  # fmt: skip
    held_out = tensors.indices("validation", "test")

    rank, _ = join_process_group()
    tracking = rank == 0
    run_id = None
    if tracking:
        run_id = start_run(config, start, parent_run_id, f"sft-{name}-lr{settings.lr:g}-steps{settings.max_steps}"
                                                         f"-from-{run_label(start)}")  # fmt: skip
    run_id = share_from_rank0(run_id)
    run_dir = run_folder(config.lakehouse, run_id)
    figures: dict[str, Any] = {"steps": 0, "losses": []}
    try:
        torch.manual_seed(loop.seed)
        policy = AutoModelForCausalLM.from_pretrained(start.folder)
        if tracking and len(held_out):
            figures["init_heldout_loss"] = held_out_loss(policy, tensors, held_out, settings.eval_micro_batch)
        if tracking and start.resumed is None:
            listing = run_dir / "demonstrations.parquet"
            write_exposure_listing(listing, tensors.splits, tensors.doc_ids, tensors.response_tokens)
            log_snapshot_input(config, name, snapshot, tensors.splits, "demonstrations", KIND, start, parent_run_id)
            params = tuning_params(config, KIND, settings, loop, name, snapshot, start, listing, run_dir)
            params |= {"demonstrations.train": int((tensors.splits == "train").sum()),
                       "demonstrations.held_out": int(len(held_out)), "demonstrations.prompts_cut": tensors.prompts_cut}  # fmt: skip
            mlflow.log_params(params)
            if "init_heldout_loss" in figures:
                mlflow.log_metric("init_heldout_loss", figures["init_heldout_loss"])

        on_step = step_logger(figures, tracking, loop.max_steps)
        objective = SupervisedResponses(tensors, settings, loop.seed)
        model, ds_config, first = train(
            policy, objective, loop, run_dir / "checkpoints", start.resumed is not None, on_step,
            flops_per_token(policy.config, loop.seq_len),
        )  # fmt: skip
        figures["start_step"] = first
        if tracking:
            if len(held_out):
                figures["heldout_loss"] = held_out_loss(model, tensors, held_out, settings.eval_micro_batch)
                mlflow.log_metric("heldout_loss", figures["heldout_loss"])
            else:
                progress(f"no held-out demonstrations in {name}: no held-out loss (cut it with --test)")
            figures |= save_tuned(KIND, name, "SFT on demonstration snapshot", start, model, ds_config, run_dir)
    finally:
        if tracking:
            mlflow.end_run()
    return figures | {"run_id": run_id, "tracking_uri": mlflow.get_tracking_uri(), "run_dir": str(run_dir),
                      "init": start.served.label,
                      "demonstrations": {"train": int(len(tensors) - len(held_out)), "held_out": int(len(held_out)),
                                         "prompts_cut": tensors.prompts_cut}}  # fmt: skip


@click.command("sft")
@tuning_options(
    "sft",
    snapshot_help="Demonstration snapshot: of silver.documents (sft-jsonl) or of silver.preferences (chosen answers).",
    init_help="The model SFT starts from; a resumed run remembers it.",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate ([sft] lr).")
@lakehouse_options
def sft_command(
    name: str, init: str | None, max_steps: int | None, lr: float | None, seq_len: int | None,
    resume_run: str | None, as_json: bool, lakehouse: str | None, config_file: str | None,
) -> None:  # fmt: skip
    """Supervised fine-tuning of a model on demonstrations (the loss on answer tokens only), with DeepSpeed."""
    config = effective_config(lakehouse, config_file)
    values = section_with(config, "sft", max_steps=max_steps, lr=lr, seq_len=seq_len)
    figures = run_sft(config, name, init, params_from(SftSettings, values), resume_run)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    result = tuning_result(figures) | {
        "heldout_loss": figures.get("heldout_loss"), "init_heldout_loss": figures.get("init_heldout_loss"),
        "demonstrations": figures["demonstrations"],
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    details = []
    if result["heldout_loss"] is not None:
        details.append(
            f"held-out answer loss {result['heldout_loss']:.3f} (the init model: {result['init_heldout_loss']:.3f})"
        )
    details.append(f"demonstrations: {result['demonstrations']}")
    echo_tuning(result, details)
