"""`millpond train dpo`: DPO from a registered model on a preference snapshot learns the preference
(held-out accuracy from chance to >= 0.75), logs what an ML engineer compares in MLflow, caches the
reference, registers the model, and resumes exactly."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_config
from curation.preferences import pair_id, prompt_key
from jobs.cli import cli
from jobs.snapshot import create_snapshot
from lineage.catalog import SILVER_PREFERENCES
from lineage.chat import render_prompt
from lineage.snapshots import SnapshotSpec, snapshot_row
from lineage.tables import ensure_table
from trainers.dpo import DirectPreference, DpoSettings, Pair, preference_accuracy, tokenize_pairs

TOPICS = ["mill", "weir", "river", "wheel", "grain", "flour", "sluice", "race", "stone", "loft", "yard", "abbey"]


def _pairs() -> list[dict[str, Any]]:
    """The simulated users' preference: a helpful answer ("Yes, ...") over a curt refusal ("No.")."""
    rows = []
    for i, topic in enumerate(TOPICS * 5):
        prompt = render_prompt([{"role": "user", "content": f"Can you tell me about the {topic} number {i}?"}])
        chosen, rejected = f"Yes, the {topic} is old and well kept.", f"No. I will not talk about the {topic}."
        text = "\n".join((prompt, chosen, rejected))
        rows.append({f.name: None for f in SILVER_PREFERENCES.schema.fields} | {
            "doc_id": pair_id(prompt, chosen, rejected), "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "rule": "external", "text": text, "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "split_key": prompt_key(prompt), "source": "sim", "consent": ["preference"], "license": "MIT",
            "license_policy": {"preference": "allowed"}, "created_at": datetime(2026, 12, 1, tzinfo=UTC),
            "build_run_id": "build-test",
        })  # fmt: skip
    return rows


def test_pairs_pack_with_the_prompt_masked_and_ties_count_half() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "a", "b", "c", "d"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tensors = tokenize_pairs([Pair("p1", "a b c", "d", "c c", "train")], tokenizer, seq_len=4, eos_id=1, pad_id=0)
    # chosen: inputs a b c d, targets b c d <eos>: only d and <eos> (the answer) count
    assert tensors.input_ids[0, 0].tolist() == [2, 3, 4, 5] and tensors.targets[0, 0].tolist() == [3, 4, 5, 1]
    assert tensors.masks[0, 0].tolist() == [False, False, True, True]
    # rejected is one token longer: the prompt's first token is cut to fit
    assert tensors.input_ids[0, 1].tolist() == [3, 4, 4, 4] and tensors.prompts_cut == 1
    same = np.array([[-3.0, -4.0], [-2.0, -2.0]])
    assert preference_accuracy(same, same, 0.1)["preference_accuracy"] == 0.5  # the reference itself: chance
    better = same + np.array([[0.5, -0.5], [-0.5, 0.5]])
    assert preference_accuracy(better, same, 0.1)["preference_accuracy"] == 0.5
    # a micro-batch is a pure function of its index (exact resume)
    objective = DirectPreference(tensors, same[:1], DpoSettings(micro_batch=2), seed=3)
    assert objective.rows(7, 0).tolist() == objective.rows(7, 0).tolist()


