"""The flywheel's promotion gate and the report of a turn: whether a challenger replaces the
champion, and why (`jobs/flywheel.py` runs the turn)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evals.settings import FlywheelSettings

PROMOTED, KEPT_CHAMPION, TOO_FEW_PAIRS = "promoted", "kept_champion", "too_few_pairs"


@dataclass
class TurnReport:
    run_id: str
    decision: str  # promoted | kept_champion | too_few_pairs
    reasons: list[str] = field(default_factory=list)
    champion: str | None = None  # NAME/VERSION before the turn
    challenger: str | None = None  # NAME/VERSION registered by the turn
    snapshot: str | None = None
    new_pairs: int = 0
    pairs: int = 0
    stream: dict[str, Any] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)  # when [flywheel] sft: the SFT run, or why there was none
    dpo: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def gate(figures: dict[str, float], settings: FlywheelSettings, champion: str) -> tuple[bool, list[str]]:
    """Whether the challenger replaces the champion, and why: its win rate must reach
    `min_winrate` and its validation perplexity may grow by at most `max_perplexity_increase`
    (checked when both perplexities are known). Adds `perplexity_increase` to `figures`."""
    reasons = []
    winrate = figures.get("winrate")
    wins = winrate is not None and winrate >= settings.min_winrate
    if winrate is None:
        reasons.append("no win rate: the snapshot has no held-out prompts")
    else:
        reasons.append(f"win rate {winrate:.3f} against {champion} {'>=' if wins else '<'} "
                       f"[flywheel] min_winrate {settings.min_winrate}")  # fmt: skip
    ok_perplexity = True
    if "challenger_perplexity" in figures and "champion_perplexity" in figures:
        growth = figures["challenger_perplexity"] / figures["champion_perplexity"] - 1
        ok_perplexity = growth <= settings.max_perplexity_increase
        figures["perplexity_increase"] = growth
        reasons.append(f"validation perplexity {'+' if growth >= 0 else ''}{growth:.1%} "
                       f"{'<=' if ok_perplexity else '>'} [flywheel] max_perplexity_increase "
                       f"{settings.max_perplexity_increase:.0%}")  # fmt: skip
    else:
        reasons.append("no perplexity check: no pretraining run among the champion's ancestors")
    return wins and ok_perplexity, reasons
