"""The course's figures: every plot a lesson shows, so the notebooks stay a call and a sentence.

Each ``plot_*`` function draws one matplotlib figure and returns it (in a notebook it shows
itself). Lesson 1 pictures the design patterns (``internvl_course.lessons.patterns``); lessons 2 and 3
picture InternVL2: a shape trace of the architecture, parameter counts, the model family, the
tile grid on a picture, the token budget, and which patches pixel shuffle merges into a token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from internvl_course.lessons import patterns
from internvl_course.model.preprocess import choose_grid, load_image, num_image_tokens, tokens_per_tile

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def human(n: float) -> str:
    """1234 -> "1.2 K", 2_205_000_000 -> "2.21 B": parameter and token counts at a glance."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g}"


def _display_copy(image: Image.Image, longest: int = 900) -> Image.Image:
    """A copy small enough to draw quickly; axes keep the original pixel coordinates."""
    if max(image.size) <= longest:
        return image
    scale = longest / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------------------------------
# Lesson 1: design patterns
# ---------------------------------------------------------------------------------------------


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
    palette = np.array(list(patterns.COLOURS.values()))
    captions, _ = patterns.class_captions()
    for ax, (title, (image_xy, text_xy)) in zip(axes[0], panels.items()):
        for s, shape in enumerate(patterns.SHAPES):
            chosen = (data.shapes == s).numpy()
            ax.scatter(image_xy[chosen, 0], image_xy[chosen, 1], c=palette[data.colours[chosen].numpy()],
                       marker=MARKERS[shape], s=14, alpha=0.35, linewidths=0)
        for k, caption in enumerate(captions):
            colour, shape = divmod(k, len(patterns.SHAPES))
            ax.scatter(*text_xy[k], c=[palette[colour]], marker=MARKERS[patterns.SHAPES[shape]], s=170,
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
    axes[3].bar(patterns.COLOUR_NAMES, present, color=list(patterns.COLOURS.values()))
    axes[3].set_ylim(0, 1)
    axes[3].set_title("level 3: what is in the picture")
    axes[3].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


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


# ---------------------------------------------------------------------------------------------
# Lesson 2: the architecture, traced and counted
# ---------------------------------------------------------------------------------------------


@dataclass
class ShapeTrace:
    """What happens to one picture and one question on their way through InternVL2."""

    steps: list[tuple[str, tuple[int, ...], str, str]] = field(default_factory=list)  # (step, shape, note, part)
    grid: tuple[int, int] = (1, 1)
    tiles: int = 0
    patches_per_tile: int = 0
    tokens_per_tile: int = 0
    image_tokens: int = 0
    prompt_tokens: int = 0
    max_diff_to_extract_feature: float = 0.0  # our step-by-step trace vs the model's own method
    next_token: str = ""
    prompt: str = ""  # the prompt with its run of <IMG_CONTEXT> shortened, for reading
    pixel_values: torch.Tensor | None = field(default=None, repr=False)  # the tiles, for a forward pass
    input_ids: torch.Tensor | None = field(default=None, repr=False)  # the prompt, for a forward pass

    def add(self, part: str, step: str, tensor_or_shape: torch.Tensor | tuple[int, ...], note: str = "") -> None:
        """``part``: "input", "ViT", "MLP" or "LLM", the three parts of ViT-MLP-LLM and what feeds them."""
        shape = tuple(tensor_or_shape.shape) if isinstance(tensor_or_shape, torch.Tensor) else tensor_or_shape
        self.steps.append((step, shape, note, part))

    def __str__(self) -> str:
        width = max(len(s) for s, *_ in self.steps)
        return "\n".join(f"{part:<6}{s:<{width}}  {str(list(shape)):<22} {note}" for s, shape, note, part in self.steps)


@torch.no_grad()
def trace_shapes(model, tokenizer, image: Image.Image, question: str = "What is on the plate?",
                 max_num: int = 6) -> ShapeTrace:
    """Run ``image`` and ``question`` through ``model`` one stage at a time, recording each shape.

    The stages are the model's own modules called in the order ``extract_feature`` and
    ``chat`` call them, so the trace checks itself: the image tokens must equal
    ``model.extract_feature`` (``max_diff_to_extract_feature``).
    """
    from internvl_course.modelcode.conversation import get_conv_template
    from internvl_course.modelcode.modeling_internvl_chat import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, pixel_shuffle

    vision, llm = model.vision_model, model.language_model
    device, dtype = vision.embeddings.patch_embedding.weight.device, vision.embeddings.patch_embedding.weight.dtype
    size, patch = model.config.force_image_size, model.config.vision_config.patch_size
    trace = ShapeTrace()
    trace.add("input", "picture", (image.height, image.width, 3), "height x width x RGB")
    trace.grid = choose_grid(image.width, image.height, max_num=max_num, image_size=size)
    pixel_values = load_image(image, input_size=size, max_num=max_num).to(device, dtype)
    trace.tiles = len(pixel_values)
    extra = " + thumbnail" if trace.tiles > 1 else ""
    trace.add("input", "tiles (dynamic tiling)", pixel_values,
              f"{trace.grid[0]}x{trace.grid[1]} grid{extra}, {size} px each")
    patches = vision.embeddings.patch_embedding(pixel_values)
    trace.add("ViT", f"patch embedding ({patch}x{patch} conv)", patches,
              f"{size}/{patch} = {patches.shape[-1]} patches a side")
    tokens = vision.embeddings(pixel_values)
    trace.patches_per_tile = patches.shape[-1] * patches.shape[-2]
    trace.add("ViT", "+ class token, + positions", tokens, f"1 + {trace.patches_per_tile} tokens a tile")
    hidden = vision.encoder(tokens).last_hidden_state
    trace.add("ViT", f"InternViT ({len(vision.encoder.layers)} layers)", hidden, "same shape, contextualised")
    hidden = hidden[:, 1:]
    trace.add("ViT", "drop the class token", hidden)
    side = int(hidden.shape[1] ** 0.5)
    grid = hidden.reshape(len(hidden), side, side, -1)
    trace.add("MLP", "back to a grid", grid)
    shuffled = pixel_shuffle(grid, model.downsample_ratio, model.ps_version)
    trace.add("MLP", f"pixel shuffle ({model.ps_version}, x{model.downsample_ratio})", shuffled,
              "2x2 patches -> 1 token, 4x wider")
    flat = shuffled.reshape(len(shuffled), -1, shuffled.shape[-1])
    trace.tokens_per_tile = flat.shape[1]
    features = model.mlp1(flat)
    trace.add("MLP", "mlp1 (LayerNorm, Linear, GELU, Linear)", features, "into the LLM's width")
    trace.max_diff_to_extract_feature = (features - model.extract_feature(pixel_values)).abs().max().item()

    template = get_conv_template(model.template)
    template.system_message = model.system_message
    template.append_message(template.roles[0], "<image>\n" + question)
    template.append_message(template.roles[1], None)
    trace.image_tokens = trace.tokens_per_tile * trace.tiles
    prompt = template.get_prompt().replace(
        "<image>", IMG_START_TOKEN + IMG_CONTEXT_TOKEN * trace.image_tokens + IMG_END_TOKEN, 1)
    trace.prompt = prompt.replace(IMG_CONTEXT_TOKEN * trace.image_tokens,
                                  f"{IMG_CONTEXT_TOKEN} x {trace.image_tokens}")
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    trace.pixel_values, trace.input_ids = pixel_values, input_ids
    trace.prompt_tokens = input_ids.shape[1]
    trace.add("LLM", "prompt token ids", input_ids, f"{trace.image_tokens} of them are {IMG_CONTEXT_TOKEN}")
    embeds = llm.get_input_embeddings()(input_ids)
    trace.add("LLM", "token embeddings", embeds)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    merged = model.merge_image_features(embeds, input_ids, features)
    trace.add("LLM", f"{IMG_CONTEXT_TOKEN} slots filled", merged, "image tokens in place of the placeholders")
    logits = llm(inputs_embeds=merged).logits
    trace.next_token = tokenizer.decode([int(logits[0, -1].argmax())])
    trace.add("LLM", f"{llm_name(model)} ({len(llm.model.layers)} layers) -> logits", logits,
              "a score for every word of the vocabulary")
    return trace


PART_COLOURS = {"input": "#ffffff", "ViT": "#e6f2e0", "MLP": "#fdecd2", "LLM": "#e1eaf7"}


def plot_shape_trace(trace: ShapeTrace, title: str = "One picture through InternVL2: ViT, MLP, LLM") -> Figure:
    """The shape trace as a table figure, one row per stage, coloured by the part it belongs to."""
    rows = [[part, step, " x ".join(str(d) for d in shape), note] for step, shape, note, part in trace.steps]
    fig, ax = plt.subplots(figsize=(12, 0.3 * len(rows) + 0.7))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["part", "stage", "shape", "note"], loc="center", cellLoc="left",
                     colLoc="left", colWidths=[0.07, 0.33, 0.2, 0.4])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.3)
    for (row, _), cell in table.get_celld().items():
        cell.set_facecolor("#d5dbe3" if row == 0 else PART_COLOURS[rows[row - 1][0]])
        if row == 0:
            cell.set_text_props(weight="bold")
    ax.set_title(title, fontsize=12)
    fig.tight_layout()
    return fig


