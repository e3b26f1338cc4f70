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
    winrate: float  # the mean over prompts of each prompt's mean verdict (a tie counts half)
    ci_low: float  # 95% Wilson score interval over the prompts
    ci_high: float
    wins: int  # prompts whose mean verdict favours the answer
    ties: int
    losses: int
    comparisons: int  # answer pairs judged (prompts x answers per prompt)

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


def win_rate(
    judge: Judge, prompts: Sequence[str], answers: Sequence[str | Sequence[str]],
    others: Sequence[str | Sequence[str]],
) -> WinRate:  # fmt: skip
    """Each prompt's answer judged against the other's, both ways round (a judge that favours the
    first or second position cancels out): the score is the mean of the two verdicts. A prompt may
    have several answers on each side (sampled at several seeds, paired in order): its score is
    their mean, and the interval counts prompts, not answers, since answers to one prompt are not
    independent of each other."""
    wins = ties = losses = comparisons = 0
    total = 0.0
    for prompt, mine, theirs in zip(prompts, answers, others, strict=True):
        mine_list = [mine] if isinstance(mine, str) else list(mine)
        theirs_list = [theirs] if isinstance(theirs, str) else list(theirs)
        scores = []
        for answer, other in zip(mine_list, theirs_list, strict=True):
            first, second = float(judge(prompt, answer, other)), float(judge(prompt, other, answer))
            if not (0.0 <= first <= 1.0 and 0.0 <= second <= 1.0):
                raise JudgeError(f"the judge answered {first}, {second}: a score must be in [0, 1]")
            scores.append((first + 1.0 - second) / 2)
        score = sum(scores) / len(scores)
        comparisons += len(scores)
        total += score
        wins += score > 0.5
        ties += score == 0.5
        losses += score < 0.5
    n = wins + ties + losses
    low, high = wilson(total, n)
    return WinRate(total / n if n else float("nan"), low, high, wins, ties, losses, comparisons)
