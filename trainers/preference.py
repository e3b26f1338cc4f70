"""Preference losses on sequence log-probabilities: DPO (sigmoid), IPO and hinge.

Pure torch functions, tested alone against values computed by hand: a training step computes
the policy's summed log-probabilities of the chosen and rejected responses (prompt tokens
masked out), reads the frozen reference's from a cache, and calls `preference_loss`. The
formulas are those of Rafailov et al. 2023 (DPO), Azar et al. 2023 (IPO) and the SLiC hinge,
as TRL implements them. `rpo_alpha` adds the chosen answers' next-token loss (Pang et al. 2024,
TRL's `loss_type=["sigmoid", "sft"]`): the preference alone lowers the likelihood of both answers,
which costs the model elsewhere; the added term keeps the chosen ones likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOSSES = ("sigmoid", "ipo", "hinge")


@dataclass(frozen=True)
class PreferenceSettings:
    """The `[dpo]` loss settings."""

    beta: float = 0.1  # how far the policy may move from the reference (inverse temperature)
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo | hinge
    label_smoothing: float = 0.0  # sigmoid only: the share of pairs assumed mislabelled (cDPO)
    rpo_alpha: float = 0.0  # weight of the chosen answers' next-token loss added to the preference loss (RPO)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"[dpo] loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.beta > 0:
            raise ValueError("[dpo] beta must be positive")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError("[dpo] label_smoothing must be in [0, 0.5)")
        if self.rpo_alpha < 0:
            raise ValueError("[dpo] rpo_alpha must be 0 or more")


@dataclass(frozen=True)
class PreferenceStep:
    """One batch's loss and the figures a run logs (means over the batch)."""

    loss: Any  # a scalar tensor to backpropagate
    chosen_rewards: float  # beta * (policy - reference) log-prob of the chosen responses
    rejected_rewards: float
    margins: float  # chosen - rejected rewards
    accuracy: float  # share of pairs whose chosen reward is above the rejected one


def sequence_logps(logits: Any, targets: Any, mask: Any) -> Any:
    """Summed log-probabilities of `targets` (batch, seq) under next-token `logits` (batch, seq,
    vocab), counting only positions where `mask` is true (response tokens, not the prompt or
    padding). Computed in fp32."""
    import torch

    logps = torch.log_softmax(logits.float(), dim=-1)
    picked = torch.gather(logps, 2, targets.unsqueeze(-1)).squeeze(-1)
    return (picked * mask.float()).sum(dim=-1)


def preference_loss(
    policy_chosen: Any,
    policy_rejected: Any,
    reference_chosen: Any,
    reference_rejected: Any,
    settings: PreferenceSettings = PreferenceSettings(),
    chosen_tokens: Any = None,
    rejected_tokens: Any = None,
) -> PreferenceStep:
    """The loss of a batch of pairs from summed sequence log-probabilities (each of shape (batch,)).

    IPO takes the log-ratios per response token when the token counts are given (as TRL does, on
    the IPO authors' advice: the squared loss would otherwise grow with the answers' length)."""
    import torch
    import torch.nn.functional as F

    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    beta = settings.beta
    if settings.loss == "sigmoid":
        smoothing = settings.label_smoothing
        losses = -F.logsigmoid(beta * logits) * (1 - smoothing) - F.logsigmoid(-beta * logits) * smoothing
    elif settings.loss == "ipo":
        if chosen_tokens is not None and rejected_tokens is not None:
            logits = (policy_chosen - reference_chosen) / chosen_tokens.clamp(min=1) - (
                policy_rejected - reference_rejected
            ) / rejected_tokens.clamp(min=1)
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * logits)
    loss = losses.mean()
    if settings.rpo_alpha:
        if chosen_tokens is None:
            raise ValueError("rpo_alpha needs the chosen answers' token counts")
        loss = loss - settings.rpo_alpha * policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
    chosen = beta * (policy_chosen - reference_chosen).detach()
    rejected = beta * (policy_rejected - reference_rejected).detach()
    return PreferenceStep(
        loss=loss,
        chosen_rewards=float(chosen.mean()),
        rejected_rewards=float(rejected.mean()),
        margins=float((chosen - rejected).mean()),
        accuracy=float((chosen > rejected).float().mean()),
    )


@dataclass(frozen=True)
class PackedPair:
    """A prompt and one response as model input: token ids, the targets shifted by one, and the
    mask of targets that are response tokens."""

    input_ids: list[int]
    targets: list[int]
    response_mask: list[bool]
    prompt_cut: int  # prompt tokens cut from the left to fit `seq_len`


def pack(prompt: list[int], response: list[int], seq_len: int, pad_id: int) -> PackedPair:
    """`prompt + response` as `seq_len` inputs and targets; when too long, the prompt is cut from
    the left (its end, next to the response, is what matters most) and then the response from
    the right. Padding and prompt targets are masked out."""
    if not response:
        raise ValueError("a response needs at least one token")
    tokens = prompt + response
    cut = max(0, len(tokens) - (seq_len + 1))
    prompt_cut = min(cut, max(0, len(prompt) - 1))  # keep one prompt token to predict the first response token
    tokens = tokens[prompt_cut:]
    tokens = tokens[: seq_len + 1]
    first_response = len(prompt) - prompt_cut  # index in `tokens` of the first response token
    inputs, targets = tokens[:-1], tokens[1:]
    mask = [i + 1 >= first_response for i in range(len(targets))]
    padding = seq_len - len(inputs)
    return PackedPair(
        input_ids=inputs + [pad_id] * padding,
        targets=targets + [pad_id] * padding,
        response_mask=mask + [False] * padding,
        prompt_cut=prompt_cut,
    )
