"""DPO on the one training loop: pairs as token tensors, the frozen reference's log-probabilities
computed once and cached, the objective the loop minimizes, and the held-out preference accuracy.

The reference model is the policy's starting point. Its summed log-probabilities of every pair's
chosen and rejected response depend only on (the pairs, the reference weights, the context), so
they are computed once, kept on disk under a key of those three, and reused by re-runs, resumes
and evaluations: a training step runs the policy only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineage.errors import MillpondError, NotEnoughDataError
from trainers.loop import TrainSettings, example_rows, with_overrides
from trainers.preference import PreferenceSettings, pack, preference_loss, sequence_logps


@dataclass(frozen=True)
class DpoSettings:
    """The `[dpo]` section: the loss, and the loop settings DPO sets apart from pretraining's
    `[train]` (a much smaller learning rate on a model that already speaks)."""

    beta: float = 0.1
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo | hinge
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    lr: float = 5e-4
    max_steps: int = 100
    warmup: int = 10
    micro_batch: int = 8  # pairs per micro-batch (each pair is two sequences)
    seq_len: int = 128
    checkpoint_every: int = 50
    eval_micro_batch: int = 32  # pairs per forward pass when computing reference and held-out log-probs

    def __post_init__(self) -> None:
        self.preference()  # validates the loss settings

    def preference(self) -> PreferenceSettings:
        return PreferenceSettings(
            beta=self.beta, loss=self.loss, label_smoothing=self.label_smoothing, rpo_alpha=self.rpo_alpha
        )

    def loop(self, base: TrainSettings) -> TrainSettings:
        return with_overrides(base, self)


@dataclass(frozen=True)
class Pair:
    """One preference pair of a snapshot."""

    pair_id: str
    prompt: str  # rendered with the chat template, ending where the answer begins
    chosen: str
    rejected: str
    split: str


@dataclass
class PairTensors:
    """Pairs as model input: (n, 2, seq_len) inputs, targets and response masks; [:, 0] is the
    chosen response, [:, 1] the rejected one."""

    pair_ids: list[str]
    splits: np.ndarray  # (n,) split names
    input_ids: np.ndarray
    targets: np.ndarray
    masks: np.ndarray
    prompts_cut: int  # pairs whose prompt was cut from the left to fit seq_len
    response_tokens: np.ndarray  # (n,) chosen + rejected response tokens that count

    def __len__(self) -> int:
        return len(self.pair_ids)

    def indices(self, *splits: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.splits, list(splits)))


def tokenize_pairs(pairs: list[Pair], tokenizer: Any, seq_len: int, eos_id: int, pad_id: int) -> PairTensors:
    """Prompt and answer are tokenized apart (as the server does: it tokenizes the prompt and
    generates from there) and each answer ends with end-of-sequence, which the model must learn
    to produce."""
    inputs = np.full((len(pairs), 2, seq_len), pad_id, dtype=np.int64)
    targets = np.full((len(pairs), 2, seq_len), pad_id, dtype=np.int64)
    masks = np.zeros((len(pairs), 2, seq_len), dtype=bool)
    cut = 0
    for i, pair in enumerate(pairs):
        prompt = tokenizer.encode(pair.prompt).ids
        cut_here = False
        for j, answer in enumerate((pair.chosen, pair.rejected)):
            packed = pack(prompt, tokenizer.encode(answer).ids + [eos_id], seq_len, pad_id)
            inputs[i, j], targets[i, j], masks[i, j] = packed.input_ids, packed.targets, packed.response_mask
            cut_here = cut_here or packed.prompt_cut > 0
        cut += cut_here
    return PairTensors(
        pair_ids=[p.pair_id for p in pairs],
        splits=np.array([p.split for p in pairs]),
        input_ids=inputs,
        targets=targets,
        masks=masks,
        prompts_cut=cut,
        response_tokens=masks.sum(axis=(1, 2)),
    )


def pair_logps(model: Any, tensors: PairTensors, rows: np.ndarray, device: Any = None) -> Any:
    """Summed response log-probabilities (len(rows), 2) of the pairs `rows` under `model`, with
    gradients when the model is training."""
    import torch

    ids = torch.from_numpy(tensors.input_ids[rows].reshape(-1, tensors.input_ids.shape[-1])).to(device)
    targets = torch.from_numpy(tensors.targets[rows].reshape(ids.shape)).to(device)
    mask = torch.from_numpy(tensors.masks[rows].reshape(ids.shape)).to(device)
    logits = model(input_ids=ids).logits
    return sequence_logps(logits, targets, mask).view(len(rows), 2)


def all_logps(model: Any, tensors: PairTensors, rows: np.ndarray, batch: int) -> np.ndarray:
    """`pair_logps` of many pairs without gradients, `batch` pairs per forward pass."""
    import torch

    out = np.zeros((len(rows), 2), dtype=np.float64)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            out[start : start + len(chunk)] = pair_logps(model, tensors, chunk, device).float().cpu().numpy()
    model.train(was_training)
    return out


def folder_digest(folder: Path) -> str:
    """SHA-256 over a model folder's files (names and bytes): the reference model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class ReferenceLogps:
    """The reference's summed log-probabilities of every pair, and whether they came from the cache."""

    values: np.ndarray  # (n, 2) float64, rows in the order of PairTensors.pair_ids
    key: str
    path: Path
    cached: bool
    forward_passes: int  # reference forward passes this run made (0 when cached)


