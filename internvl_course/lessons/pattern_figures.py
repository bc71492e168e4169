"""Lesson 01's figures: the design patterns of ``internvl_course.lessons.patterns``, drawn.

Each ``plot_*`` function draws one matplotlib figure and returns it (in a notebook it shows
itself): the generated pictures, pictures and captions in one shared space, their similarity,
where each word's attention goes, and the levels of a hierarchical model. The learning curves
and parameter bars the lesson also draws are in ``internvl_course.lessons.charts``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from internvl_course.lessons import patterns


def plot_pictures(images: torch.Tensor, titles: Sequence[str], columns: int = 8) -> Figure:
    """A grid of generated pictures [n, 3, S, S] (values 0..1) with a caption under each."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


MARKERS = {"circle": "o", "square": "s", "triangle": "^", "cross": "P"}


def plot_shared_space(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], data: patterns.CaptionedPictures) -> Figure:
    """Pictures (small marks) and class captions (big outlined marks) in 2-D, one panel per stage.

    Colour is the object's colour, the marker its shape, so a caption sitting on a cloud of
    pictures with the same colour and marker means that concept is aligned.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.2), squeeze=False)
    palette = np.array(list(patterns.PALETTE.values()))
    captions, _ = patterns.class_captions()
    for ax, (title, (image_xy, text_xy)) in zip(axes[0], panels.items()):
        for s, shape in enumerate(patterns.SHAPE_NAMES):
            chosen = (data.shapes == s).numpy()
            ax.scatter(image_xy[chosen, 0], image_xy[chosen, 1], c=palette[data.colours[chosen].numpy()],
                       marker=MARKERS[shape], s=14, alpha=0.35, linewidths=0)
        for k, caption in enumerate(captions):
            colour, shape = divmod(k, len(patterns.SHAPE_NAMES))
            ax.scatter(*text_xy[k], c=[palette[colour]], marker=MARKERS[patterns.SHAPE_NAMES[shape]], s=170,
                       edgecolors="black", linewidths=1.2)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker=m, ls="", color="grey", label=s) for s, m in MARKERS.items()]
    handles.append(plt.Line2D([], [], marker="o", ls="", mfc="white", mec="black", ms=11, label="caption"))
    axes[0, -1].legend(handles=handles, loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_similarity(matrices: Mapping[str, np.ndarray], labels: Sequence[str]) -> Figure:
    """Mean cosine similarity of pictures of class i (rows) with the caption of class j (columns)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(6.2 * len(matrices), 5.8), squeeze=False,
                             layout="constrained")
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        shown = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("caption")
        ax.set_ylabel("pictures")
    fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    return fig


def plot_attention(image: torch.Tensor, weights: torch.Tensor, words: Sequence[str]) -> Figure:
    """The picture, then where each word's attention goes (brighter = more attention)."""
    fig, axes = plt.subplots(1, len(words) + 1, figsize=(3.2 * (len(words) + 1), 3.4))
    picture = image.permute(1, 2, 0).numpy()
    axes[0].imshow(picture, interpolation="nearest")
    axes[0].set_title("picture (patches of 4x4 px)")
    size = picture.shape[0]
    top = weights.max().item()  # one scale for all words, so a word that finds nothing looks dark
    for ax, word, weight in zip(axes[1:], words, weights):
        ax.imshow(picture, interpolation="nearest", alpha=0.35)
        ax.imshow(weight.numpy(), cmap="magma", alpha=0.75, extent=(0, size, size, 0), interpolation="nearest",
                  vmin=0, vmax=top)
        ax.set_title(f'query word "{word}" (max weight {weight.max():.2f})', fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_hierarchy(image: torch.Tensor, levels: Mapping[str, torch.Tensor], colour: str = "red") -> Figure:
    """Picture -> level 1 edges -> level 2 coarse map of one colour -> level 3 "which colours are here"."""
    k = patterns.COLOUR_NAMES.index(colour)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title("picture")
    axes[1].imshow(levels["edges"][0].numpy(), cmap="gray")
    axes[1].set_title("level 1: edges (Sobel)")
    axes[2].imshow(levels["regions"][0, k].numpy(), cmap="Reds", vmin=0, vmax=1)
    rows, cols = levels["regions"].shape[-2:]
    axes[2].set_title(f"level 2: where is {colour}? ({rows}x{cols} regions)")
    for ax in axes[:3]:
        ax.axis("off")
    present = levels["present"][0].numpy()
    axes[3].bar(patterns.COLOUR_NAMES, present, color=list(patterns.PALETTE.values()))
    axes[3].set_ylim(0, 1)
    axes[3].set_title("level 3: what is in the picture")
    axes[3].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig
