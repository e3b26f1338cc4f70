"""An untrained model of the `tiny` preset, registered in MLflow as training registers one.

What serving tests and the serving benchmark put behind `millpond serve` when no trained model
is at hand: the real architecture, tokenizer and registry entry, only the weights are random
(serving does not care how good the answers are).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def register_untrained_model(lakehouse: Path, name: str, texts: Iterable[str], alias: str | None = None) -> str:
    """Train a small BPE tokenizer on `texts`, build the `tiny` preset, log both as a run's `model`
    artifacts (Hugging Face format) in the lakehouse's MLflow store and register them as a version
    of `name` (with `alias`). Returns the run id."""
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from jobs.config import DEFAULTS, Config
    from jobs.tracking import use_experiment
    from lineage.locations import run_folder
    from trainers.model import llama_config
    from trainers.tokenizer import EOS, PAD, TokenizerSettings, train_bpe

    config = Config(values={**DEFAULTS, "lakehouse": str(lakehouse)}, file=None)
    use_experiment(config, "pretrain")
    tokenizer = train_bpe(texts, TokenizerSettings(vocab_size=400, min_frequency=1))
    folder = run_folder(lakehouse, f"untrained-{name}")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    eos, pad = tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD)
    model = AutoModelForCausalLM.from_config(llama_config("tiny", tokenizer.get_vocab_size(), eos, pad))
    model.save_pretrained(folder)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token=EOS, pad_token=PAD)
    hf_tokenizer.save_pretrained(folder)
    with mlflow.start_run(run_name=f"untrained-{name}") as run:
        mlflow.set_tag("millpond.kind", "untrained")
        mlflow.log_artifacts(str(folder), artifact_path="model")
        client = mlflow.MlflowClient()
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    return run.info.run_id
