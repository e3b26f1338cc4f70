"""`millpond classifier train`: a real fastText model from files, tracked in a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from curation_data import prose

from conftest import make_config, write_jsonl
from jobs.cli import cli
from jobs.config import Config
from jobs.curate import plan_stages

SPAM = "click here free free free best price buy now limited offer act now win money"


def test_train_logs_to_mlflow_and_the_stage_can_use_the_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lakehouse = tmp_path / "lakehouse"
    good = write_jsonl(tmp_path / "good.jsonl", [{"body": prose(i, 5)} for i in range(150)])
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(f"{SPAM} {' '.join(SPAM.split()[i % 7 :])} #{i}\n" for i in range(150)))
    result = CliRunner().invoke(
        cli,
        ["--lakehouse", str(lakehouse), "classifier", "train", "--positive", str(good), "--negative", str(bad),
         "--text-field", "body", "--epoch", "5", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert Path(figures["model"]).is_file() and figures["model"].startswith(str(lakehouse.resolve()))
    assert figures["precision"] > 0.9 and figures["recall"] > 0.9

    import mlflow

    mlflow.set_tracking_uri(figures["tracking_uri"])
    run = mlflow.get_run(figures["run_id"])
    assert run.data.params["positive_examples"] == "150"
    assert run.data.metrics["f1"] == figures["f1"]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(figures["run_id"], "model")]
    assert any(a.endswith(".fasttext.bin") for a in artifacts)

    values = json.loads(json.dumps(make_config(lakehouse).values))
    values["curate"]["classifier"]["model"] = figures["model"]
    chosen, skipped = plan_stages(None, Config(values=values, file=None))
    assert "classifier" in chosen and "classifier" not in skipped


def test_a_bad_line_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    result = CliRunner().invoke(
        cli,
        ["--lakehouse", str(tmp_path / "lh"), "classifier", "train", "--positive", str(bad), "--negative", str(bad)],
    )
    assert result.exit_code != 0
    assert f"{bad}:2: not valid JSON" in str(result.exception)
