"""The `[eval]` section: how `millpond eval` and the flywheel's evaluation answer and judge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    """The `[eval]` section."""

    judge: str = "evals.winrate:longer"  # module:function(prompt, answer, other) -> 1.0 | 0.5 | 0.0
    prompts: int = 64  # held-out prompts answered for winrate and samples
    max_new_tokens: int = 48
    batch: int = 16
