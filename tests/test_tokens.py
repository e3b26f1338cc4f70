"""From a snapshot to token ids: a byte-level BPE tokenizer logged to MLflow, and cached token shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner
from curation_data import silver_row, write_silver

from conftest import make_config
from jobs.cli import cli
from jobs.snapshot import create_snapshot
from jobs.tokens import cut_shards, train_tokenizer
from lineage.catalog import GOLD_SNAPSHOT_MEMBERS
from lineage.snapshots import SnapshotSpec
from lineage.tables import read_table
from trainers.shards import DOCUMENTS, ShardSettings, shard_tokens
from trainers.tokenizer import EOS, TokenizerSettings, load_tokenizer

CODE = "def area(radius: float) -> float:\n    return 3.14159 * radius * radius  # circle {i}\n"


def test_tokenizer_and_shards_from_a_snapshot(spark, lakehouse: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ok = ["pretraining"]
    rows = [silver_row(i, "books", "allowed", ok) for i in range(40)]
    rows += [silver_row(i, "code", "allowed", ok, domain="code", text=CODE.format(i=i) * 3) for i in range(10)]
    write_silver(spark, lakehouse, rows)
    config = make_config(lakehouse)
    create_snapshot(
        spark, config, SnapshotSpec("tok-v1", mix=(("books", 0.5), ("code", 0.5)), validation=0.15, test=0.15)
    )

    made = train_tokenizer(spark, config, "tok-v1", TokenizerSettings(vocab_size=600, min_frequency=2))
    tokenizer = load_tokenizer(made["path"])
    assert made["vocab_size"] == 600 and tokenizer.token_to_id(EOS) == 0
    assert set(made["audit"]) == {"prose", "code"}
    assert all(0 < a["tokens_per_word"] < 10 for a in made["audit"].values())
    text = "Ünïcödé, emoji 🙂 and bytes: \x00\x7f"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text  # byte level: nothing is unknown

    import mlflow

    mlflow.set_tracking_uri(made["tracking_uri"])
    run = mlflow.get_run(made["run_id"])
    assert run.data.params["snapshot"] == "tok-v1" and run.data.params["vocab_size"] == "600"
    assert "tokens_per_word.code" in run.data.metrics
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(made["run_id"], "tokenizer")]
    assert sorted(logged) == ["tokenizer/audit.json", "tokenizer/tokenizer.json"]

    settings = ShardSettings(tokens_per_shard=2048)
    manifest = cut_shards(spark, config, "tok-v1", made["path"], settings)
    assert manifest["cached"] is False and manifest["tokenizer_digest"] == made["digest"]
    folder = Path(manifest["folder"])
    members = {
        m["doc_id"]: m for m in read_table(GOLD_SNAPSHOT_MEMBERS, lakehouse).to_pylist() if m["snapshot"] == "tok-v1"
    }
    documents = pq.read_table(folder / DOCUMENTS).to_pylist()
    # Every train and validation member is in the shards as often as mixing repeats it; the
    # sealed test split is not cut at all.
    copies: dict[str, int] = {}
    for d in documents:
        copies[d["doc_id"]] = copies.get(d["doc_id"], 0) + d["copies"]
    assert copies == {k: m["repeats"] for k, m in members.items() if m["split"] != "test"}
    assert not {d["doc_id"] for d in documents} & {k for k, m in members.items() if m["split"] == "test"}
    assert len([s for s in manifest["shards"] if s["split"] == "train"]) > 1
    # The shard files hold exactly the tokens the manifest counts, each document ended by EOS.
    texts = {r["doc_id"]: r["text"] for r in rows}
    total = 0
    for shard in manifest["shards"]:
        ids = shard_tokens(folder, shard, manifest["dtype"])
        assert len(ids) == shard["tokens"] and ids[-1] == 0
        total += len(ids)
        first_doc = tokenizer.decode(ids[: int(np.argmax(ids == 0))].tolist())
        assert first_doc in texts.values()
    assert total == sum(d["tokens"] for d in documents) == sum(manifest["tokens"].values())

    again = cut_shards(spark, config, "tok-v1", made["path"], settings)
    assert again["cached"] is True and again["shards"] == manifest["shards"]
    shown = CliRunner().invoke(
        cli, ["--lakehouse", str(lakehouse), "shards", "build", "--snapshot", "tok-v1", "--tokenizer", made["path"],
              "--json"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output.strip().splitlines()[-1])["cached"] is True
    about = CliRunner().invoke(cli, ["--lakehouse", str(lakehouse), "snapshot", "show", "tok-v1", "--json"])
    assert json.loads(about.stdout)["tokens_by_tokenizer"] == {made["digest"][:12]: manifest["tokens"]}
