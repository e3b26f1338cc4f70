"""`millpond flywheel turn`: interactions in, a better model out, or the reasons it was not.

One turn: stream the closed landing files into `bronze.interactions` (`--once`), build
`silver.interactions` and `silver.preferences` (scrubbing, pair rules, consent), cut a preference
snapshot when enough new pairs arrived, train DPO from the current champion (after SFT on the
turn's demonstrations when `[flywheel] sft = true`), evaluate challenger
and champion on the snapshot's held-out prompts, and move the `champion` alias of `[flywheel]
model` to the challenger only when it wins by `[flywheel] min_winrate` and its perplexity grows
by at most `[flywheel] max_perplexity_increase`. One MLflow run per turn (experiment
`<prefix>-flywheel`) is the parent of its DPO run and holds the decision and its reasons. A
server started with `--model <model>@champion` serves the promoted version without a restart.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click

from evals.promotion import KEPT_CHAMPION, PROMOTED, TOO_FEW_PAIRS, TurnReport, gate
from evals.settings import FlywheelSettings
from jobs.config import Config, ConfigError, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.tracking import tracking_uri, use_experiment
from lineage.catalog import SILVER_PREFERENCES
from lineage.errors import MillpondError, NotEnoughDataError
from lineage.tables import read_table
from trainers.tracking import model_source


class NoChampionError(MillpondError, LookupError):
    """The flywheel's model has no champion to start from."""


def promote(config: Config, reference: str, settings: FlywheelSettings | None = None) -> dict[str, str]:
    """Register a run's (or a registered version's) model as a version of `[flywheel] model` if it
    is not one already, and point the alias at it: the first champion, or a rollback."""
    import mlflow

    from serving.model import resolve_any

    settings = settings or params_from(FlywheelSettings, config.section("flywheel"))
    uri = tracking_uri(config)
    client = mlflow.MlflowClient(uri)
    served = resolve_any(uri, reference)
    version = served.version if served.name == settings.model else None
    if version is None:
        if not client.search_registered_models(filter_string=f"name = '{settings.model}'"):
            client.create_registered_model(settings.model, description="The model the flywheel serves and improves")
        version = client.create_model_version(settings.model, served.artifact_uri, served.run_id,
                                              tags={"from": served.label}).version  # fmt: skip
    client.set_registered_model_alias(settings.model, settings.alias, str(version))
    return {"name": settings.model, "version": str(version), "alias": settings.alias, "run_id": served.run_id}


