"""Training batches from token shards: windows at positions fixed by (seed, step, rank).

A batch is a pure function of the step, so a resumed run reads exactly the batches an
uninterrupted one would have, with no loader state to save.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lineage.errors import NotEnoughDataError
from trainers.shards import shard_tokens


class TokenWindows:
    """Random windows of `seq_len + 1` tokens over a split's shards (inputs and shifted targets)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], split: str, seq_len: int) -> None:
        self.seq_len = seq_len
        self.shards = [shard_tokens(folder, s, manifest["dtype"]) for s in manifest["shards"] if s["split"] == split]
        self.shards = [s for s in self.shards if len(s) > seq_len + 1]
        if not self.shards:
            raise NotEnoughDataError(
                f"the {split} split of {manifest['snapshot']} has no shard longer than {seq_len + 1} tokens: "
                "train with a shorter context (--seq-len) or on a larger snapshot"
            )
        sizes = np.array([len(s) - seq_len - 1 for s in self.shards], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.tokens = int(sum(len(s) for s in self.shards))

    def batch(self, seed: int, step: int, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of shape (size, seq_len), int64."""
        rng = np.random.default_rng([seed, step, rank])
        which = rng.choice(len(self.shards), size=size, p=self.weights)
        rows = []
        for shard_index in which:
            shard = self.shards[shard_index]
            start = int(rng.integers(0, len(shard) - self.seq_len - 1))
            rows.append(np.asarray(shard[start : start + self.seq_len + 1], dtype=np.int64))
        block = np.stack(rows)
        return block[:, :-1], block[:, 1:]

    def sequential(self, size: int, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Non-overlapping windows in order (for evaluation), at most `limit` batches."""
        wanted = None if limit is None else limit * size  # windows past the last batch are never read
        rows: list[np.ndarray] = []
        for shard in self.shards:
            for start in range(0, len(shard) - self.seq_len - 1, self.seq_len):
                if wanted is not None and len(rows) >= wanted:
                    break
                rows.append(np.asarray(shard[start : start + self.seq_len + 1], dtype=np.int64))
        batches = []
        for i in range(0, len(rows), size):
            block = np.stack(rows[i : i + size])
            batches.append((block[:, :-1], block[:, 1:]))
        return batches
