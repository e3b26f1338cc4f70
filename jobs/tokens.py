"""`millpond tokenizer train` and `millpond shards build`: from a snapshot to token ids.

Both read the snapshot's members joined with its source table at the pinned version, so they
see exactly the snapshot, whatever the table holds now.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from pyspark.sql import SparkSession

from jobs.config import Config, params_from
from jobs.context import effective_config, lakehouse_options, open_spark, progress, spark_options
from jobs.tracking import tracking_uri, use_experiment
from lineage.locations import tokenizer_folder
from lineage.snapshots import (
    existing_snapshot,
    member_frames,
    require_train_documents,
)
from trainers.shards import ShardSettings, cached_snapshot_shards, cut_snapshot_shards
from trainers.tokenizer import (
    TokenizerSettings,
    TrainingSample,
    audit,
    audit_texts,
    load_tokenizer,
    tokenizer_digest,
    train_bpe,
)

AUDIT_DOCUMENTS = 200  # per domain, from the validation split


def snapshot_for(config: Config, name: str, to_do: str) -> dict[str, Any]:
    """The snapshot's row; refused when it does not exist or has nothing to `to_do` with."""
    row = existing_snapshot(config.lakehouse, name)
    require_train_documents(row, to_do)
    return row


def train_tokenizer(spark: SparkSession, config: Config, name: str, settings: TokenizerSettings) -> dict[str, Any]:
    """Train on the snapshot's train split (a hash-chosen sample), audit on validation, log to MLflow."""
    import mlflow

    snapshot = snapshot_for(config, name, "train a tokenizer on")
    members, texts = member_frames(spark, config.lakehouse, snapshot)
    progress(f"training a {settings.vocab_size}-token byte-level BPE on {name}'s train split")
    sample = TrainingSample(members, texts, settings.max_documents)
    tokenizer = train_bpe(iter(sample), settings)
    documents = sample.read
    as_json = tokenizer.to_str()  # type: ignore[attr-defined]
    digest = tokenizer_digest(as_json)
    folder = tokenizer_folder(config.lakehouse, name, settings.vocab_size, digest)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(as_json, encoding="utf-8")

    report = audit(tokenizer, audit_texts(members, texts, AUDIT_DOCUMENTS))

    use_experiment(config, "tokenizers")
    with mlflow.start_run(run_name=f"tokenizer-{name}") as run:
        mlflow.log_params(asdict(settings) | {"documents": documents})
        mlflow.log_params(
            {"snapshot": name, "source_table": snapshot["source_table"], "source_version": snapshot["source_version"],
             "snapshot_digest": snapshot["content_digest"], "tokenizer_digest": digest}
        )  # fmt: skip
        mlflow.set_tags({"snapshot": name, "millpond.kind": "tokenizer"})
        for domain, figures in report.items():
            mlflow.log_metrics({f"tokens_per_word.{domain}": figures["tokens_per_word"],
                                f"tokens_per_char.{domain}": figures["tokens_per_char"]})  # fmt: skip
        mlflow.log_artifact(str(folder / "tokenizer.json"), artifact_path="tokenizer")
        with tempfile.TemporaryDirectory() as tmp:
            audit_file = Path(tmp) / "audit.json"
            audit_file.write_text(json.dumps(report, indent=2, sort_keys=True))
            mlflow.log_artifact(str(audit_file), artifact_path="tokenizer")
    return {
        "snapshot": name,
        "path": str(folder / "tokenizer.json"),
        "digest": digest,
        "vocab_size": tokenizer.get_vocab_size(),  # type: ignore[attr-defined]
        "documents": documents,
        "audit": report,
        "run_id": run.info.run_id,
        "tracking_uri": tracking_uri(config),
    }


def cached_shards(config: Config, name: str, tokenizer_path: str) -> dict[str, Any] | None:
    """The manifest of this snapshot's shards for this tokenizer, when they are cut already."""
    snapshot = snapshot_for(config, name, "cut into shards")
    return _cached(config, name, snapshot, load_tokenizer(tokenizer_path))


