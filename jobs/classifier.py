"""`millpond classifier train`: a fastText quality classifier from good and bad examples, tracked in MLflow."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import click

from curation.classifier import TrainSettings, train_quality_model
from jobs.context import effective_config, lakehouse_options, progress
from jobs.text_specs import read_texts
from jobs.tracking import tracking_uri, use_experiment


@click.group("classifier")
def classifier_group() -> None:
    """Train the quality classifier that the curate `classifier` stage applies."""


@classifier_group.command("train")
@click.option("--positive", "positives", multiple=True, required=True, help="SPEC of good text (repeatable).")
@click.option("--negative", "negatives", multiple=True, required=True, help="SPEC of bad text (repeatable).")
@click.option("--text-field", "text_fields", multiple=True, help="JSON/Parquet text field (default: text).")
@click.option("--name", default="quality", show_default=True, help="Model name (file and MLflow run name).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Model file (default: in the lakehouse).")
@click.option("--max-examples", default=100_000, show_default=True, help="At most this many examples per class.")
@click.option("--epoch", default=TrainSettings.epoch, show_default=True)
@click.option("--dim", default=TrainSettings.dim, show_default=True)
@click.option("--bucket", default=TrainSettings.bucket, show_default=True)
@click.option("--holdout", default=TrainSettings.holdout, show_default=True, help="Share held out for evaluation.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@lakehouse_options
def train_command(
    positives: tuple[str, ...],
    negatives: tuple[str, ...],
    text_fields: tuple[str, ...],
    name: str,
    output: str | None,
    max_examples: int,
    epoch: int,
    dim: int,
    bucket: int,
    holdout: float,
    as_json: bool,
    lakehouse: str | None,
    config_file: str | None,
) -> None:
    """Train on SPECs (file.jsonl, file.txt, file.parquet or table:NAME?col=value), evaluate on a
    held-out split, log params, figures and the model to MLflow, and write the model file.

    Example: millpond classifier train --positive table:silver.documents?domain=docs --negative spam.txt
    """
    import mlflow

    config = effective_config(lakehouse, config_file)
    fields = text_fields or ("text",)
    good = [t.text for spec in positives for t in read_texts(spec, config.lakehouse, fields)][:max_examples]
    bad = [t.text for spec in negatives for t in read_texts(spec, config.lakehouse, fields)][:max_examples]
    settings = TrainSettings(epoch=epoch, dim=dim, bucket=bucket, holdout=holdout)
    use_experiment(config, "classifier")
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({**asdict(settings), "positive": ",".join(positives), "negative": ",".join(negatives)})
        mlflow.log_params({"positive_examples": len(good), "negative_examples": len(bad)})
        target = (
            Path(output) if output else config.lakehouse / "_models" / f"{name}-{run.info.run_id[:12]}.fasttext.bin"
        )
        progress(f"training on {len(good)} positive and {len(bad)} negative examples")
        figures = train_quality_model(good, bad, target.resolve(), settings)
        mlflow.log_metrics(figures)
        mlflow.log_artifact(str(target), artifact_path="model")
        with tempfile.TemporaryDirectory() as tmp:
            note = Path(tmp) / "how_to_use.txt"
            note.write_text(f'[curate.classifier]\nmodel = "{target.resolve()}"\n', encoding="utf-8")
            mlflow.log_artifact(str(note), artifact_path="model")
    result = {
        "run_id": run.info.run_id,
        "tracking_uri": tracking_uri(config),
        "model": str(target.resolve()),
        **figures,
    }
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"model written to {result['model']}")
    shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if k in ("precision", "recall", "f1", "accuracy"))
    click.echo(f"held-out ({int(figures['test_examples'])} examples): {shown}")
    click.echo(f"MLflow run {run.info.run_id} at {result['tracking_uri']}")
    click.echo(f'use it: set [curate.classifier] model = "{result["model"]}"')
