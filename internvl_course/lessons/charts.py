"""Charts more than one place draws: learning curves, parameter bars, and counts made readable.

Lesson 01 draws its learning curves and a fusion model's parameters with these, lesson 02 the
parameters of InternVL2, and fine-tuning (``finetune.training``) its loss and learning rate, so
they live here once. Each ``plot_*`` function draws one matplotlib figure and returns it (in a
notebook it shows itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def human(n: float) -> str:
    """1234 -> "1.2 K", 2_205_000_000 -> "2.21 B": parameter and token counts at a glance."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g}"


def plot_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str = "",
                chance: float | None = None, xlabel: str = "training step") -> Figure:
    """Learning curves, one line per name; ``chance`` draws the guessing level for reference."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, lw=2)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"guessing ({chance:g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_parameter_counts(counts: Mapping[str, Mapping[str, int]], title: str = "Parameters",
                          log: bool = True) -> Figure:
    """Horizontal bars per component, one colour per model (``{model: {component: count}}``)."""
    models = list(counts)
    components = list(dict.fromkeys(c for per_model in counts.values() for c in per_model))
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(components) * max(1, len(models) * 0.7) + 1.2))
    for m, model in enumerate(models):
        values = [counts[model].get(c, 0) for c in components]
        positions = np.arange(len(components)) + m * height
        bars = ax.barh(positions, values, height=height, label=model)
        for bar, value in zip(bars, values):
            if value:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {human(value)}", va="center",
                        fontsize=8)
    ax.set_yticks(np.arange(len(components)) + height * (len(models) - 1) / 2, components)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("parameters" + (" (log scale)" if log else ""))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if len(models) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
