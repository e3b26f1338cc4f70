"""Figures a training run logs beside its metrics (PNG artifacts, matplotlib without a display)."""

from __future__ import annotations

from typing import Any

import numpy as np


def margins_figure(policy: np.ndarray, reference: np.ndarray, beta: float) -> Any:
    """Held-out pairs' log-probability margins (chosen minus rejected answer) under the tuned policy
    and under the reference it started from: DPO should move the policy's to the right of the
    reference's. The title gives the implicit reward's accuracy and mean margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, theirs = policy[:, 0] - policy[:, 1], reference[:, 0] - reference[:, 1]
    rewards = beta * (ours - theirs)
    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(np.concatenate([ours, theirs]), bins=min(30, max(5, len(ours) // 2)))
    axis.hist(theirs, bins=bins, alpha=0.6, color="#8c8c8c", label="reference (the init model)")
    axis.hist(ours, bins=bins, alpha=0.6, color="#4c72b0", label="policy (after DPO)")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("log p(chosen) - log p(rejected), held-out pairs")
    axis.set_ylabel("pairs")
    accuracy = float(np.mean((rewards > 0) + 0.5 * (rewards == 0))) if len(rewards) else float("nan")
    axis.set_title(f"reward margins: accuracy {accuracy:.2f}, mean {float(np.mean(rewards)):.3f} (beta {beta:g})")
    axis.legend(fontsize=8)
    return figure