def llm_name(model) -> str:
    """The LLM's family name from its class: "InternLM2", "Qwen2", "Phi3", "Llama"."""
    return type(model.language_model).__name__.removesuffix("ForCausalLM")


def internvl_parameter_counts(model, detail: bool = False, trainable_only: bool = False) -> dict[str, int]:
    """Parameters of InternViT, mlp1 and the LLM (``detail``: embeddings, layers, head apart).

    Works on the meta device, where a 2.2 B model costs no memory: only shapes are counted. The
    LLM's rows carry its family name (InternLM2 for InternVL2-2B); an output head that shares the
    token embeddings' matrix (tied, as in some Qwen2 models) counts as 0.
    """
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    name = llm_name(model)
    if not detail:
        return {"InternViT": count(model.vision_model), "mlp1": count(model.mlp1), name: count(model.language_model)}
    llm = model.language_model
    embeddings, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    return {
        "InternViT: patch + position embedding": count(model.vision_model.embeddings),
        "InternViT: encoder layers": count(model.vision_model.encoder),
        "mlp1": count(model.mlp1),
        f"{name}: token embeddings": count(embeddings),
        f"{name}: decoder layers + norm": count(llm.model.layers) + count(llm.model.norm),
        f"{name}: output head": 0 if head.weight is embeddings.weight else count(head),
    }


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


