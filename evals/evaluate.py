"""Evaluating a run: the suites of `evals/suites.py` on the run's model, and what they measure
logged into the run under the same metric names for every run, so MLflow's compare view lines
runs up: `val_loss`/`val_perplexity` (the pretraining snapshot's validation split: what alignment
costs), `preference_accuracy`/`preference_margin` (the implicit reward on the preference
snapshot's held-out pairs), `winrate` with its 95% interval (held-out prompts, judged against
another model's answers by `[eval] judge`), and a `samples` table. `jobs/evaluate.py` is the
command."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.generation import answers
from evals.settings import EvalSettings
from evals.suites import (
    EvalInputError,
    held_out_preference,
    load_model,
    model_folder,
    run_chain,
    validation_perplexity,
)
from evals.winrate import load_judge, win_rate
from lineage.exposure import EVAL_SAMPLES, EVAL_SNAPSHOT_TAG
from lineage.locations import reference_cache_folder
from lineage.snapshots import existing_snapshot, snapshot_row
from trainers.dpo import PreferenceSnapshotError, snapshot_pairs

SUITES = ("perplexity", "preference", "winrate", "samples")


@dataclass(frozen=True)
class EvalPlaces:
    """Where an evaluation reads and writes: the lakehouse (snapshots, the reference cache), the
    MLflow tracking URI (runs and models) and the local cache models are downloaded into."""

    lakehouse: Path
    tracking_uri: str
    cache: Path


def _quiet(message: str) -> None:
    """No progress lines."""


def evaluate_run(
    where: EvalPlaces, settings: EvalSettings, run_id: str, suites: tuple[str, ...] | None = None,
    against: str | None = None, snapshot: str | None = None, batches: int | None = None, strict: bool = True,
    progress: Callable[[str], None] = _quiet,
) -> dict[str, Any]:  # fmt: skip
    """Run the suites on a run's model and log what they measure into the run. A suite asked for
    that has nothing to run on is an error when `strict`, else it is skipped with the reason."""
    import mlflow

    uri = where.tracking_uri
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise EvalInputError(f"no run {run_id!r} at {uri}; `millpond mlflow` lists the runs") from None
    chain = run_chain(client, run)
    model, tokenizer, _, served = load_model(uri, run_id, where.cache)
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
            metrics |= validation_perplexity(model, pretrained.data.params, batches)

    pairs, name = [], snapshot
    if name is None:
        name = next((r.data.params["snapshot"] for r in chain if r.data.tags.get("millpond.kind") == "dpo"), None)
    if name is not None:
        try:
            pairs = snapshot_pairs(where.lakehouse, existing_snapshot(where.lakehouse, name))
        except PreferenceSnapshotError:
            pairs = []
    held_out = [p for p in pairs if p.split != "train"]
    prompts = sorted({p.prompt for p in held_out})[: settings.prompts]
    if "preference" in suites:
        if not held_out:
            skip("preference", "no held-out preference pairs (name a preference snapshot with --snapshot)")
        else:
            params = run.data.params
            folder = model_folder(uri, params.get("init.run_id") or run_id, where.cache)
            digest = snapshot_row(where.lakehouse, name)["content_digest"]
            metrics |= held_out_preference(model, tokenizer, pairs, params, folder, digest,
                                           reference_cache_folder(where.lakehouse), settings.batch)  # fmt: skip

    def answers_at(answering: Any, answering_tokenizer: Any, seed: int) -> list[str]:
        return answers(answering, answering_tokenizer, prompts, settings.max_new_tokens, settings.batch,
                       settings.temperature, seed)  # fmt: skip

    generated: list[str] = []
    if ("winrate" in suites or "samples" in suites) and prompts:
        progress(f"answering {len(prompts)} held-out prompts of {name}")
        generated = answers_at(model, tokenizer, settings.seed)
    if "winrate" in suites:
        if not against:
            skip("winrate", "--against names the model to compare with")
        elif not prompts:
            skip("winrate", "no held-out prompts (name a preference snapshot with --snapshot)")
        else:
            other_model, other_tokenizer, _, other = load_model(uri, against, where.cache)
            # each round's batches draw from seeds of their own (`answers` seeds a batch at seed + its start)
            seeds = [settings.seed + r * len(prompts) for r in range(settings.answers_per_prompt)]
            mine = [generated] + [answers_at(model, tokenizer, seed) for seed in seeds[1:]]
            theirs = [answers_at(other_model, other_tokenizer, seed) for seed in seeds]
            rate = win_rate(load_judge(settings.judge), prompts, list(zip(*mine, strict=True)),
                            list(zip(*theirs, strict=True)))  # fmt: skip
            metrics |= {"winrate": rate.winrate, "winrate_ci_low": rate.ci_low, "winrate_ci_high": rate.ci_high,
                        "winrate_prompts": float(rate.n), "winrate_comparisons": float(rate.comparisons)}  # fmt: skip
            result["against"] = other.label
            result["winrate_counts"] = {"wins": rate.wins, "ties": rate.ties, "losses": rate.losses}
            result["against_answers"] = theirs[0]
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
        mlflow.log_table(table, artifact_file=EVAL_SAMPLES, run_id=run_id)
        client.set_tag(run_id, EVAL_SNAPSHOT_TAG, name)  # an erasure of a person in it drops the samples
        result["samples"] = [{"prompt": p, "answer": a} for p, a in zip(prompts, generated, strict=True)]
    result.pop("against_answers", None)
    return result | {k: float(v) for k, v in metrics.items()}
