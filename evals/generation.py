"""Answers of a causal LM to chat prompts, cut where the next turn would begin (as served).

Sampled at a fixed seed (greedy decoding of a small model repeats one token to the end, which
says nothing about how it answers), so two runs of an evaluation give the same answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lineage.chat import cut_answer


def answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch: int = 16,
    temperature: float = 0.7, seed: int = 0,
) -> list[str]:  # fmt: skip
    """One answer per prompt (already rendered with the chat template), sampled at `temperature`
    (0: greedy) from `seed`; prompts longer than the context keep their end."""
    import torch

    context = int(model.config.max_position_embeddings)
    keep = max(1, context - max_new_tokens)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            encoded = [tokenizer(p)["input_ids"][-keep:] for p in prompts[start : start + batch]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)  # left padding
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
            torch.manual_seed(seed + start)
            sampled = temperature > 0
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=sampled, temperature=temperature if sampled else None, top_k=None,
                                       top_p=None, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
            for row in generated[:, width:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                out.append(cut_answer(text)[0].strip())
    return out