def reference_key(snapshot_digest: str, model_digest: str, seq_len: int) -> str:
    return hashlib.sha256(f"{snapshot_digest}\0{model_digest}\0{seq_len}".encode()).hexdigest()[:32]


def reference_logps(
    load_reference: Callable[[], Any], tensors: PairTensors, cache: Path, key: str, batch: int
) -> ReferenceLogps:
    """The reference's log-probabilities from `cache/<key>.npz`, else computed now (the model is
    loaded only then) and stored there (written to a temporary file and renamed, so a killed run
    never leaves half a cache)."""
    path = cache / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if list(stored["pair_ids"]) == tensors.pair_ids:
                return ReferenceLogps(stored["logps"], key, path, True, 0)
    rows = np.arange(len(tensors))
    values = all_logps(load_reference(), tensors, rows, batch)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{key}.{os.getpid()}.npz"
    np.savez(partial, pair_ids=np.array(tensors.pair_ids), logps=values)
    partial.replace(path)
    return ReferenceLogps(values, key, path, False, (len(rows) + batch - 1) // batch)


class DirectPreference:
    """DPO's objective for the loop: the policy's log-probabilities of a micro-batch of training
    pairs against the cached reference's, through `preference_loss`."""

    def __init__(self, tensors: PairTensors, reference: np.ndarray, settings: DpoSettings, seed: int) -> None:
        self.tensors, self.reference, self.settings, self.seed = tensors, reference, settings, seed
        self.train_rows = tensors.indices("train")
        self.tokens_per_micro_batch = 2 * settings.micro_batch * settings.seq_len

    def rows(self, index: int, rank: int) -> np.ndarray:
        """The training pairs of micro-batch `index` (a pure function of it, as pretraining's windows)."""
        return example_rows(self.seed, index, rank, self.train_rows, self.settings.micro_batch)

    def loss(self, engine: Any, index: int, rank: int) -> tuple[Any, dict[str, float]]:
        import torch

        rows = self.rows(index, rank)
        policy = pair_logps(engine, self.tensors, rows, engine.device)
        reference = torch.from_numpy(self.reference[rows]).to(policy.device, policy.dtype)
        tokens = torch.from_numpy(self.tensors.masks[rows].sum(axis=-1)).to(policy.device, policy.dtype)
        step = preference_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                               self.settings.preference(), tokens[:, 0], tokens[:, 1])  # fmt: skip
        kl = float((policy.detach() - reference).mean())
        figures = {
            "rewards/chosen": step.chosen_rewards,
            "rewards/rejected": step.rejected_rewards,
            "rewards/margins": step.margins,
            "rewards/accuracies": step.accuracy,
            "kl": kl,
            "logps/chosen": float(policy[:, 0].detach().mean()),  # TRL's names: RPO keeps these from falling
            "logps/rejected": float(policy[:, 1].detach().mean()),
        }
        return step.loss, figures


def preference_accuracy(policy: np.ndarray, reference: np.ndarray, beta: float) -> dict[str, float]:
    """Held-out figures of the implicit reward beta * (policy - reference): the share of pairs it
    ranks the chosen answer above the rejected one (a tie counts half, so the reference itself
    scores exactly chance, 0.5), and the mean margin."""
    rewards = beta * (policy - reference)
    margins = rewards[:, 0] - rewards[:, 1]
    accuracy = float(np.mean((margins > 0) + 0.5 * (margins == 0))) if len(margins) else float("nan")
    return {"preference_accuracy": accuracy, "preference_margin": float(np.mean(margins)) if len(margins) else 0.0}


class PreferenceSnapshotError(MillpondError, ValueError):
    """The snapshot is not one of preference pairs."""


def snapshot_pairs(lakehouse: Any, snapshot: dict[str, Any]) -> list[Pair]:
    """A preference snapshot's pairs as its pinned version of silver.preferences holds them."""
    from lineage.catalog import SILVER_PREFERENCES  # Spark's types: imported here, so training runs without Spark
    from lineage.snapshots import member_rows

    name = snapshot["name"]
    if snapshot["source_table"] != SILVER_PREFERENCES.name:
        raise PreferenceSnapshotError(
            f"snapshot {name} was cut from {snapshot['source_table']}; DPO trains on preference pairs: "
            f"`millpond snapshot create NAME --from {SILVER_PREFERENCES.name} --purpose preference`"
        )
    rows = member_rows(lakehouse, snapshot, ["prompt", "chosen", "rejected"])
    pairs = [Pair(r["doc_id"], r["prompt"], r["chosen"], r["rejected"], r["split"]) for r in rows]
    if not any(p.split == "train" for p in pairs):
        raise NotEnoughDataError(f"snapshot {name} has no pairs in its train split (`millpond snapshot show {name}`)")
    return pairs
