"""SFT on the one training loop: demonstrations as token tensors, the loss on response tokens only,
and the held-out loss that says whether tuning helped.

A demonstration is a conversation that ends with the assistant's answer. The prompt (every turn
before the answer, rendered by the chat template `millpond serve` uses) is model input but not
a target: the model learns to answer, not to write users' questions. The answer ends with
end-of-sequence, which the model must learn to produce so that a served answer stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lineage.errors import MillpondError, NotEnoughDataError
from trainers.loop import TrainSettings, example_rows, with_overrides
from trainers.preference import pack


@dataclass(frozen=True)
class SftSettings:
    """The `[sft]` section: the loop settings SFT sets apart from pretraining's `[train]` (a smaller
    learning rate on a model that already speaks, fewer steps)."""

    lr: float = 1e-3
    max_steps: int = 100
    warmup: int = 10
    micro_batch: int = 8  # demonstrations per micro-batch
    seq_len: int = 128
    checkpoint_every: int = 50
    eval_micro_batch: int = 32  # demonstrations per forward pass for the held-out loss

    def __post_init__(self) -> None:
        if min(self.max_steps, self.micro_batch, self.seq_len, self.eval_micro_batch) < 1:
            raise ValueError("[sft] max_steps, micro_batch, seq_len and eval_micro_batch must be positive")
        if not self.lr > 0:
            raise ValueError("[sft] lr must be positive")

    def loop(self, base: TrainSettings) -> TrainSettings:
        return with_overrides(base, self)


@dataclass(frozen=True)
class Demonstration:
    """One demonstration of a snapshot: the rendered prompt and the answer to learn."""

    doc_id: str
    prompt: str  # rendered with the chat template, ending where the answer begins
    response: str
    split: str


@dataclass
class DemonstrationTensors:
    """Demonstrations as model input: (n, seq_len) inputs, targets and response masks."""

    doc_ids: list[str]
    splits: np.ndarray  # (n,) split names
    input_ids: np.ndarray
    targets: np.ndarray
    masks: np.ndarray
    prompts_cut: int  # demonstrations whose prompt was cut from the left to fit seq_len
    response_tokens: np.ndarray  # (n,) response tokens that count (the exposure of a data subject request)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def indices(self, *splits: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.splits, list(splits)))


def tokenize_demonstrations(
    demonstrations: list[Demonstration], tokenizer: Any, seq_len: int, eos_id: int, pad_id: int
) -> DemonstrationTensors:
    """Prompt and answer tokenized apart, as the server tokenizes a prompt and generates from there."""
    inputs = np.full((len(demonstrations), seq_len), pad_id, dtype=np.int64)
    targets = np.full((len(demonstrations), seq_len), pad_id, dtype=np.int64)
    masks = np.zeros((len(demonstrations), seq_len), dtype=bool)
    cut = 0
    for i, demo in enumerate(demonstrations):
        packed = pack(
            tokenizer.encode(demo.prompt).ids, tokenizer.encode(demo.response).ids + [eos_id], seq_len, pad_id
        )
        inputs[i], targets[i], masks[i] = packed.input_ids, packed.targets, packed.response_mask
        cut += packed.prompt_cut > 0
    return DemonstrationTensors(
        doc_ids=[d.doc_id for d in demonstrations],
        splits=np.array([d.split for d in demonstrations]),
        input_ids=inputs,
        targets=targets,
        masks=masks,
        prompts_cut=cut,
        response_tokens=masks.sum(axis=1),
    )


def response_loss(logits: Any, targets: Any, mask: Any) -> Any:
    """Mean cross-entropy over the response tokens of a batch (every response token weighs the same,
    as in TRL's SFT with `completion_only_loss`). Computed in fp32."""
    import torch

    losses = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    weights = mask.reshape(-1).float()
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


class SupervisedResponses:
    """SFT's objective for the loop: the response loss of a micro-batch of training demonstrations."""

    def __init__(self, tensors: DemonstrationTensors, settings: SftSettings, seed: int) -> None:
        self.tensors, self.settings, self.seed = tensors, settings, seed
        self.train_rows = tensors.indices("train")
        self.tokens_per_micro_batch = settings.micro_batch * settings.seq_len

    def rows(self, index: int, rank: int) -> np.ndarray:
        """The demonstrations of micro-batch `index` (a pure function of it, as pretraining's windows)."""
        return example_rows(self.seed, index, rank, self.train_rows, self.settings.micro_batch)

    def loss(self, engine: Any, index: int, rank: int) -> tuple[Any, dict[str, float]]:
        import torch

        rows = self.rows(index, rank)
        ids = torch.from_numpy(self.tensors.input_ids[rows]).to(engine.device)
        targets = torch.from_numpy(self.tensors.targets[rows]).to(engine.device)
        mask = torch.from_numpy(self.tensors.masks[rows]).to(engine.device)
        logits = engine(input_ids=ids).logits
        return response_loss(logits, targets, mask), {"response_tokens": float(mask.sum())}


def held_out_loss(model: Any, tensors: DemonstrationTensors, rows: np.ndarray, batch: int) -> float:
    """Mean response-token cross-entropy of the demonstrations `rows` (no gradients): the figure
    that must fall from the init model to the tuned one."""
    import torch

    if not len(rows):
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            mask = torch.from_numpy(tensors.masks[chunk]).to(device)
            logits = model(input_ids=torch.from_numpy(tensors.input_ids[chunk]).to(device)).logits
            tokens = float(mask.sum())
            total += float(response_loss(logits, torch.from_numpy(tensors.targets[chunk]).to(device), mask)) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1.0)


