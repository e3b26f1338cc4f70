"""Figures runs log beside their metrics (PNG artifacts, matplotlib without a display): a DPO run's
reward margins, and a data run's curation funnel, near-duplicate clusters, PII by type, source
mixture and counts (`jobs.data_runs`)."""

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


def cluster_figure(sizes: list[int]) -> Any:
    """How many near-duplicate clusters of each size (the kept copy and the copies dropped for it)."""
    from collections import Counter

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_size = Counter(sizes)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar(list(by_size), list(by_size.values()), width=0.8, color="#4c72b0")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("documents in the cluster (the kept one and its near duplicates)")
    axis.set_ylabel("clusters")
    axis.set_title(f"near-duplicate clusters: {len(sizes)}, {sum(sizes) - len(sizes)} documents dropped")
    return figure


def funnel_figure(report: dict[str, Any]) -> Any:
    """Documents into each curation stage, kept and dropped (stacked), with the top drop reasons."""
    import matplotlib.pyplot as plt

    stages = report.get("stages", [])
    names = [s["stage"] for s in stages]
    kept = [s.get("kept", 0) + s.get("modified", 0) for s in stages]
    dropped = [sum((s.get("dropped") or {}).values()) for s in stages]
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    axis.barh(names, kept, color="#4c72b0", label="kept (or modified)")
    axis.barh(names, dropped, left=kept, color="#dd8452", label="dropped")
    for i, stage in enumerate(stages):
        reasons = sorted((stage.get("dropped") or {}).items(), key=lambda kv: -kv[1])[:2]
        if reasons:
            axis.text(
                kept[i] + dropped[i], i, "  " + ", ".join(f"{r} {n}" for r, n in reasons), va="center", fontsize=8
            )
    axis.invert_yaxis()
    axis.set_xlabel("documents")
    axis.set_title(
        f"curation funnel: {report.get('in', sum(kept[:1]) + sum(dropped[:1]))} in, {report.get('out', '?')} out"
    )
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    return figure


def mixture_figure(shares: dict[str, float]) -> Any:
    """The share of training words each source has in a snapshot."""
    import matplotlib.pyplot as plt

    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(ordered) + 1.4))
    axis.barh([s for s, _ in ordered], [v for _, v in ordered], color="#55a868")
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of training words")
    axis.set_title("source mixture of the training split")
    return figure


def counts_figure(title: str, counts: dict[str, int]) -> Any:
    import matplotlib.pyplot as plt

    ordered = sorted(counts.items())
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.4))
    axis.barh([k for k, _ in ordered], [v for _, v in ordered], color="#4c72b0")
    axis.invert_yaxis()
    axis.set_title(title)
    return figure
