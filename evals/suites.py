"""The evaluation suites on one model: where a run's pretraining and init model are, validation
perplexity, and the implicit reward's accuracy on held-out pairs. `evals/evaluate.py` runs them
on a run's model and logs what they measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineage.errors import MillpondError


class EvalInputError(MillpondError, ValueError):
    """A suite was asked for that the run has nothing to evaluate on."""


def run_chain(client: Any, run: Any) -> list[Any]:
    """The run, its init run, that run's init run, ...: where its pretraining and snapshots are."""
    chain, seen = [run], {run.info.run_id}
    while (parent := chain[-1].data.params.get("init.run_id")) and parent not in seen:
        seen.add(parent)
        try:
            chain.append(client.get_run(parent))
        except Exception:  # noqa: BLE001 - a deleted ancestor ends the chain
            break
    return chain


def model_folder(uri: str, reference: str, cache: Path) -> Path:
    """The local folder of a registered or run model (downloaded once), without loading it."""
    from serving.model import download_model, resolve_any

    return download_model(resolve_any(uri, reference), cache)


def load_model(uri: str, reference: str, cache: Path) -> tuple[Any, Any, Path, Any]:
    """A registered or run model, its tokenizer, its local folder and what it is."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from serving.model import download_model, resolve_any

    served = resolve_any(uri, reference)
    folder = download_model(served, cache)
    return AutoModelForCausalLM.from_pretrained(folder), PreTrainedTokenizerFast.from_pretrained(folder), folder, served


def validation_perplexity(model: Any, params: dict[str, str], batches: int | None) -> dict[str, float]:
    """`val_loss` and `val_perplexity` on the validation split of a pretraining run's shards."""
    from evals.perplexity import perplexity
    from trainers.data import TokenWindows
    from trainers.shards import load_manifest

    folder = Path(params["shards.folder"])
    manifest = load_manifest(folder)
    if manifest is None:
        raise EvalInputError(f"the shards ({folder}) are gone; `millpond shards build` rebuilds them")
    data = TokenWindows(folder, manifest, "validation", int(params["train.seq_len"]))
    return perplexity(model, data, int(params["train.micro_batch"]), batches or int(params["train.eval_batches"]))


def held_out_preference(
    model: Any, tokenizer: Any, pairs: list[Any], params: dict[str, str], reference_folder: Path,
    snapshot_digest: str, cache: Path, batch: int,
) -> dict[str, float]:  # fmt: skip
    """The implicit reward beta * (model - reference) on the held-out pairs, the reference's
    log-probs from the DPO cache (the run's init model; the model itself for a run with none:
    chance, 0.5)."""
    from trainers.dpo import (
        all_logps,
        folder_digest,
        preference_accuracy,
        reference_key,
        reference_logps,
        tokenize_pairs,
    )
    from trainers.tokenizer import EOS, PAD

    seq_len = int(params.get("dpo.seq_len") or params.get("train.seq_len") or 128)
    beta = float(params.get("dpo.beta") or 0.1)
    backend = tokenizer.backend_tokenizer
    tensors = tokenize_pairs(pairs, backend, seq_len, backend.token_to_id(EOS), backend.token_to_id(PAD))
    held_out = tensors.indices("validation", "test")
    key = reference_key(snapshot_digest, folder_digest(reference_folder), seq_len)
    from transformers import AutoModelForCausalLM

    reference = reference_logps(lambda: AutoModelForCausalLM.from_pretrained(reference_folder), tensors, cache, key,
                                batch)  # fmt: skip
    policy = all_logps(model, tensors, held_out, batch)
    return preference_accuracy(policy, reference.values[held_out], beta)