def test_dpo_learns_the_preference_tracks_caches_and_resumes(spark, lakehouse: Path, monkeypatch) -> None:
    from serving.smoke import register_untrained_model

    rows = _pairs()
    ensure_table(spark, SILVER_PREFERENCES, lakehouse)
    spark.createDataFrame(rows, SILVER_PREFERENCES.schema).write.format("delta").mode("append").save(
        SILVER_PREFERENCES.path(lakehouse)
    )
    config = make_config(lakehouse)
    create_snapshot(spark, config, SnapshotSpec("prefs-v1", "silver.preferences", purpose="preference",
                                                validation=0.0, test=0.3))  # fmt: skip
    texts = [r["text"] for r in rows] * 3
    base_run = register_untrained_model(lakehouse, "millpond-base", texts, alias="champion")

    base = ["--lakehouse", str(lakehouse)]
    runner = CliRunner()
    result = runner.invoke(cli, [*base, "train", "dpo", "--snapshot", "prefs-v1", "--init", "millpond-base@champion",
                                 "--max-steps", "30", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["init_preference_accuracy"] == 0.5 and figures["preference_accuracy"] >= 0.75
    assert figures["preference_margin"] > 0 and figures["final_loss"] < figures["first_loss"]
    assert not figures["reference_cached"] and figures["reference_forward_passes"] > 0
    assert figures["pairs"]["held_out"] > 0 and figures["pairs"]["prompts_cut"] == 0

    import mlflow

    from jobs.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri(config))
    run = client.get_run(figures["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == base_run and run.data.tags["millpond.kind"] == "dpo"
    assert run.info.experiment_id == client.get_run(base_run).info.experiment_id  # shown with its parent
    assert run.info.run_name.startswith("dpo-prefs-v1-sigmoid-beta0.1-from-millpond-base-v1")
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "kl", "lr",
            "grad_norm", "tokens_per_s", "preference_accuracy", "logps/chosen", "logps/rejected"} <= set(run.data.metrics)  # fmt: skip
    assert run.data.params["init.model"] == "millpond-base@champion" and run.data.params["dpo.beta"] == "0.1"
    dataset = run.inputs.dataset_inputs[0].dataset
    pinned = snapshot_row(lakehouse, "prefs-v1")["source_version"]
    assert dataset.name == f"prefs-v1@v{pinned}" and json.loads(dataset.source)["path"].endswith("silver/preferences")
    registered = figures["registered_model"]
    assert registered["name"] == "millpond-dpo-prefs-v1"
    assert client.get_model_version(registered["name"], registered["version"]).run_id == figures["run_id"]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(figures["model_dir"]).config.num_hidden_layers == 2

    # `millpond eval`: the same figures for every run, logged into it; the base is the reference: chance.
    judged = runner.invoke(cli, [*base, "eval", figures["run_id"], "--against", "millpond-base@champion", "--json"])
    assert judged.exit_code == 0, judged.output
    evaluated = json.loads(judged.stdout.strip().splitlines()[-1])
    assert evaluated["preference_accuracy"] == pytest.approx(figures["preference_accuracy"])
    assert evaluated["winrate_ci_low"] <= evaluated["winrate"] <= evaluated["winrate_ci_high"]
    assert evaluated["winrate_prompts"] == figures["pairs"]["held_out"] and evaluated["against"] == "millpond-base/1"
    assert "perplexity" in evaluated["skipped"]  # no pretraining run among its ancestors
    logged = client.get_run(figures["run_id"])
    assert {"winrate", "winrate_ci_low", "winrate_ci_high"} <= set(logged.data.metrics)
    assert logged.data.tags["eval.judge"] == "evals.winrate:longer"
    assert "eval/samples.json" in {a.path for a in client.list_artifacts(figures["run_id"], "eval")}
    assert "plots/reward_margins.png" in {a.path for a in client.list_artifacts(figures["run_id"], "plots")}
    # The samples hold prompts of prefs-v1: erasing a person in it drops them (`lineage erase`).
    from lineage.exposure import all_runs, drop_eval_samples, runs_with_eval_samples

    assert runs_with_eval_samples(all_runs(client), {"prefs-v1"}) == [figures["run_id"]]
    assert drop_eval_samples(client, figures["run_id"]) and not client.list_artifacts(figures["run_id"], "eval")
    assert runs_with_eval_samples(all_runs(client), {"prefs-v1"}) == []
    assert not drop_eval_samples(client, figures["run_id"])
    chance = runner.invoke(cli, [*base, "eval", base_run, "--suite", "preference", "--snapshot", "prefs-v1", "--json"])
    assert json.loads(chance.stdout.strip().splitlines()[-1])["preference_accuracy"] == 0.5, chance.output
    refused = runner.invoke(cli, [*base, "eval", base_run, "--suite", "winrate"])
    assert refused.exit_code != 0 and "--against names the model" in str(refused.exception)

    # The same pairs and reference again (another loss): the reference is read from the cache.
    again = runner.invoke(cli, [*base, "train", "dpo", "--snapshot", "prefs-v1", "--init", base_run, "--loss", "ipo",
                                "--max-steps", "3", "--json"])  # fmt: skip
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["reference_cached"] and second["reference_forward_passes"] == 0

    # A run killed after its step-4 checkpoint and resumed logs the uninterrupted run's losses.
    from jobs.dpo import run_dpo

    settings = DpoSettings(max_steps=8, checkpoint_every=4)
    straight = run_dpo(config, "prefs-v1", base_run, settings)
    real_log = mlflow.log_metrics

    def crash_at_6(metrics: dict[str, float], step: int | None = None, **kw: Any) -> None:
        if step == 6:
            raise KeyboardInterrupt("killed at step 6")
        real_log(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", crash_at_6)
    with pytest.raises(KeyboardInterrupt):
        run_dpo(config, "prefs-v1", base_run, settings)
    monkeypatch.setattr(mlflow, "log_metrics", real_log)
    crashed = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time DESC"])[0]
    resumed = run_dpo(config, "prefs-v1", None, settings, resume_run=crashed.info.run_id)
    assert resumed["start_step"] == 4 and resumed["steps"] == 8
    assert resumed["losses"] == pytest.approx(straight["losses"][4:], rel=1e-5)


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
