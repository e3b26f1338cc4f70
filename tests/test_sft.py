"""`millpond train sft`: conversations ingested as `sft-jsonl` (checked, quarantined with a reason,
curated like any document), cut into a `--purpose sft` snapshot, tune a model with the loss on
the answer only, lower its held-out answer loss, log to MLflow beside the init run, and count as
exposure in a data subject request."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import make_config, write_jsonl, write_manifest
from curation.preferences import pair_id, prompt_key
from ingestion.readers import conversation_text
from jobs.cli import cli
from jobs.curate import run_curate
from jobs.ingest import run_ingest
from jobs.sft import demonstrations
from jobs.snapshot import create_snapshot
from lineage.catalog import BRONZE_DOCUMENTS, QUARANTINE_RECORDS, SILVER_DOCUMENTS, SILVER_PREFERENCES
from lineage.chat import ChatFormatError, render_conversation, render_prompt, split_answer
from lineage.snapshots import SnapshotSpec
from lineage.tables import ensure_table, read_table
from trainers.sft import Demonstration, SftSettings, SupervisedResponses, response_loss, tokenize_demonstrations

TOPICS = ["mill", "weir", "river", "wheel", "grain", "flour", "sluice", "race", "stone", "loft", "yard", "abbey"]
SYSTEM = {"role": "system", "content": "You are the miller's helpful assistant on the open day."}


def test_the_prompt_is_masked_and_the_template_round_trips() -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "a", "b", "c", "d"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    demos = [Demonstration("d1", "a b c", "d", "train"), Demonstration("d2", "a", "b", "test")]
    tensors = tokenize_demonstrations(demos, tokenizer, seq_len=4, eos_id=1, pad_id=0)
    # inputs a b c d, targets b c d <eos>: only d and <eos> (the answer) count
    assert tensors.input_ids[0].tolist() == [2, 3, 4, 5] and tensors.targets[0].tolist() == [3, 4, 5, 1]
    assert tensors.masks[0].tolist() == [False, False, True, True] and tensors.response_tokens.tolist() == [2, 2]
    assert tensors.masks[1].tolist() == [True, True, False, False] and tensors.prompts_cut == 0
    assert tensors.indices("train").tolist() == [0] and tensors.indices("validation", "test").tolist() == [1]
    # uniform logits: every counted token costs log(vocab); masked tokens cost nothing
    logits = torch.zeros(2, 4, 6)
    assert float(response_loss(logits, torch.from_numpy(tensors.targets), torch.from_numpy(tensors.masks))) == (
        pytest.approx(math.log(6))
    )
    objective = SupervisedResponses(tensors, SftSettings(micro_batch=3), seed=5)
    assert objective.rows(4, 0).tolist() == objective.rows(4, 0).tolist() == [0, 0, 0]  # train rows only

    # The template: a demonstration's text splits back into the prompt the server renders and the answer.
    messages = [SYSTEM, {"role": "user", "content": "Is the wheel turning?"}, {"role": "assistant", "content": "Yes."}]
    text = render_conversation(messages)
    assert split_answer(text) == (render_prompt(messages[:-1]), "Yes.")
    assert split_answer(text.rstrip("\n")) == (render_prompt(messages[:-1]), "Yes.")  # normalize may trim it
    assert split_answer("A plain document about <|assistant|>\n tags.") is None
    with pytest.raises(ChatFormatError, match="ends with the assistant"):
        render_conversation(messages[:-1])
    assert conversation_text("hi")[1] == "expected a list of messages, got str"
    assert conversation_text([{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}])[1] == (
        "unknown role 'robot'; roles: system, user, assistant"
    )
    assert conversation_text([{"role": "assistant", "content": "Hello."}])[1] == (
        "a demonstration has a user turn before the answer"
    )


def _conversations() -> list[dict[str, Any]]:
    """What the users want to learn: a helpful answer that starts with "Yes, the <topic> ..."."""
    records = []
    for i, topic in enumerate(TOPICS * 4):
        messages = [{"role": "user", "content": f"Can you tell me about the {topic} number {i}?"},
                    {"role": "assistant", "content": f"Yes, the {topic} is old and well kept."}]  # fmt: skip
        records.append({"id": f"c{i}", "messages": [SYSTEM, *messages] if i % 2 else messages, "user": f"u{i % 3}"})
    records[5]["messages"][-1]["content"] = "Yes, write to ann.lee@example.com about the open day."
    records += [
        {"id": "bad-1", "messages": "Can you tell me about the mill?", "user": "u0"},
        {"id": "bad-2", "messages": [{"role": "user", "content": "No answer follows."}], "user": "u0"},
    ]
    return records


def test_sft_jsonl_to_a_tuned_model_in_mlflow_and_in_lineage(spark, lakehouse: Path, tmp_path: Path) -> None:
    from serving.smoke import register_untrained_model

    data = write_jsonl(tmp_path / "raw" / "chats.jsonl", _conversations())
    manifest = write_manifest(tmp_path / "manifest.toml", [
        {"name": "chats", "path": str(data), "format": "sft-jsonl", "id_field": "id", "license": "CC-BY-4.0",
         "consent": ["sft"], "subject_fields": ["user"]},
    ])  # fmt: skip
    config = make_config(lakehouse)
    config.values["mlflow"]["log_data_jobs"] = True  # the data jobs' MLflow runs are checked below
    report = run_ingest(spark, config, manifest).as_json()
    assert report["ingested"] == 48 and report["quarantined"] == 2
    quarantined = read_table(QUARANTINE_RECORDS, lakehouse).to_pylist()
    assert {(r["reason"], r["locator"].rsplit("/", 1)[-1]) for r in quarantined} == {
        ("bad_messages", "chats.jsonl:49"), ("bad_messages", "chats.jsonl:50")}  # fmt: skip
    bronze = read_table(BRONZE_DOCUMENTS, lakehouse).to_pylist()
    assert {r["domain"] for r in bronze} == {"sft"} and all(split_answer(r["text"]) for r in bronze)

    # Curated like any document: the shared system prompt is structure, not boilerplate; PII is scrubbed.
    run_curate(spark, config, ["normalize", "quality", "license", "exact_dedup", "pii"])
    silver = {r["doc_id"]: r for r in read_table(SILVER_DOCUMENTS, lakehouse).to_pylist()}
    assert len(silver) == 48 and sum(SYSTEM["content"] in r["text"] for r in silver.values()) == 24
    assert sum("write to <EMAIL_ADDRESS> about" in r["text"] for r in silver.values()) == 1

    # Consent to sft only: out of a pretraining snapshot, into a demonstration snapshot.
    with pytest.raises(Exception, match="0 of 48 documents are allowed for pretraining"):
        create_snapshot(spark, config, SnapshotSpec("pretrain-v1", "silver.documents"))
    spec = SnapshotSpec("demos-v1", "silver.documents", purpose="sft", validation=0.0, test=0.25)
    assert create_snapshot(spark, config, spec)["rows"] == 48
    snapshot, demos = demonstrations(config, "demos-v1")
    assert {d.response for d in demos if "number 3?" in d.prompt} == {"Yes, the wheel is old and well kept."}

    texts = [r["text"] for r in silver.values()] * 3
    base_run = register_untrained_model(lakehouse, "millpond-base", texts, alias="champion")
    base = ["--lakehouse", str(lakehouse)]
    runner = CliRunner()
    result = runner.invoke(cli, [*base, "train", "sft", "--snapshot", "demos-v1", "--init", "millpond-base@champion",
                                 "--max-steps", "30", "--lr", "0.003", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        figures["heldout_loss"] < 0.6 * figures["init_heldout_loss"] and figures["final_loss"] < figures["first_loss"]
    )
    assert figures["demonstrations"]["held_out"] > 0 and figures["demonstrations"]["prompts_cut"] == 0

    import mlflow

    from jobs.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri(config))
    run = client.get_run(figures["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == base_run and run.data.tags["millpond.kind"] == "sft"
    assert run.info.experiment_id == client.get_run(base_run).info.experiment_id
    assert run.info.run_name.startswith("sft-demos-v1-lr0.003-steps30-from-millpond-base-v1")
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "heldout_loss", "init_heldout_loss"} <= set(run.data.metrics)
    assert run.data.params["init.model"] == "millpond-base@champion" and run.data.params["sft.max_steps"] == "30"
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == f"demos-v1@v{snapshot['source_version']}"
    assert json.loads(dataset.source)["path"].endswith("silver/documents")
    registered = figures["registered_model"]
    assert registered["name"] == "millpond-sft-demos-v1"
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.run_id == figures["run_id"]
    # Logged as an MLflow model too (the runs table's Model column), linked to its registered version,
    # and answering in the chat format it was tuned on.
    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                         filter_string=f"source_run_id = '{figures['run_id']}'")  # fmt: skip
    assert len(logged) == 1 and version.source == f"models:/{logged[0].model_id}"
    from serving.model import download_model, resolve_model

    served = resolve_model(tracking_uri(config), f"{registered['name']}/{registered['version']}")
    # What serve and --init load, into a cold cache, in a process whose default store is another
    # (`millpond serve` with the lakehouse's store): the `models:/` source is found where it was logged.
    default_store = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'another-store.db'}")
    try:
        assert (download_model(served, tmp_path / "cache") / "model.safetensors").is_file()
    finally:
        mlflow.set_tracking_uri(default_store)
    chat = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
    answers = chat.predict(pd.DataFrame({"prompt": ["Can you tell me about the weir number 1?"]}), {"max_tokens": 8})
    assert answers[0].startswith("Yes, the"), answers

    # Each data job logged a run beside the training runs: counts as metrics, table versions as
    # tags, reports and plots as artifacts.
    data = client.get_experiment_by_name("millpond-data")
    jobs = {r.data.tags["millpond.job"]: r for r in client.search_runs([data.experiment_id])}
    assert set(jobs) == {"ingest", "curate", "snapshot"}
    assert (
        jobs["ingest"].data.metrics["quarantined"] == 2 and jobs["ingest"].data.tags["output.bronze.documents"] == "1"
    )
    assert jobs["curate"].data.metrics["out"] == 48 and jobs["curate"].data.tags["input.bronze.documents"] == "1"
    read = [(d.dataset.name, d.dataset.source_type, json.loads(d.dataset.source)["delta_table_version"])
            for d in client.get_run(jobs["curate"].info.run_id).inputs.dataset_inputs]  # fmt: skip
    assert read == [("bronze.documents@v1", "delta_table", 1)]  # the table it read, as a dataset input
    assert jobs["snapshot"].info.run_name.startswith("snapshot-demos-v1-")
    assert {"plots/funnel.png", "plots/pii_by_type.png"} <= {
        a.path for a in client.list_artifacts(jobs["curate"].info.run_id, "plots")}  # fmt: skip
    assert "plots/mixture.png" in {a.path for a in client.list_artifacts(jobs["snapshot"].info.run_id, "plots")}

    # A data subject request lists the SFT run with the tokens of the person's demonstrations.
    found = runner.invoke(cli, [*base, "lineage", "find", "--subject", "u1", "--json"])
    assert found.exit_code == 0, found.output
    runs = json.loads(found.stdout.strip().splitlines()[-1])["runs"]
    assert [(r["kind"], r["snapshot"]) for r in runs] == [("sft", "demos-v1")] and runs[0]["tokens"] > 0

    # Demonstrations from silver.preferences: each (prompt, chosen answer) once, under the sft consent.
    ensure_table(spark, SILVER_PREFERENCES, lakehouse)
    rows = []
    for i, rejected in enumerate(("No.", "Go away.", "Ask someone else.")):
        prompt = render_prompt([{"role": "user", "content": "Can you tell me about the mill?"}])
        text = "\n".join((prompt, "Yes, the mill is old.", rejected))
        rows.append({f.name: None for f in SILVER_PREFERENCES.schema.fields} | {
            "doc_id": pair_id(prompt, "Yes, the mill is old.", rejected), "prompt": prompt,
            "chosen": "Yes, the mill is old.", "rejected": rejected, "rule": "choice", "text": text,
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "split_key": prompt_key(prompt),
            "source": "serve", "consent": ["preference", "sft"] if i < 2 else ["preference"], "license": "MIT",
            "license_policy": {"sft": "allowed", "preference": "allowed"}, "created_at": datetime(2026, 12, 1, tzinfo=UTC),
            "build_run_id": "build-test",
        })  # fmt: skip
    spark.createDataFrame(rows, SILVER_PREFERENCES.schema).write.format("delta").mode("append").save(
        SILVER_PREFERENCES.path(lakehouse)
    )
    cut = create_snapshot(spark, config, SnapshotSpec("chosen-v1", "silver.preferences", purpose="sft",
                                                      validation=0.0, test=0.0))  # fmt: skip
    assert cut["rows"] == 2 and cut["excluded"] == {"no_consent": 1}
    assert [d.response for d in demonstrations(config, "chosen-v1")[1]] == ["Yes, the mill is old."]


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
