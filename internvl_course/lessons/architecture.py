"""Lesson 02's figures and tables: InternVL2's architecture, traced, counted and compared.

``trace_shapes`` follows one picture and one question through ViT, MLP and LLM and records every
shape; ``internvl_parameter_counts`` counts each part (on the meta device a 2.2 B model costs no
memory); ``INTERNVL2_FAMILY`` is the model family, sizes and published scores. Each ``plot_*``
function draws one matplotlib figure and returns it (in a notebook it shows itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from internvl_course.lessons.charts import human
from internvl_course.model.preprocess import choose_grid, load_image


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
    from internvl_course.model.prompt import build_prompt, with_image
    from internvl_course.modelcode.modeling_internvl_chat import IMG_CONTEXT_TOKEN, pixel_shuffle

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

    trace.image_tokens = trace.tokens_per_tile * trace.tiles
    prompt = build_prompt(model.template, model.system_message, [(with_image(question), None)], [trace.tiles],
                          trace.tokens_per_tile)
    trace.prompt = prompt.replace(IMG_CONTEXT_TOKEN * trace.image_tokens,
                                  f"{IMG_CONTEXT_TOKEN} x {trace.image_tokens}")
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    trace.pixel_values, trace.input_ids = pixel_values, input_ids
    trace.prompt_tokens = input_ids.shape[1]
    trace.add("LLM", "prompt token ids", input_ids, f"{trace.image_tokens} of them are {IMG_CONTEXT_TOKEN}")
    embeds = llm.get_input_embeddings()(input_ids)
    trace.add("LLM", "token embeddings", embeds)
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


#: InternVL2 family: total parameters (B) and MMBench-EN test / OCRBench / DocVQA test, from the
#: InternVL2 model cards and blog (docs/design.md, "InternVL2: architecture, preprocessing, prompt");
#: None where no number was published there.
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