class DemonstrationSnapshotError(MillpondError, ValueError):
    """The snapshot holds no demonstrations: not cut from silver.preferences or silver.documents, or
    its documents are not conversations."""


def snapshot_demonstrations(lakehouse: Any, snapshot: dict[str, Any]) -> list[Demonstration]:
    """A snapshot's demonstrations as its pinned table version holds them: each pair's prompt and
    chosen answer (once per prompt and answer), or each `sft-jsonl` conversation split into its
    prompt and final answer."""
    from lineage.catalog import SILVER_DOCUMENTS, SILVER_PREFERENCES  # Spark's types: training runs without Spark
    from lineage.chat import split_answer
    from lineage.snapshots import member_rows

    name, source = snapshot["name"], snapshot["source_table"]
    if source == SILVER_PREFERENCES.name:
        rows = member_rows(lakehouse, snapshot, ["prompt", "chosen"])
        seen: set[tuple[str, str]] = set()
        demos = []
        for row in sorted(rows, key=lambda r: r["doc_id"]):  # one demonstration per (prompt, chosen answer)
            if (row["prompt"], row["chosen"]) not in seen:
                seen.add((row["prompt"], row["chosen"]))
                demos.append(Demonstration(row["doc_id"], row["prompt"], row["chosen"], row["split"]))
    elif source == SILVER_DOCUMENTS.name:
        rows = member_rows(lakehouse, snapshot, ["text"])
        parts = [(row, split_answer(row["text"])) for row in rows]
        others = [row["doc_id"] for row, part in parts if part is None]
        if others:
            raise DemonstrationSnapshotError(
                f"snapshot {name}: {len(others)} of {len(rows)} documents are not conversations in the chat template "
                f"(e.g. {others[0]}); cut demonstrations from `sft-jsonl` sources: "
                f"`millpond snapshot create NAME --where \"domain = 'sft'\" --purpose sft`"
            )
        demos = [Demonstration(row["doc_id"], part[0], part[1], row["split"]) for row, part in parts if part]
    else:
        raise DemonstrationSnapshotError(
            f"snapshot {name} was cut from {source}; SFT trains on demonstrations: a snapshot of "
            f"{SILVER_DOCUMENTS.name} (sft-jsonl conversations) or of {SILVER_PREFERENCES.name} (chosen answers)"
        )
    if not any(d.split == "train" for d in demos):
        raise NotEnoughDataError(
            f"snapshot {name} has no demonstrations in its train split (`millpond snapshot show {name}`)"
        )
    return demos
