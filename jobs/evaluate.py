"""`millpond eval RUN_ID [--suite perplexity,preference,winrate,samples] [--against MODEL]`.

Every suite logs into the evaluated run under the same metric names for every run, so MLflow's
compare view lines runs up: `val_loss`/`val_perplexity` (the pretraining snapshot's validation
split: what alignment costs), `preference_accuracy`/`preference_margin` (the implicit reward on
the preference snapshot's held-out pairs), `winrate` with its 95% interval (held-out prompts,
judged against another model's answers by `[eval] judge`), and a `samples` table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from evals.settings import EvalSettings
from jobs.config import Config, cache_dir, params_from
from jobs.context import effective_config, lakehouse_options, progress
from jobs.dpo import PreferenceSnapshotError, preference_pairs
from jobs.tracking import tracking_uri
from jobs.train import TrainingInputError
from lineage.errors import MillpondError
from lineage.locations import reference_cache_folder
from trainers.loop import runtime_environment

SUITES = ("perplexity", "preference", "winrate", "samples")


class EvalInputError(MillpondError, ValueError):
    """A suite was asked for that the run has nothing to evaluate on."""


def _lineage_of(client: Any, run: Any) -> list[Any]:
    """The run, its init run, that run's init run, ...: where its pretraining and snapshots are."""
    chain, seen = [run], {run.info.run_id}
    while (parent := chain[-1].data.params.get("init.run_id")) and parent not in seen:
        seen.add(parent)
        try:
            chain.append(client.get_run(parent))
        except Exception:  # noqa: BLE001 - a deleted ancestor ends the chain
            break
    return chain


def _model(uri: str, reference: str) -> tuple[Any, Any, Path, Any]:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from serving.model import download_model, resolve_any

    served = resolve_any(uri, reference)
    folder = download_model(served, cache_dir())
    return AutoModelForCausalLM.from_pretrained(folder), PreTrainedTokenizerFast.from_pretrained(folder), folder, served


