"""`millpond eval RUN_ID [--suite perplexity,preference,winrate,samples] [--against MODEL]`.

Every suite logs into the evaluated run under the same metric names for every run, so MLflow's
compare view lines runs up: `val_loss`/`val_perplexity` (the pretraining snapshot's validation
split: what alignment costs), `preference_accuracy`/`preference_margin` (the implicit reward on
the preference snapshot's held-out pairs), `winrate` with its 95% interval (held-out prompts,
judged against another model's answers by `[eval] judge`), and a `samples` table.
"""

from __future__ import annotations

import json
from typing import Any

import click

from evals.evaluate import SUITES, EvalPlaces, evaluate_run
from evals.settings import EvalSettings
from jobs.config import Config, cache_dir, params_from
from jobs.context import effective_config, lakehouse_options, progress
from jobs.tracking import tracking_uri
from trainers.loop import runtime_environment


def evaluate(
    config: Config, run_id: str, suites: tuple[str, ...] | None = None, against: str | None = None,
    snapshot: str | None = None, batches: int | None = None, strict: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """`evals.evaluate.evaluate_run` with the config's places and `[eval]` settings."""
    runtime_environment(cache_dir())
    where = EvalPlaces(config.lakehouse, tracking_uri(config), cache_dir())
    settings = params_from(EvalSettings, config.section("eval"))
    return evaluate_run(where, settings, run_id, suites, against, snapshot, batches, strict, progress)


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
