"""Perplexity of a causal language model on a split of token shards."""

from __future__ import annotations

import math
from typing import Any

from trainers.data import TokenWindows
from trainers.model import next_token_loss


def evaluate_loss(model: Any, data: TokenWindows, batch: int, limit: int) -> float:
    """Mean next-token loss over the first `limit` non-overlapping windows of a split."""
    import torch

    device = next(model.parameters()).device
    losses, weights = [], []
    model.eval()
    with torch.no_grad():
        for x, y in data.sequential(batch, limit):
            logits = model(input_ids=torch.from_numpy(x).to(device)).logits
            loss = next_token_loss(logits, torch.from_numpy(y).to(device))
            losses.append(float(loss))
            weights.append(x.size)
    model.train()
    return sum(loss * w for loss, w in zip(losses, weights, strict=True)) / sum(weights)


def perplexity(model: Any, data: TokenWindows, batch: int, limit: int) -> dict[str, float]:
    loss = evaluate_loss(model, data, batch, limit)
    return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}
