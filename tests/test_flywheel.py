"""The flywheel's promotion gate and the win rate it reads, alone (the whole turn runs in
`test_demo.py`, on the demo's lakehouse)."""

from __future__ import annotations

import pytest

from evals.settings import FlywheelSettings
from evals.winrate import load_judge, longer, wilson, win_rate
from jobs.demo import plain_words
from jobs.flywheel import gate

SETTINGS = FlywheelSettings(min_winrate=0.55, max_perplexity_increase=0.10)


def test_the_gate_needs_the_win_rate_and_tolerates_only_a_little_more_perplexity() -> None:
    figures = {"winrate": 0.70, "challenger_perplexity": 105.0, "champion_perplexity": 100.0}
    promoted, reasons = gate(figures, SETTINGS, "chat/1")
    assert promoted and figures["perplexity_increase"] == pytest.approx(0.05)
    assert reasons == ["win rate 0.700 against chat/1 >= [flywheel] min_winrate 0.55",
                       "validation perplexity +5.0% <= [flywheel] max_perplexity_increase 10%"]  # fmt: skip
    assert not gate({"winrate": 0.54, "challenger_perplexity": 90.0, "champion_perplexity": 100.0}, SETTINGS, "c")[0]
    costly, why = gate({"winrate": 0.9, "challenger_perplexity": 120.0, "champion_perplexity": 100.0}, SETTINGS, "c")
    assert not costly and "+20.0% > [flywheel] max_perplexity_increase 10%" in why[1]
    assert not gate({}, SETTINGS, "c")[0]  # no held-out prompts, no promotion
    assert gate({"winrate": 0.6}, SETTINGS, "c") == (
        True, ["win rate 0.600 against c >= [flywheel] min_winrate 0.55",
               "no perplexity check: no pretraining run among the champion's ancestors"])  # fmt: skip


def test_win_rate_judges_both_orders_and_bounds_itself() -> None:
    prompts = ["p"] * 4
    rate = win_rate(longer, prompts, ["aaaa", "aa", "a", "bb"], ["a", "aaaa", "a", "cc"])
    assert (rate.wins, rate.ties, rate.losses, rate.winrate) == (1, 2, 1, 0.5)
    assert rate.ci_low < 0.5 < rate.ci_high
    low, high = wilson(45, 50)
    assert 0.78 < low < 0.9 < high < 0.97  # 0.90 observed on 50: about 0.79-0.96

    def first_wins(prompt: str, a: str, b: str) -> float:  # a judge biased to the first position
        return 1.0

    assert win_rate(first_wins, prompts, ["x"] * 4, ["y"] * 4).winrate == 0.5  # the bias cancels out
    # several answers per prompt: a prompt scores the mean of its verdicts; the interval counts prompts
    rounds = win_rate(longer, ["p", "q"], [["aa", "a"], ["b"]], [["a", "aa"], ["bb"]])
    assert (rounds.wins, rounds.ties, rounds.losses, rounds.comparisons, rounds.winrate) == (0, 1, 1, 3, 0.25)
    assert (rounds.ci_low, rounds.ci_high) == wilson(0.5, 2)
    assert load_judge("jobs.demo:plain_words") is plain_words
    assert plain_words("q", "the mill turns", "{}();") == 1.0 and plain_words("q", "", "words") == 0.0
