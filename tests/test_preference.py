"""Preference losses and packing, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.preference import PreferenceSettings, pack, preference_loss, sequence_logps


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_losses_equal_the_formulas_by_hand() -> None:
    pc, pr = torch.tensor([-10.0, -12.0]), torch.tensor([-14.0, -11.0])
    rc, rr = torch.tensor([-11.0, -12.5]), torch.tensor([-13.0, -11.5])
    logits = [(-10 + 14) - (-11 + 13), (-12 + 11) - (-12.5 + 11.5)]  # 2.0 and 0.0
    beta = 0.1
    dpo = preference_loss(pc, pr, rc, rr, PreferenceSettings(beta=beta))
    assert float(dpo.loss) == pytest.approx(sum(-_log_sigmoid(beta * z) for z in logits) / 2)
    smooth = preference_loss(pc, pr, rc, rr, PreferenceSettings(beta=beta, label_smoothing=0.2))
    by_hand = sum(-_log_sigmoid(beta * z) * 0.8 - _log_sigmoid(-beta * z) * 0.2 for z in logits) / 2
    assert float(smooth.loss) == pytest.approx(by_hand)
    ipo = preference_loss(pc, pr, rc, rr, PreferenceSettings(beta=beta, loss="ipo"))
    assert float(ipo.loss) == pytest.approx(sum((z - 1 / (2 * beta)) ** 2 for z in logits) / 2)
    hinge = preference_loss(pc, pr, rc, rr, PreferenceSettings(beta=beta, loss="hinge"))
    assert float(hinge.loss) == pytest.approx(sum(max(0.0, 1 - beta * z) for z in logits) / 2)
    # rewards: beta * (policy - reference); chosen [0.1, 0.05], rejected [-0.1, 0.05]
    assert dpo.chosen_rewards == pytest.approx(0.075) and dpo.rejected_rewards == pytest.approx(-0.025)
    assert dpo.margins == pytest.approx(0.1) and dpo.accuracy == pytest.approx(0.5)
    with pytest.raises(ValueError, match="loss must be one of"):
        PreferenceSettings(loss="kto")


def test_the_loss_pulls_the_policy_towards_the_chosen_response() -> None:
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    step = preference_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]))
    step.loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


def test_sequence_logps_sum_only_the_masked_targets() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    targets = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[False, True, True]])
    assert float(sequence_logps(logits, targets, mask)[0]) == pytest.approx(math.log(0.8) + math.log(0.6))


def test_packing_masks_the_prompt_and_cuts_it_from_the_left() -> None:
    packed = pack([1, 2, 3], [7, 8], seq_len=8, pad_id=0)
    assert packed.input_ids == [1, 2, 3, 7, 0, 0, 0, 0] and packed.targets == [2, 3, 7, 8, 0, 0, 0, 0]
    assert packed.response_mask == [False, False, True, True, False, False, False, False] and packed.prompt_cut == 0
    long = pack(list(range(10, 20)), [7, 8], seq_len=6, pad_id=0)
    assert long.prompt_cut == 5 and long.input_ids == [15, 16, 17, 18, 19, 7]
    assert long.targets == [16, 17, 18, 19, 7, 8] and long.response_mask == [False] * 4 + [True] * 2