def plot_trainable(stages: Mapping[str, Mapping[str, tuple[int, int]]]) -> Figure:
    """Per training stage and component, trainable (solid) vs frozen (light) parameters.

    ``stages``: {stage name: {component: (trainable, total)}}.
    """
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.6), squeeze=False, sharey=True)
    for ax, (stage, components) in zip(axes[0], stages.items()):
        names = list(components)
        trainable = np.array([components[n][0] for n in names], dtype=float)
        total = np.array([components[n][1] for n in names], dtype=float)
        ax.bar(names, total, color="#d0d7e1", label="frozen")
        ax.bar(names, trainable, color="#2f6db3", label="trainable")
        share = trainable.sum() / total.sum()
        ax.set_title(f"{stage}\ntrainable: {human(trainable.sum())} of {human(total.sum())} ({share:.1%})", fontsize=10)
        ax.set_yscale("log")
        ax.set_ylim(1e4, total.max() * 3)
    axes[0, 0].set_ylabel("parameters (log scale)")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


#: InternVL2 family: total parameters (B) and MMBench-EN test / OCRBench / DocVQA test (FACTS.md
#: section 4, from the InternVL2 model cards and blog); None where no number was published there.
INTERNVL2_FAMILY: tuple[dict, ...] = (
    dict(name="InternVL2-1B", params_b=0.9, vision="InternViT-300M-448px", llm="Qwen2-0.5B-Instruct",
         mmbench=65.4, ocrbench=754, docvqa=81.7),
    dict(name="InternVL2-2B", params_b=2.2, vision="InternViT-300M-448px", llm="internlm2-chat-1.8b",
         mmbench=73.2, ocrbench=784, docvqa=86.9),
    dict(name="InternVL2-4B", params_b=4.2, vision="InternViT-300M-448px", llm="Phi-3-mini-128k-instruct",
         mmbench=78.6, ocrbench=788, docvqa=89.2),
    dict(name="InternVL2-8B", params_b=8.1, vision="InternViT-300M-448px", llm="internlm2.5-7b-chat",
         mmbench=81.7, ocrbench=None, docvqa=91.6),
    dict(name="InternVL2-26B", params_b=25.5, vision="InternViT-6B-448px-V1-5", llm="internlm2-chat-20b",
         mmbench=None, ocrbench=None, docvqa=None),
    dict(name="InternVL2-40B", params_b=40.1, vision="InternViT-6B-448px-V1-5", llm="Nous-Hermes-2-Yi-34B",
         mmbench=86.8, ocrbench=837, docvqa=93.9),
    dict(name="InternVL2-Llama3-76B", params_b=76.3, vision="InternViT-6B-448px-V1-5",
         llm="Hermes-2-Theta-Llama-3-70B", mmbench=86.5, ocrbench=839, docvqa=94.1),
)


