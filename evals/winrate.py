"""Win rate of one model's answers against another's, by a pluggable judge, with a confidence interval.

A judge is any callable `judge(prompt, answer, other) -> float`: 1.0 when `answer` is better, 0.0
when `other` is, 0.5 for a tie. It is named in config as `module:function` (`[eval] judge`), so a
rule, a reward model or a person's own code can judge. Built-in rules live here.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lineage.errors import MillpondError

Judge = Callable[[str, str, str], float]


class JudgeError(MillpondError, ValueError):
    """The configured judge cannot be loaded or answered something other than a score in [0, 1]."""


def longer(prompt: str, answer: str, other: str) -> float:
    """The longer answer wins (the response-length baseline)."""
    return 1.0 if len(answer) > len(other) else 0.0 if len(answer) < len(other) else 0.5


def load_judge(name: str) -> Judge:
    """`module:function`, e.g. `evals.winrate:longer` or `my_rules:polite`."""
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise JudgeError(f"[eval] judge {name!r}: expected module:function")
    try:
        judge = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise JudgeError(f"[eval] judge {name!r} cannot be loaded: {err}") from None
    if not callable(judge):
        raise JudgeError(f"[eval] judge {name!r} is not callable")
    return judge


@dataclass(frozen=True)
class WinRate:
    winrate: float  # wins + half the ties, over the prompts
    ci_low: float  # 95% Wilson score interval
    ci_high: float
    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (ties count half a success)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(judge: Judge, prompts: Sequence[str], answers: Sequence[str], others: Sequence[str]) -> WinRate:
    """Each prompt's answer judged against the other's, both ways round (a judge that favours the
    first or second position cancels out): the score is the mean of the two verdicts."""
    wins = ties = losses = 0
    for prompt, answer, other in zip(prompts, answers, others, strict=True):
        first, second = float(judge(prompt, answer, other)), float(judge(prompt, other, answer))
        if not (0.0 <= first <= 1.0 and 0.0 <= second <= 1.0):
            raise JudgeError(f"the judge answered {first}, {second}: a score must be in [0, 1]")
        score = (first + 1.0 - second) / 2
        wins += score > 0.5
        ties += score == 0.5
        losses += score < 0.5
    n = wins + ties + losses
    low, high = wilson(wins + 0.5 * ties, n)
    return WinRate((wins + 0.5 * ties) / n if n else float("nan"), low, high, wins, ties, losses)