def turn(spark: Any, config: Config) -> TurnReport:
    """One turn of the flywheel (see the module's docstring)."""
    import mlflow

    from jobs.dpo import run_dpo
    from jobs.evaluate import evaluate
    from jobs.preferences import build_preferences
    from jobs.snapshot import create_snapshot
    from jobs.stream_interactions import run_stream
    from lineage.snapshots import SnapshotSpec, members_of_snapshots
    from serving.model import ModelNotFoundError, resolve_model
    from trainers.dpo import DpoSettings

    settings = params_from(FlywheelSettings, config.section("flywheel"))
    uri = tracking_uri(config)
    try:
        champion = resolve_model(uri, f"{settings.model}@{settings.alias}")
    except ModelNotFoundError:
        raise NoChampionError(
            f"{settings.model} has no {settings.alias!r} version to start from: "
            f"`millpond flywheel promote RUN_ID|NAME/VERSION` names the first one"
        ) from None
    use_experiment(config, "flywheel")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with mlflow.start_run(run_name=f"turn-{stamp}-from-{champion.label.replace('/', '-v')}") as run:
        report = TurnReport(run.info.run_id, KEPT_CHAMPION, champion=champion.label)
        mlflow.set_tags({"millpond.kind": "flywheel-turn", "champion": champion.label})
        mlflow.log_params({f"flywheel.{k}": v for k, v in asdict(settings).items()})
        progress("streaming the closed landing files (once)")
        report.stream = run_stream(spark, config, once=True).as_json()
        built = build_preferences(spark, config)
        report.preferences = {k: v for k, v in built.as_json().items() if k in ("mode", "interactions", "records",
                                                                                 "pairs", "kept", "refused")}  # fmt: skip
        pairs = read_table(SILVER_PREFERENCES, config.lakehouse, ["doc_id"])
        current = set() if pairs is None else set(pairs["doc_id"].to_pylist())
        report.pairs = len(current)
        report.new_pairs = len(current - members_of_snapshots(config.lakehouse, f"{settings.snapshot_prefix}-"))
        mlflow.log_metrics({"pairs": report.pairs, "new_pairs": report.new_pairs,
                            "events_ingested": report.stream.get("ingested", 0)})  # fmt: skip
        if report.new_pairs < settings.min_new_pairs:
            report.decision = TOO_FEW_PAIRS
            report.reasons.append(f"{report.new_pairs} new pairs, fewer than [flywheel] min_new_pairs "
                                  f"{settings.min_new_pairs}: no training this turn")  # fmt: skip
            return _finish(report)

        report.snapshot = f"{settings.snapshot_prefix}-{stamp}"
        create_snapshot(spark, config, SnapshotSpec(report.snapshot, SILVER_PREFERENCES.name, purpose="preference",
                                                    validation=0.0, test=settings.test))  # fmt: skip
        dpo_settings = params_from(DpoSettings, config.section("dpo"))
        champion_ref = f"{champion.name}/{champion.version}"
        dpo_init = _tuned(spark, config, settings, report, stamp, champion_ref) if settings.sft else champion_ref
        trained = run_dpo(config, report.snapshot, dpo_init, dpo_settings, parent_run_id=run.info.run_id)
        report.dpo = {k: trained.get(k) for k in ("run_id", "steps", "preference_accuracy", "pairs")}
        client = mlflow.MlflowClient(uri)
        trained_run = client.get_run(trained["run_id"]).info
        source, model_id = model_source(trained["run_id"], trained_run.experiment_id, trained_run.artifact_uri)
        challenger = client.create_model_version(settings.model, source, trained["run_id"], model_id=model_id,
                                                 tags={"snapshot": report.snapshot, "turn": run.info.run_id})  # fmt: skip
        report.challenger = f"{settings.model}/{challenger.version}"

        progress(f"evaluating {report.challenger} against the champion {champion_ref}")
        theirs = evaluate(config, trained["run_id"], ("perplexity", "preference", "winrate", "samples"),
                          against=champion_ref, snapshot=report.snapshot, strict=False)  # fmt: skip
        ours = evaluate(config, champion.run_id, ("perplexity",), strict=False)
        figures = {"winrate": theirs.get("winrate"), "winrate_ci_low": theirs.get("winrate_ci_low"),
                   "winrate_ci_high": theirs.get("winrate_ci_high"),
                   "preference_accuracy": theirs.get("preference_accuracy"),
                   "challenger_perplexity": theirs.get("val_perplexity"),
                   "champion_perplexity": ours.get("val_perplexity")}  # fmt: skip
        report.figures = {k: float(v) for k, v in figures.items() if v is not None}
        promote_it, reasons = gate(report.figures, settings, champion_ref)
        mlflow.log_metrics(report.figures)
        report.reasons.extend(reasons)
        if promote_it:
            client.set_registered_model_alias(settings.model, settings.alias, challenger.version)
            report.decision = PROMOTED
        return _finish(report)


def _tuned(spark: Any, config: Config, settings: FlywheelSettings, report: TurnReport, stamp: str,
           champion_ref: str) -> str:  # fmt: skip
    """SFT of the champion on the turn's demonstrations; the model DPO starts from (the SFT run, or
    the champion when no pair's user consents to `sft`)."""
    from jobs.sft import run_sft
    from jobs.snapshot import create_snapshot
    from lineage.snapshots import SnapshotSpec
    from trainers.sft import SftSettings

    name = f"{settings.snapshot_prefix}-sft-{stamp}"
    try:
        create_snapshot(spark, config, SnapshotSpec(name, SILVER_PREFERENCES.name, purpose="sft", validation=0.0,
                                                    test=settings.test))  # fmt: skip
    except NotEnoughDataError as err:
        report.sft = {"skipped": str(err)}
        report.reasons.append(f"no SFT this turn: {err}")
        return champion_ref
    tuned = run_sft(config, name, champion_ref, params_from(SftSettings, config.section("sft")),
                    parent_run_id=report.run_id)  # fmt: skip
    report.sft = {"run_id": tuned["run_id"], "snapshot": name, "steps": tuned["steps"],
                  "heldout_loss": tuned.get("heldout_loss"), "init_heldout_loss": tuned.get("init_heldout_loss"),
                  "demonstrations": tuned["demonstrations"]}  # fmt: skip
    return tuned["run_id"]


