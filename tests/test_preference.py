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
    # RPO: plus rpo_alpha times the chosen answers' next-token loss, per token over the batch
    rpo = preference_loss(pc, pr, rc, rr, PreferenceSettings(beta=beta, rpo_alpha=0.5), torch.tensor([4.0, 6.0]),
                          torch.tensor([5.0, 5.0]))  # fmt: skip
    assert float(rpo.loss) == pytest.approx(float(dpo.loss) + 0.5 * (10 + 12) / (4 + 6))
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


@pytest.mark.parametrize(("loss", "rpo_alpha"), [("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("sigmoid", 0.5)])
def test_losses_equal_trls_on_the_same_log_probs(loss: str, rpo_alpha: float) -> None:
    """TRL's DPOTrainer computes its loss inside `_compute_loss` (there is no standalone function):
    it is run here on the same per-token log-probabilities, the model's forward replaced by them.
    RPO is TRL's `loss_type=[loss, "sft"]` with `loss_weights=[1, rpo_alpha]`."""
    from collections import defaultdict
    from types import SimpleNamespace

    trl = pytest.importorskip("trl")
    torch.manual_seed(0)
    pairs, length, prompt = 3, 7, 3
    completion = torch.zeros(2 * pairs, length + 1, dtype=torch.long)
    lengths = [4, 2, 3, 1, 4, 2]  # chosen rows first, then rejected, as TRL batches them
    for row, n in enumerate(lengths):
        completion[row, prompt : prompt + n] = 1
    shift = completion[:, 1:].bool()
    per_token = -torch.rand(2 * pairs, length) * 3 * shift  # zero outside the answers, as TRL's fused head gives
    reference = -torch.rand(2 * pairs) * 6
    forward = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token), is_top1=torch.zeros_like(shift))  # fmt: skip
    model = SimpleNamespace(training=True)
    trainer = SimpleNamespace(
        model=model, accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss, "sft"] if rpo_alpha else [loss], loss_weights=[1.0, rpo_alpha] if rpo_alpha else [1.0],
        beta=0.1, label_smoothing=0.0, use_weighting=False,
        rpo_alpha=None, _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0,
        _tp_size=1, args=SimpleNamespace(rpo_alpha=None, use_weighting=False),
    )  # fmt: skip
    inputs = {"input_ids": torch.ones(2 * pairs, length + 1, dtype=torch.long), "completion_mask": completion,
              "attention_mask": torch.ones(2 * pairs, length + 1, dtype=torch.long),
              "ref_chosen_logps": reference[:pairs], "ref_rejected_logps": reference[pairs:]}  # fmt: skip
    theirs = trl.DPOTrainer._compute_loss(trainer, lambda **kw: forward, inputs, False)
    sums = per_token.sum(dim=1)
    tokens = shift.sum(dim=1).float()
    ours = preference_loss(sums[:pairs], sums[pairs:], reference[:pairs], reference[pairs:],
                           PreferenceSettings(beta=0.1, loss=loss, rpo_alpha=rpo_alpha), tokens[:pairs],
                           tokens[pairs:])  # fmt: skip
    assert float(ours.loss) == pytest.approx(float(theirs), rel=1e-5)