def family_table() -> str:
    """The family as a text table (a dash where no number was published)."""
    header = f"{'model':<21}{'params':>7}  {'vision':<25}{'LLM':<28}{'MMBench':>8}{'OCRBench':>9}{'DocVQA':>7}"
    lines = [header, "-" * len(header)]
    for m in INTERNVL2_FAMILY:
        scores = [f"{m[k]:>{w}}" if m[k] is not None else f"{'-':>{w}}"
                  for k, w in (("mmbench", 8), ("ocrbench", 9), ("docvqa", 7))]
        lines.append(f"{m['name']:<21}{m['params_b']:>6}B  {m['vision']:<25}{m['llm']:<28}" + "".join(scores))
    return "\n".join(lines)


def plot_family() -> Figure:
    """Size against score: most of the gain comes early, which is the case for the small models."""
    fig, (sizes, scores) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    names = [m["name"].replace("InternVL2-", "") for m in INTERNVL2_FAMILY]
    params = [m["params_b"] for m in INTERNVL2_FAMILY]
    colours = ["#2f6db3" if "300M" in m["vision"] else "#b35a2f" for m in INTERNVL2_FAMILY]
    sizes.barh(names, params, color=colours)
    sizes.set_xscale("log")
    sizes.invert_yaxis()
    sizes.set_xlabel("parameters, billions (log scale)")
    sizes.set_title("blue: InternViT-300M, brown: InternViT-6B")
    for label, key, scale in (("MMBench-EN", "mmbench", 1), ("DocVQA", "docvqa", 1), ("OCRBench / 10", "ocrbench", 10)):
        known = [(m["params_b"], m[key] / scale) for m in INTERNVL2_FAMILY if m[key] is not None]
        scores.plot(*zip(*known), marker="o", label=label)
    scores.set_xscale("log")
    scores.set_xlabel("parameters, billions (log scale)")
    scores.set_ylabel("score")
    scores.set_title("benchmark score against size")
    scores.grid(alpha=0.3)
    scores.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Lesson 3: dynamic tiling, the token budget, pixel shuffle
# ---------------------------------------------------------------------------------------------


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