def _finish(report: TurnReport) -> TurnReport:
    import mlflow

    mlflow.set_tags({"decision": report.decision, "challenger": report.challenger or "",
                     "snapshot": report.snapshot or "", "reasons": "; ".join(report.reasons)})  # fmt: skip
    mlflow.log_dict(report.as_json(), "turn.json")
    progress(f"turn {report.run_id}: {report.decision} ({'; '.join(report.reasons)})")
    return report


def print_turn(report: TurnReport) -> None:
    click.echo(f"flywheel turn {report.run_id}: {report.decision}")
    click.echo(f"  streamed {report.stream.get('ingested', 0)} events; {report.pairs} pairs, {report.new_pairs} new")
    if report.sft.get("run_id"):
        click.echo(f"  SFT run {report.sft['run_id']} on {report.sft['snapshot']}: held-out answer loss "
                   f"{report.sft.get('init_heldout_loss') or float('nan'):.3f} -> "
                   f"{report.sft.get('heldout_loss') or float('nan'):.3f}")  # fmt: skip
    if report.challenger:
        click.echo(f"  challenger {report.challenger} (DPO run {report.dpo.get('run_id')}) against {report.champion}")
    for name, value in report.figures.items():
        click.echo(f"  {name}: {value:.4f}")
    for reason in report.reasons:
        click.echo(f"  - {reason}")


@click.group("flywheel")
def flywheel_group() -> None:
    """Turn interactions into a better served model: stream, pairs, DPO, evaluation, promotion."""


@flywheel_group.command("turn")
@click.option("--json", "as_json", is_flag=True, help="Print the turn's report as JSON.")
@spark_options
@lakehouse_options
def turn_command(as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None) -> None:
    """One turn (what cron or Airflow call): stream, build pairs, DPO from the champion, evaluate, promote or not."""
    config = effective_config(lakehouse, config_file)
    report = turn(open_spark(config, master, app_name="millpond-flywheel"), config)
    click.echo(json.dumps(report.as_json(), sort_keys=True)) if as_json else print_turn(report)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise ConfigError(f"--every {text!r}: expected a duration such as 30m, 1h or 1d") from None


@flywheel_group.command("run")
@click.option("--every", default="1h", show_default=True, help="Time from the start of one turn to the next.")
@click.option("--turns", type=int, default=None, help="Stop after this many turns (default: run until stopped).")
@spark_options
@lakehouse_options
def run_command(every: str, turns: int | None, master: str | None, lakehouse: str | None,
                config_file: str | None) -> None:  # fmt: skip
    """Turn the flywheel again and again (one Spark session); a failed turn is reported and the next one runs."""
    config = effective_config(lakehouse, config_file)
    period = _seconds(every)
    spark = open_spark(config, master, app_name="millpond-flywheel")
    done = 0
    while turns is None or done < turns:
        started = time.monotonic()
        try:
            print_turn(turn(spark, config))
        except MillpondError as err:
            click.echo(f"flywheel turn failed: {err}", err=True)
        done += 1
        if turns is None or done < turns:
            time.sleep(max(0.0, period - (time.monotonic() - started)))


@flywheel_group.command("promote")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lakehouse_options
def promote_command(model: str, as_json: bool, lakehouse: str | None, config_file: str | None) -> None:
    """Make MODEL (a run id or NAME[@ALIAS|/VERSION]) the champion: the first one, or a rollback."""
    config = effective_config(lakehouse, config_file)
    done = promote(config, model)
    if as_json:
        click.echo(json.dumps(done, sort_keys=True))
    else:
        click.echo(f"{done['name']}@{done['alias']} -> version {done['version']} (run {done['run_id']})")
