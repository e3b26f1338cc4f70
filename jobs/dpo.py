"""`millpond train dpo --snapshot PREF_SNAPSHOT --init MODEL`: DPO on the DeepSpeed loop, in MLflow.

The policy starts from the init model (a run, or a registered `NAME[@ALIAS|/VERSION]`) and the
frozen reference is the same weights; the reference's log-probabilities come from the cache (see
`trainers.dpo`). The run is a child of the init run, so MLflow's compare view shows them
together; the preference snapshot is its dataset input (Delta path and version); the model is
registered as a version of `millpond-dpo-<snapshot>`.
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
from lineage.locations import reference_cache_folder, run_folder
from lineage.snapshots import existing_snapshot
from trainers.dpo import DpoSettings, Pair, snapshot_pairs
from trainers.loop import TrainSettings, runtime_environment

KIND = "dpo"


def preference_pairs(config: Config, name: str) -> tuple[dict[str, Any], list[Pair]]:
    """The snapshot's row and its pairs as the pinned version of silver.preferences holds them."""
    snapshot = existing_snapshot(config.lakehouse, name)
    return snapshot, snapshot_pairs(config.lakehouse, snapshot)


def run_dpo(
    config: Config, name: str, init: str | None, settings: DpoSettings, resume_run: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train the init model on the snapshot's pairs; returns the run's figures. The run's parent is
    the init run, or `parent_run_id` (a flywheel turn) when given."""
    runtime_environment(cache_dir())
    import mlflow
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from trainers.dpo import (
        DirectPreference,
        all_logps,
        folder_digest,
        preference_accuracy,
        reference_key,
        reference_logps,
        tokenize_pairs,
    )
    from trainers.loop import join_process_group, share_from_rank0, train
    from trainers.model import flops_per_token
    from trainers.shards import write_exposure_listing
    from trainers.tokenizer import EOS, PAD

    start = init_model(config, init, resume_run)
    snapshot, pairs = preference_pairs(config, name)
    local = start.folder
    loop = settings.loop(params_from(TrainSettings, config.section("train")))
    tokenizer = Tokenizer.from_file(str(local / "tokenizer.json"))
    tensors = tokenize_pairs(pairs, tokenizer, loop.seq_len, tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD))
    held_out = tensors.indices("validation", "test")

    rank, _ = join_process_group()
    tracking = rank == 0
    key = reference_key(snapshot["content_digest"], folder_digest(local), loop.seq_len)
    cache = reference_cache_folder(config.lakehouse)

    def load_reference() -> Any:
        return AutoModelForCausalLM.from_pretrained(local)

    if tracking:
        progress(f"reference log-probabilities of {len(tensors)} pairs ({cache / key}.npz)")
        reference = reference_logps(load_reference, tensors, cache, key, settings.eval_micro_batch)
    share_from_rank0(None)  # the other ranks wait for rank 0's cache, then read it
    if not tracking:
        reference = reference_logps(load_reference, tensors, cache, key, settings.eval_micro_batch)
    init_accuracy = preference_accuracy(reference.values[held_out], reference.values[held_out], settings.beta)

    run_id = None
    if tracking:
        run_id = start_run(config, start, parent_run_id,
                           f"dpo-{name}-{settings.loss}-beta{settings.beta:g}-from-{run_label(start)}")  # fmt: skip
    run_id = share_from_rank0(run_id)
    run_dir = run_folder(config.lakehouse, run_id)
    figures: dict[str, Any] = {"steps": 0, "losses": [], "reference_cached": reference.cached,
                               "reference_forward_passes": reference.forward_passes}  # fmt: skip
    try:
        if tracking and start.resumed is None:
            listing = run_dir / "pairs.parquet"
            write_exposure_listing(listing, tensors.splits, tensors.pair_ids, tensors.response_tokens)
            log_snapshot_input(config, name, snapshot, tensors.splits, "pairs", KIND, start, parent_run_id)
            params = tuning_params(config, KIND, settings, loop, name, snapshot, start, listing, run_dir)
            params |= {
                "reference.key": reference.key, "reference.cached": reference.cached,
                "pairs.train": int((tensors.splits == "train").sum()), "pairs.held_out": int(len(held_out)),
                "pairs.prompts_cut": tensors.prompts_cut,
            }  # fmt: skip
            mlflow.log_params(params)
        if tracking:
            mlflow.log_metric("reference.forward_passes", reference.forward_passes)

        on_step = step_logger(figures, tracking, loop.max_steps, lambda r: f"margin {r.figures['rewards/margins']:.3f}")

        torch.manual_seed(loop.seed)
        policy = AutoModelForCausalLM.from_pretrained(local)
        objective = DirectPreference(tensors, reference.values, settings, loop.seed)
        model, ds_config, first = train(
            policy, objective, loop, run_dir / "checkpoints", start.resumed is not None, on_step,
            flops_per_token(policy.config, loop.seq_len),
        )  # fmt: skip
        figures["start_step"] = first
        if tracking:
            if len(held_out):
                policy_logps = all_logps(model, tensors, held_out, settings.eval_micro_batch)
                figures |= preference_accuracy(policy_logps, reference.values[held_out], settings.beta)
                figures["init_preference_accuracy"] = init_accuracy["preference_accuracy"]
                mlflow.log_metrics({k: figures[k] for k in ("preference_accuracy", "preference_margin")})
                _log_margins(policy_logps, reference.values[held_out], settings.beta)
            else:
                progress(f"no held-out pairs in {name}: no preference accuracy (cut it with --test)")
            figures |= save_tuned(KIND, name, "DPO on preference snapshot", start, model, ds_config, run_dir)
    finally:
        if tracking:
            mlflow.end_run()
    return figures | {"run_id": run_id, "tracking_uri": mlflow.get_tracking_uri(), "run_dir": str(run_dir),
                      "init": start.served.label,
                      "pairs": {"train": int(len(tensors) - len(held_out)), "held_out": int(len(held_out)),
                                "prompts_cut": tensors.prompts_cut}}  # fmt: skip


def _log_margins(policy: Any, reference: Any, beta: float) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from evals.plots import margins_figure

    figure = margins_figure(policy, reference, beta)
    mlflow.log_figure(figure, "plots/reward_margins.png")
    plt.close(figure)


@click.command("dpo")
@tuning_options(
    "dpo",
    snapshot_help="Preference snapshot (cut from silver.preferences).",
    init_help="The model DPO starts from (and its frozen reference); a resumed run remembers it.",
)
@click.option("--beta", type=float, default=None, help="How far the policy may move from the reference ([dpo] beta).")
@click.option("--loss", type=click.Choice(["sigmoid", "ipo", "hinge"]), default=None, help="[dpo] loss.")
@lakehouse_options
def dpo_command(
    name: str, init: str | None, beta: float | None, loss: str | None, max_steps: int | None, seq_len: int | None,
    resume_run: str | None, as_json: bool, lakehouse: str | None, config_file: str | None,
) -> None:  # fmt: skip
    """Direct preference optimization of a model on a preference snapshot, with DeepSpeed."""
    config = effective_config(lakehouse, config_file)
    values = section_with(config, "dpo", beta=beta, loss=loss, max_steps=max_steps, seq_len=seq_len)
    figures = run_dpo(config, name, init, params_from(DpoSettings, values), resume_run)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    result = tuning_result(figures) | {
        "preference_accuracy": figures.get("preference_accuracy"),
        "init_preference_accuracy": figures.get("init_preference_accuracy"),
        "preference_margin": figures.get("preference_margin"), "pairs": figures["pairs"],
        "reference_cached": figures["reference_cached"], "reference_forward_passes": figures["reference_forward_passes"],
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    details = []
    if result["preference_accuracy"] is not None:
        details.append(f"held-out preference accuracy {result['preference_accuracy']:.3f} (the reference: "
                       f"{result['init_preference_accuracy']:.3f}), margin {result['preference_margin']:.3f}")  # fmt: skip
    cached = "read from the cache" if result["reference_cached"] else "computed and cached"
    details.append(f"pairs: {result['pairs']}; reference log-probabilities {cached}")
    echo_tuning(result, details)
