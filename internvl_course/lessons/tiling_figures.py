"""Lesson 03's figures and tables: dynamic tiling, the token budget, and pixel shuffle.

``demo_picture`` draws pictures of telling shapes (lesson 02 sends one through the model too);
the ``plot_*`` functions show the tile grid InternVL2 cuts a picture into, the tiles, how many
image tokens a picture costs, and which patches pixel shuffle merges into one token. Each draws
one matplotlib figure and returns it (in a notebook it shows itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from internvl_course.model.preprocess import choose_grid, num_image_tokens, tokens_per_tile


def demo_picture(kind: str, seed: int = 0, huge_width: int = 6000) -> Image.Image:
    """Pictures of telling shapes, drawn by ``scenes.render``: "portrait" (1:2, two plates
    stacked), "panorama" (6:1, a row of six plates), "tiny" (64x48), "huge" (3:2,
    ``huge_width`` wide), "square" (1000x1000)."""
    from internvl_course.data.drawing import Piece, Scene, render

    def plate(k: int, size: int) -> Image.Image:
        colour = ("red", "green", "blue", "yellow", "purple", "orange")[(seed + k) % 6]
        shape = ("circle", "square", "triangle", "star")[k % 4]
        scene = Scene(pieces=(Piece(shape, colour, count=1 + k % 3),), tableware=("pair of chopsticks", "spoon"))
        return render(scene, seed=seed * 100 + k, size=size)

    if kind == "portrait":
        canvas = Image.new("RGB", (700, 1400))
        for k in range(2):
            canvas.paste(plate(k, 700), (0, 700 * k))
        return canvas
    if kind == "panorama":
        canvas = Image.new("RGB", (3000, 500))
        for k in range(6):
            canvas.paste(plate(k, 500), (500 * k, 0))
        return canvas
    if kind == "tiny":
        return plate(0, 448).resize((64, 48), Image.Resampling.LANCZOS)
    if kind == "huge":
        return plate(1, 1024).resize((huge_width, huge_width * 2 // 3), Image.Resampling.BICUBIC)
    if kind == "square":
        return plate(2, 1000)
    raise ValueError(f"unknown kind {kind!r}: portrait, panorama, tiny, huge or square")



def _display_copy(image: Image.Image, longest: int = 900) -> Image.Image:
    """A copy small enough to draw quickly; axes keep the original pixel coordinates."""
    if max(image.size) <= longest:
        return image
    scale = longest / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BILINEAR)


def plot_tile_grid(image: Image.Image, max_num: int = 12, use_thumbnail: bool = True, image_size: int = 448,
                   ax: plt.Axes | None = None, name: str = "") -> Figure:
    """The picture with the grid InternVL2 cuts it into, each tile numbered in reading order."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 5))
    width, height = image.size
    cols, rows = choose_grid(width, height, max_num=max_num, image_size=image_size)
    ax.imshow(_display_copy(image), extent=(0, width, height, 0), interpolation="bilinear")
    for c in range(1, cols):
        ax.axvline(c * width / cols, color="yellow", lw=2)
    for r in range(1, rows):
        ax.axhline(r * height / rows, color="yellow", lw=2)
    for k in range(cols * rows):
        r, c = divmod(k, cols)
        ax.text((c + 0.5) * width / cols, (r + 0.5) * height / rows, str(k + 1), color="white", fontsize=12,
                ha="center", va="center", weight="bold", bbox=dict(facecolor="black", alpha=0.5, lw=0))
    tiles = cols * rows + (1 if use_thumbnail and cols * rows > 1 else 0)
    tokens = num_image_tokens(width, height, max_num=max_num, image_size=image_size, use_thumbnail=use_thumbnail)
    thumbnail = " + thumbnail" if tiles > cols * rows else ""
    ax.set_title(f"{name + ': ' if name else ''}{width}x{height} -> {cols}x{rows}{thumbnail}\n"
                 f"{tiles} tile{'s' * (tiles > 1)}, {tokens} tokens (max_num={max_num})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.figure


def plot_tiling_gallery(pictures: Mapping[str, Image.Image], max_num: int = 12, use_thumbnail: bool = True) -> Figure:
    """``plot_tile_grid`` for several pictures side by side."""
    columns = min(len(pictures), 2)
    rows = math.ceil(len(pictures) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(pictures):]:
        ax.axis("off")
    for ax, (name, picture) in zip(axes.flat, pictures.items()):
        plot_tile_grid(picture, max_num, use_thumbnail, ax=ax, name=name)
    fig.tight_layout()
    return fig


def plot_tiles(tiles: Sequence[Image.Image], grid: tuple[int, int]) -> Figure:
    """The tiles themselves, laid out as they were cut, and the thumbnail (if any) on the right."""
    cols, rows = grid
    has_thumbnail = len(tiles) > cols * rows
    fig, axes = plt.subplots(rows, cols + has_thumbnail, figsize=(2.2 * (cols + has_thumbnail), 2.3 * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, tile in enumerate(tiles[:cols * rows]):
        ax = axes[k // cols, k % cols]
        ax.imshow(tile)
        ax.set_title(f"tile {k + 1}", fontsize=9)
    if has_thumbnail:
        axes[0, cols].imshow(tiles[-1])
        axes[0, cols].set_title(f"tile {len(tiles)}: thumbnail", fontsize=9)
    fig.tight_layout()
    return fig


def plot_token_budget(max_nums: Sequence[int] = (1, 6, 12), heatmap_max_num: int = 12) -> Figure:
    """Left: tokens against the side of a square picture. Right: tiles for every width x height.

    Both come from ``num_image_tokens``, pure arithmetic, so thousands of sizes cost nothing.
    """
    fig, (curve, heat) = plt.subplots(1, 2, figsize=(13, 4.6))
    sides = np.unique(np.geomspace(16, 8000, 400).round().astype(int))
    for k, max_num in enumerate(sorted(max_nums, reverse=True)):  # thick to thin, so overlaps stay visible
        curve.step(sides, [num_image_tokens(s, s, max_num=max_num) for s in sides], where="post",
                   label=f"max_num={max_num}", lw=max(1.5, 5 - 1.5 * k))
    curve.set_xscale("log")
    curve.set_xlabel("side of a square picture, px (log scale)")
    curve.set_ylabel("image tokens")
    curve.set_title("square pictures: more pixels, more tiles (the tie rule)")
    curve.grid(alpha=0.3)
    curve.legend()

    axis = np.unique(np.geomspace(16, 8000, 160).round().astype(int))
    tiles = np.array([[num_image_tokens(w, h, max_num=heatmap_max_num) // tokens_per_tile() for w in axis]
                      for h in axis])
    shown = heat.pcolormesh(axis, axis, tiles, cmap="viridis", shading="nearest")
    heat.set_xscale("log")
    heat.set_yscale("log")
    heat.set_xlabel("width, px (log scale)")
    heat.set_ylabel("height, px (log scale)")
    heat.set_title(f"tiles (incl. thumbnail), max_num={heatmap_max_num}: shape matters more than size")
    fig.colorbar(shown, ax=heat, label=f"tiles (x {tokens_per_tile()} tokens)")
    fig.tight_layout()
    return fig


def shuffled_patch_ids(side: int, version: str = "v2") -> np.ndarray:
    """[side/2, side/2, 4]: the patch numbers packed into each token's channels, found by running
    ``pixel_shuffle`` itself (ratio 0.5) on a grid whose only feature is the patch's own number."""
    from internvl_course.modelcode.modeling_internvl_chat import pixel_shuffle

    ids = torch.arange(side * side, dtype=torch.float32).reshape(1, side, side, 1)
    return pixel_shuffle(ids, 0.5, version)[0].long().numpy()


def shuffle_destinations(side: int, version: str = "v2") -> np.ndarray:
    """[side, side]: the token index (row-major) each patch ends up in."""
    shuffled = shuffled_patch_ids(side, version)
    destination = np.empty(side * side, dtype=int)
    for token, patch_ids in enumerate(shuffled.reshape(-1, shuffled.shape[-1])):
        destination[patch_ids] = token
    return destination.reshape(side, side)


def plot_pixel_shuffle(side: int = 8, version: str = "v2") -> Figure:
    """Left: the patch grid coloured by the token each patch goes to. Right: the token grid,
    each token listing the patches packed into its channels (in channel order)."""
    destination = shuffle_destinations(side, version)
    contents = shuffled_patch_ids(side, version)
    out = side // 2
    colours = plt.get_cmap("tab20")(np.arange(out * out) % 20)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6))
    left.imshow(colours[destination], interpolation="nearest")
    for r in range(side):
        for c in range(side):
            left.text(c, r, str(r * side + c), ha="center", va="center", fontsize=8)
    left.set_title(f"{side}x{side} patches (the number is the patch), colour = its token")
    right.imshow(colours[np.arange(out * out).reshape(out, out)], interpolation="nearest")
    for r in range(out):
        for c in range(out):
            a, b, d, e = contents[r, c]
            right.text(c, r, f"{a},{b}\n{d},{e}", ha="center", va="center", fontsize=8)
    right.set_title(f"{out}x{out} tokens ({version}): channels hold these patches")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_shuffle_versions(image: Image.Image, patch: int = 14, size: int = 448) -> Figure:
    """What the token grid looks like after pixel shuffle v2 (InternVL2) and v1 (InternVL 1.5).

    Each patch is replaced by its mean colour, so a 448 tile becomes a 32x32 colour grid; after
    the shuffle each token's first three channels are the colour of its top-left patch, drawn
    where the token sits. v2 keeps the picture upright; v1 leaves it transposed, the mistake a
    model trained with one version makes when fed the other.
    """
    from internvl_course.modelcode.modeling_internvl_chat import pixel_shuffle

    tile = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.tensor(np.asarray(tile), dtype=torch.float32) / 255
    grid = size // patch
    patch_colours = pixels.reshape(grid, patch, grid, patch, 3).mean((1, 3))[None]  # [1, 32, 32, 3]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    axes[0].imshow(patch_colours[0].numpy(), interpolation="nearest")
    axes[0].set_title(f"{grid}x{grid} patches (mean colour)")
    for ax, version in zip(axes[1:], ("v2", "v1")):
        tokens = pixel_shuffle(patch_colours, 0.5, version)[0]
        ax.imshow(tokens[..., :3].numpy(), interpolation="nearest")
        ax.set_title(f"{version}: {tokens.shape[0]}x{tokens.shape[1]} tokens"
                     + (" (InternVL2: upright)" if version == "v2" else " (transposed!)"))
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def token_table(sizes: Sequence[tuple[int, int]], max_nums: Sequence[int] = (6, 12)) -> str:
    """Grid, tiles (thumbnail included) and image tokens of each size for each max_num, as text."""
    lines = [f"{'picture':>11} {'max_num':>8} {'grid':>6} {'tiles':>6} {'tokens':>7}"]
    for width, height in sizes:
        for max_num in max_nums:
            cols, rows = choose_grid(width, height, max_num=max_num)
            tokens = num_image_tokens(width, height, max_num=max_num)
            lines.append(f"{f'{width}x{height}':>11} {max_num:>8} {f'{cols}x{rows}':>6} "
                         f"{tokens // tokens_per_tile():>6} {tokens:>7}")
    return "\n".join(lines)
