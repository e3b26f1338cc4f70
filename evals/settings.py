"""The `[eval]` and `[flywheel]` sections: how models are evaluated, and when a challenger is promoted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    """The `[eval]` section."""

    judge: str = "evals.winrate:longer"  # module:function(prompt, answer, other) -> 1.0 | 0.5 | 0.0
    prompts: int = 64  # held-out prompts answered for winrate and samples
    max_new_tokens: int = 48
    temperature: float = 0.7  # answers are sampled at a fixed seed (0: greedy)
    seed: int = 0
    batch: int = 16
    # answers per prompt and model for winrate, each round at its own seeds (the same for both
    # models): more rounds, a steadier win rate on the same prompts; the interval counts prompts
    answers_per_prompt: int = 1

    def __post_init__(self) -> None:
        if self.answers_per_prompt < 1:
            raise ValueError("[eval] answers_per_prompt must be 1 or more")


@dataclass(frozen=True)
class FlywheelSettings:
    """The `[flywheel]` section."""

    model: str = "millpond-chat"  # the registered model whose alias is served and moved by promotions
    alias: str = "champion"
    min_new_pairs: int = 16  # a turn with fewer new pairs than this ends early
    min_winrate: float = 0.55  # the challenger's win rate against the champion needed to promote
    max_perplexity_increase: float = 0.10  # relative: 0.10 lets validation perplexity grow by 10%
    test: float = 0.2  # the held-out share of each turn's preference snapshot
    snapshot_prefix: str = "flywheel"
    # SFT before DPO on the turn's demonstrations (the chosen answers and users' edits of the
    # pairs whose users consent to `sft`); DPO then starts from, and is referenced to, the SFT model.
    sft: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.test < 1.0:
            raise ValueError("[flywheel] test must be between 0 and 1")