def _cached(config: Config, name: str, snapshot: dict[str, Any], tokenizer: Any) -> dict[str, Any] | None:
    cached = cached_snapshot_shards(config.lakehouse, name, snapshot, tokenizer.to_str())
    if cached is not None:
        progress(f"shards of {name} for tokenizer {cached['tokenizer_digest'][:12]} are cached in {cached['folder']}")
    return cached


def cut_shards(
    spark: SparkSession, config: Config, name: str, tokenizer_path: str, settings: ShardSettings
) -> dict[str, Any]:
    """The snapshot's shards for this tokenizer: reused when already cut, else cut now."""
    snapshot = snapshot_for(config, name, "cut into shards")
    tokenizer = load_tokenizer(tokenizer_path)
    cached = _cached(config, name, snapshot, tokenizer)
    if cached is not None:
        return cached
    members, texts = member_frames(spark, config.lakehouse, snapshot)
    progress(f"cutting {name} into token shards")
    return cut_snapshot_shards(members, texts, config.lakehouse, name, snapshot, tokenizer, tokenizer_path, settings)


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Byte-level BPE tokenizers trained on snapshots."""


@tokenizer_group.command("train")
@click.option("--snapshot", "name", required=True, help="Snapshot to train on (its train split).")
@click.option("--vocab-size", type=int, default=None, help="Vocabulary size (default: [tokenizer] vocab_size).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@spark_options
@lakehouse_options
def tokenizer_train_command(
    name: str, vocab_size: int | None, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Train a tokenizer on a snapshot, audit it per domain, and log both to MLflow."""
    config = effective_config(lakehouse, config_file)
    values = dict(config.section("tokenizer"))
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    settings = params_from(TokenizerSettings, values)
    spark = open_spark(config, master, app_name=f"millpond-tokenizer-{name}")
    result = train_tokenizer(spark, config, name, settings)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"tokenizer {result['digest'][:12]} ({result['vocab_size']} tokens, {result['documents']} documents)")
    click.echo(f"  written to {result['path']}")
    for domain, figures in result["audit"].items():
        click.echo(
            f"  {domain:<10} {figures['tokens_per_word']:.2f} tokens/word  {figures['tokens_per_char']:.3f} tokens/char"
        )
    click.echo(f"  MLflow run {result['run_id']} at {result['tracking_uri']}")


@click.group("shards")
def shards_group() -> None:
    """Token shards of a snapshot, cached by (snapshot, tokenizer)."""


@shards_group.command("build")
@click.option("--snapshot", "name", required=True, help="Snapshot to cut.")
@click.option("--tokenizer", "tokenizer_path", required=True, help="tokenizer.json (or its folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@spark_options
@lakehouse_options
def shards_build_command(
    name: str, tokenizer_path: str, as_json: bool, master: str | None, lakehouse: str | None, config_file: str | None
) -> None:
    """Cut a snapshot's train and validation splits into token shards (reused when cached)."""
    config = effective_config(lakehouse, config_file)
    settings = params_from(ShardSettings, config.section("shards"))
    manifest = cached_shards(config, name, tokenizer_path)
    if manifest is None:
        spark = open_spark(config, master, app_name=f"millpond-shards-{name}")
        manifest = cut_shards(spark, config, name, tokenizer_path, settings)
    if as_json:
        click.echo(json.dumps(manifest, sort_keys=True))
        return
    state = "cached" if manifest["cached"] else "cut"
    click.echo(f"shards of {name} ({state}): {manifest['folder']}")
    for split, tokens in manifest["tokens"].items():
        files = sum(1 for s in manifest["shards"] if s["split"] == split)
        click.echo(f"  {split:<10} {tokens:>12} tokens in {files} shard(s)")