def evaluate(
    config: Config, run_id: str, suites: tuple[str, ...] | None = None, against: str | None = None,
    snapshot: str | None = None, batches: int | None = None, strict: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run the suites on a run's model and log what they measure into the run. A suite asked for
    that has nothing to run on is an error when `strict`, else it is skipped with the reason."""
    runtime_environment(cache_dir())
    import mlflow

    settings = params_from(EvalSettings, config.section("eval"))
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise TrainingInputError(f"no run {run_id!r} at {uri}; `millpond mlflow` lists the runs") from None
    chain = _lineage_of(client, run)
    model, tokenizer, _, served = _model(uri, run_id)
    asked = suites
    suites = suites or tuple(s for s in SUITES if s != "winrate" or against)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise EvalInputError(f"unknown suite(s) {', '.join(unknown)}; suites: {', '.join(SUITES)}")
    metrics: dict[str, float] = {}
    result: dict[str, Any] = {"run_id": run_id, "model": served.label, "skipped": {}}

    def skip(suite: str, why: str) -> None:
        if strict and asked and suite in asked:
            raise EvalInputError(f"--suite {suite}: {why}")
        result["skipped"][suite] = why
        progress(f"{suite}: skipped ({why})")

    if "perplexity" in suites:
        pretrained = next((r for r in chain if "shards.folder" in r.data.params), None)
        if pretrained is None:
            skip("perplexity", "no pretraining run among the run and its init runs")
        else:
            metrics |= _perplexity(model, pretrained.data.params, batches)

    pairs, name = [], snapshot
    if name is None:
        name = next((r.data.params["snapshot"] for r in chain if r.data.tags.get("millpond.kind") == "dpo"), None)
    if name is not None:
        try:
            _, pairs = preference_pairs(config, name)
        except PreferenceSnapshotError:
            pairs = []
    held_out = [p for p in pairs if p.split != "train"]
    prompts = sorted({p.prompt for p in held_out})[: settings.prompts]
    if "preference" in suites:
        if not held_out:
            skip("preference", "no held-out preference pairs (name a preference snapshot with --snapshot)")
        else:
            metrics |= _preference(config, run, model, tokenizer, pairs, name, uri, settings)
    generated: list[str] = []
    if ("winrate" in suites or "samples" in suites) and prompts:
        progress(f"answering {len(prompts)} held-out prompts of {name}")
        from evals.generation import answers

        generated = answers(model, tokenizer, prompts, settings.max_new_tokens, settings.batch,
                            settings.temperature, settings.seed)  # fmt: skip
    if "winrate" in suites:
        if not against:
            skip("winrate", "--against names the model to compare with")
        elif not prompts:
            skip("winrate", "no held-out prompts (name a preference snapshot with --snapshot)")
        else:
            from evals.generation import answers
            from evals.winrate import load_judge, win_rate

            other_model, other_tokenizer, _, other = _model(uri, against)
            theirs = answers(other_model, other_tokenizer, prompts, settings.max_new_tokens, settings.batch,
                             settings.temperature, settings.seed)  # fmt: skip
            rate = win_rate(load_judge(settings.judge), prompts, generated, theirs)
            metrics |= {"winrate": rate.winrate, "winrate_ci_low": rate.ci_low, "winrate_ci_high": rate.ci_high,
                        "winrate_prompts": float(rate.n)}  # fmt: skip
            result["against"] = other.label
            result["winrate_counts"] = {"wins": rate.wins, "ties": rate.ties, "losses": rate.losses}
            result["against_answers"] = theirs
    if "samples" in suites and not prompts:
        skip("samples", "no held-out prompts (name a preference snapshot with --snapshot)")
    # Logged with the client, by run id: no active run is started or changed (a flywheel turn's is).
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    if "against" in result:
        client.set_tag(run_id, "eval.winrate.against", result["against"])
        client.set_tag(run_id, "eval.judge", settings.judge)
    if "samples" in suites and prompts:
        table = {"prompt": prompts, "answer": generated}
        if "against_answers" in result:
            table[f"answer of {result['against']}"] = result["against_answers"]
        mlflow.log_table(table, artifact_file="eval/samples.json", run_id=run_id)
        result["samples"] = [{"prompt": p, "answer": a} for p, a in zip(prompts, generated, strict=True)]
    result.pop("against_answers", None)
    return result | {k: float(v) for k, v in metrics.items()}


def _perplexity(model: Any, params: dict[str, str], batches: int | None) -> dict[str, float]:
    from evals.perplexity import perplexity
    from trainers.data import TokenWindows
    from trainers.shards import load_manifest

    folder = Path(params["shards.folder"])
    manifest = load_manifest(folder)
    if manifest is None:
        raise TrainingInputError(f"the shards ({folder}) are gone; `millpond shards build` rebuilds them")
    data = TokenWindows(folder, manifest, "validation", int(params["train.seq_len"]))
    return perplexity(model, data, int(params["train.micro_batch"]), batches or int(params["train.eval_batches"]))


def _preference(
    config: Config, run: Any, model: Any, tokenizer: Any, pairs: list[Any], name: str, uri: str,
    settings: EvalSettings,
) -> dict[str, float]:  # fmt: skip
    """The implicit reward beta * (model - reference) on the held-out pairs; the reference is the
    run's init model (itself for a run with none: chance, 0.5)."""
    from jobs.snapshot import snapshot_row
    from trainers.dpo import (
        all_logps,
        folder_digest,
        preference_accuracy,
        reference_key,
        reference_logps,
        tokenize_pairs,
    )
    from trainers.tokenizer import EOS, PAD

    params = run.data.params
    seq_len = int(params.get("dpo.seq_len") or params.get("train.seq_len") or 128)
    beta = float(params.get("dpo.beta") or 0.1)
    backend = tokenizer.backend_tokenizer
    tensors = tokenize_pairs(pairs, backend, seq_len, backend.token_to_id(EOS), backend.token_to_id(PAD))
    held_out = tensors.indices("validation", "test")
    reference_model, _, folder, _ = _model(uri, params.get("init.run_id") or run.info.run_id)
    key = reference_key(snapshot_row(config.lakehouse, name)["content_digest"], folder_digest(folder), seq_len)
    reference = reference_logps(reference_model, tensors, reference_cache_folder(config.lakehouse), key,
                                settings.batch)  # fmt: skip
    policy = all_logps(model, tensors, held_out, settings.batch)
    return preference_accuracy(policy, reference.values[held_out], beta)


@click.command("eval")
@click.argument("run_id")
@click.option("--suite", "suites", default=None, metavar="LIST",
              help=f"Comma-separated, of {', '.join(SUITES)} (default: every one the run has data for).")  # fmt: skip
@click.option(
    "--against", default=None, metavar="RUN_ID|NAME[@ALIAS|/VERSION]", help="Model to compare answers with (winrate)."
)
@click.option(
    "--snapshot", default=None, help="Preference snapshot for preference, winrate and samples (default: the run's)."
)
@click.option(
    "--batches", type=int, default=None, help="Validation batches for perplexity (default: the run's eval_batches)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def eval_command(
    run_id: str, suites: str | None, against: str | None, snapshot: str | None, batches: int | None, as_json: bool,
    lakehouse: str | None, config_file: str | None,
) -> None:  # fmt: skip
    """Evaluate a run's model and log the figures into the run (perplexity, preference accuracy, win rate, samples)."""
    config = effective_config(lakehouse, config_file)
    chosen = tuple(s.strip() for s in suites.split(",") if s.strip()) if suites else None
    figures = evaluate(config, run_id, chosen, against, snapshot, batches)
    if as_json:
        click.echo(json.dumps({k: v for k, v in figures.items() if k != "samples"}, sort_keys=True))
        return
    click.echo(f"run {run_id} ({figures['model']}):")
    if "val_perplexity" in figures:
        click.echo(f"  validation loss {figures['val_loss']:.4f}, perplexity {figures['val_perplexity']:.2f}")
    if "preference_accuracy" in figures:
        click.echo(f"  held-out preference accuracy {figures['preference_accuracy']:.3f}, "
                   f"margin {figures['preference_margin']:.3f}")  # fmt: skip
    if "winrate" in figures:
        click.echo(f"  win rate against {figures['against']}: {figures['winrate']:.3f} "
                   f"(95% CI {figures['winrate_ci_low']:.3f}-{figures['winrate_ci_high']:.3f}, "
                   f"{int(figures['winrate_prompts'])} prompts)")  # fmt: skip
    for suite, why in figures["skipped"].items():
        click.echo(f"  {suite}: skipped ({why})")
