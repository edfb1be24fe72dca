"""Figures of adaptation, shared by TensorBoard logging and report folders.

Figures are read before tables: the episode axis has integer ticks only, titles wrap to fit
the figure, and the legend sits outside the axes so it hides no curve.

Example:
    >>> fig = adaptation_figure({"meta-policy (test)": [1.0, 2.0, 2.5], "random": [1.0, 1.0, 1.0]},
    ...                         "a title long enough to need a second line when the figure is only six inches wide")
    >>> [int(t) for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    [1, 2, 3]
    >>> save_figure(fig, None)  # closes it; a path writes it first
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from metaray.probe import METRIC_NAMES, describe, metric  # noqa: E402

_TITLE_CHARS = 60  # a 6-inch-wide title at the default font size


def adaptation_figure(curves: Mapping[str, Sequence[float]], title: str,
                      bands: Mapping[str, Sequence[Sequence[float]]] | None = None):
    """A line per curve: mean return of the i-th episode of a trial, with an optional
    shaded 95% confidence band per curve (``bands[label][i] = [low, high]``)."""
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=100)
    for label, curve in curves.items():
        style = "-o" if label.startswith("meta-policy") else "--"
        episodes = np.arange(1, len(curve) + 1)
        (line,) = ax.plot(episodes, curve, style, label=label, markersize=3)
        if bands and label in bands:
            low, high = zip(*bands[label])
            ax.fill_between(episodes, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("episode of the trial")
    ax.set_ylabel("mean episode return")
    ax.set_title("\n".join(textwrap.wrap(title, _TITLE_CHARS)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def returns_figure(samples: Mapping[str, Sequence[float]], unit: str):
    """Box plot of trial return per policy, every task (or seed) drawn as a point."""
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(samples)), 4), dpi=100)
    ax.boxplot(list(samples.values()), showmeans=True, showfliers=False)
    jitter = np.random.default_rng(0)
    for i, values in enumerate(samples.values(), start=1):
        ax.scatter(i + jitter.uniform(-0.15, 0.15, len(values)), values, s=4, alpha=0.3)
    ax.set_xticks(range(1, len(samples) + 1), list(samples), rotation=20, fontsize=8)
    ax.set_ylabel("trial return" if unit == "across tasks" else "mean trial return of a seed")
    ax.set_title("trial return per task" if unit == "across tasks" else "mean trial return per seed")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path | None) -> None:
    """Write ``fig`` to ``path`` (PNG) unless it is None, and free it."""
    if path is not None:
        fig.savefig(path)
    plt.close(fig)


def probe_figure(report: Mapping, title: str):
    """Decodability (R², accuracy for a discrete group) of each feature group along the trial:
    the trained memory, the untrained control and the Bayes ceiling (chance for a discrete
    group), with the episode boundaries marked.

    >>> fig = probe_figure({"steps": 30, "episode_starts": [0, 10, 20], "groups": {
    ...     "goal_cell": {"num_classes": 9, "probe": [0.5] * 30, "chance": [0.1] * 30},
    ...     "goal": {"num_features": 2, "probe": [0.5] * 30}}}, "three episodes of ten steps")
    >>> [int(t) for t in fig.axes[0].get_xticks()], [ax.get_ylabel() for ax in fig.axes]
    ([10, 20, 30], ['accuracy on held-out tasks', 'R² on held-out tasks'])
    >>> [text.get_text() for text in fig.axes[-1].get_legend().get_texts()]
    ['trained memory', 'chance (most frequent class)']
    >>> save_figure(fig, None)
    """
    groups = report["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups) + 2, 3.6), dpi=100, squeeze=False)
    styles = {"probe": ("-", "trained memory"), "untrained": (":", "untrained network, same inputs"),
              "input_only": ("-.", "current input only"), "bayes": ("--", "Bayes posterior"),
              "chance": ("k:", "chance (most frequent class)")}
    steps = np.arange(1, report["steps"] + 1)
    # Ticks on each episode's last step (thinned to about ten), so they line up with the boundaries.
    episode_ends = [*report["episode_starts"][1:], report["steps"]]
    ticks = episode_ends[::-(-len(episode_ends) // 10)]
    for ax, (name, curves) in zip(axes[0], groups.items()):
        for key, (style, label) in styles.items():
            if key in curves:
                ax.plot(steps, curves[key], style, label=label)
        for start in report["episode_starts"][1:]:
            ax.axvline(start + 0.5, color="grey", linewidth=0.5, alpha=0.5)
        ax.set_xticks(ticks)
        ax.set_ylim(min(-0.05, *(min(c) for k, c in curves.items() if k in styles)), 1.02)
        ax.set_xlabel("step of the trial (grey: episode boundaries)")
        ax.set_ylabel(f"{METRIC_NAMES[metric(curves)]} on held-out tasks")
        ax.set_title(f"{name} ({describe(curves)})", fontsize=10)
        ax.grid(alpha=0.3)
    # One legend for every panel's curves: a discrete group's chance line may be in any panel.
    lines = {line.get_label(): line for ax in axes[0] for line in ax.get_lines() if not line.get_label().startswith("_")}
    axes[0][-1].legend(lines.values(), lines.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       borderaxespad=0)
    fig.suptitle("\n".join(textwrap.wrap(title, _TITLE_CHARS + 20)), fontsize=10)
    fig.tight_layout()
    return fig
