"""The tiny base that can talk: a miniature of InternVL2's training recipe, on a CPU in minutes.

A randomly initialised tiny model only babbles, so every lesson that asks it about a picture
would show noise, and a fine-tune measured on it would measure nothing. This module gives the
embedded model a base that answers in well-formed Chinese and English sentences about a
picture, trained the way InternVL2 itself was, in miniature (docs/design.md, "InternVL2:
architecture, preprocessing, prompt"):

- stage 0 trains the vision encoder alone to tell what a picture holds (InternViT is pretrained
  before InternVL2 is assembled; a random one cannot see);
- stage 1 trains only the ``mlp1`` projector on short captions (coarse data), with the vision
  encoder and the language model frozen;
- stage 2 trains ``mlp1`` and the whole language model on multi-turn question answering
  (fine data): captions, counts, colours, shapes, tableware, yes/no and 4-choice questions.

The pictures and conversations come from ``internvl_course.tiny.table_talk``. Every sample is
the exact prompt ``model.chat()`` builds (system message, ``<img>`` + 256 ``<IMG_CONTEXT>`` +
``</img>\\n`` + question, internlm2-chat turns) and the loss falls on the answer tokens only.
The vision encoder stays frozen after stage 0, so its features are computed once per picture and
cached; that is what makes the whole recipe fit in a few CPU minutes. Rebuild the shipped
weights with ``internvl-course base``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from internvl_course.fileio import atomic_write_bytes
from internvl_course.model.preprocess import IMAGE_SIZE, build_transform
from internvl_course.model.prompt import turn_texts, with_image
from internvl_course.paths import BASE_WEIGHTS
from internvl_course.tiny.build import build_tiny_model
from internvl_course.tiny.table_talk import (CAPTIONS, CONTAINERS, LOOK, TALK, ZH_COLOUR, ZH_SHAPE, Ask, TableScene,
                                             TableTalk, ask_container, ask_container_colour, ask_describe,
                                             ask_shape_colour, ask_total, conversations, random_scenes)

IGNORE_INDEX = -100  # labels that carry no loss (prompt, image, padding)
THREADS = 2  # fixed, so that every run does the same floating-point sums in the same order

# ---------------------------------------------------------------------------------------------
# Pictures and tokens
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def image_features(model, scenes: list[TableScene], chunk: int = 16) -> torch.Tensor:
    """What ``mlp1`` receives for each scene's picture (ViT, class token dropped, pixel shuffle):
    [N, 256, 4 x vit_width].

    Read by ``vit_tokens`` (a hook on mlp1 while ``extract_feature`` runs), so the cache takes
    exactly the model's own path. Pictures are drawn a chunk at a time: all their pixels at once
    would take gigabytes.
    """
    transform = build_transform(IMAGE_SIZE)
    return torch.cat([vit_tokens(model, torch.stack([transform(s.image()) for s in scenes[start:start + chunk]]))
                      for start in range(0, len(scenes), chunk)])


def encode(talk: TableTalk, tokenizer, template: str, system_message: str,
           num_image_token: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation, exactly as ``chat()`` prompts it turn by turn.

    The pieces come from ``model.prompt.turn_texts``: for each turn the prompt up to
    "<|im_start|>assistant\\n" (the picture's ``<image>`` expanded into ``<img>`` +
    ``<IMG_CONTEXT>`` x 256 + ``</img>``), then the answer and "<|im_end|>", which alone carry
    labels. They are tokenized one by one; they meet at a newline or a special token, which the
    tokenizer never merges across, so the ids are those of the whole text.
    """
    turns = [(with_image(question) if turn == 0 else question, answer)
             for turn, (question, answer) in enumerate(talk.turns)]
    ids: list[int] = []
    labels: list[int] = []
    for turn, (prompt, answer) in enumerate(turn_texts(template, system_message, turns, [1], num_image_token)):
        prompt_ids = tokenizer(prompt, add_special_tokens=turn == 0).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        ids += prompt_ids + answer_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return ids, labels


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor  # index of each row's picture in the feature cache


def collate(encoded: list[tuple[list[int], list[int]]], images: list[int], pad_id: int) -> Batch:
    """Right-pad to the longest row; padding is masked out and carries no loss."""
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        labels[row, :len(labs)] = torch.tensor(labs)
    return Batch(input_ids, attention_mask, labels, torch.tensor(images))


# ---------------------------------------------------------------------------------------------
# Stage 0: a vision encoder that sees
# ---------------------------------------------------------------------------------------------

# Stage 0 teaches the ViT what a picture holds (docs/benchmarks.md, "The tiny base's pretraining choices").
SEE_COLOURS = tuple(ZH_COLOUR)
SEE_SHAPES = tuple(ZH_SHAPE)
SEE_PLATES = tuple(CONTAINERS)


def see_targets(scene: TableScene) -> dict[str, torch.Tensor]:
    """What stage 0 teaches the ViT to tell from one picture."""
    colours = torch.zeros(len(SEE_COLOURS))
    shapes = torch.zeros(len(SEE_SHAPES))
    for group in scene.groups:
        colours[SEE_COLOURS.index(group.colour)] = 1
        shapes[SEE_SHAPES.index(group.shape)] = 1
    plate_colour = SEE_COLOURS.index(scene.plate_colour) if scene.container.coloured else IGNORE_INDEX
    return {"plate": torch.tensor(SEE_PLATES.index(scene.plate)), "plate_colour": torch.tensor(plate_colour),
            "colours": colours, "shapes": shapes}


class SeeHeads(torch.nn.Module):
    """Linear read-outs of the pixel-shuffled tokens mlp1 later receives, averaged and maxed over
    the picture so that small pieces count as much as the big plate; thrown away after stage 0."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(2 * width)
        self.plate = torch.nn.Linear(2 * width, len(SEE_PLATES))
        self.plate_colour = torch.nn.Linear(2 * width, len(SEE_COLOURS))
        self.colours = torch.nn.Linear(2 * width, len(SEE_COLOURS))
        self.shapes = torch.nn.Linear(2 * width, len(SEE_SHAPES))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.norm(torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1))
        return {"plate": self.plate(pooled), "plate_colour": self.plate_colour(pooled),
                "colours": self.colours(pooled), "shapes": self.shapes(pooled)}


def vit_tokens(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The ViT's pixel-shuffled tokens, what mlp1 receives: [N, 256, 4 x vit_width], with grad."""
    captured: list[torch.Tensor] = []
    hook = model.mlp1.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model.extract_feature(pixel_values)
    finally:
        hook.remove()
    return captured[0]


def see_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return (F.cross_entropy(outputs["plate"], targets["plate"])
            + F.cross_entropy(outputs["plate_colour"], targets["plate_colour"], ignore_index=IGNORE_INDEX)
            + F.binary_cross_entropy_with_logits(outputs["colours"], targets["colours"])
            + F.binary_cross_entropy_with_logits(outputs["shapes"], targets["shapes"]))


def _step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, losses: list[float], bar: tqdm) -> None:
    """One optimizer step of any stage: backward, clip at 1, step, record, show the running loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    losses.append(loss.item())
    bar.update()
    bar.set_postfix(loss=f"{_tail(losses):.3f}")


def train_vision(model, recipe: "Recipe", seed: int, bar: tqdm) -> list[float]:
    """Stage 0: the ViT and throw-away heads, AdamW, on ``recipe.see_images`` generic pictures."""
    scenes = random_scenes(seed + 10, recipe.see_images)
    transform = build_transform(IMAGE_SIZE)
    pixels = torch.stack([transform(scene.image()) for scene in scenes])
    targets = [see_targets(scene) for scene in scenes]
    heads = SeeHeads(model.mlp1[0].normalized_shape[0])
    model.requires_grad_(False)
    model.vision_model.requires_grad_(True)
    params = [*model.vision_model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.see_lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(recipe.see_steps, recipe.warmup))
    rng = random.Random(seed + 11)
    model.train()
    losses: list[float] = []
    bar.set_description("stage 0 (ViT)")
    for _ in range(recipe.see_steps):
        rows = rng.sample(range(len(scenes)), recipe.see_batch)
        batch = {key: torch.stack([targets[r][key] for r in rows]) for key in targets[0]}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            outputs = heads(vit_tokens(model, pixels[rows]))
        loss = see_loss({k: v.float() for k, v in outputs.items()}, batch)
        _step(loss, params, optimizer, scheduler, losses, bar)
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Sizes and rates of the two stages; the defaults are what the shipped weights were trained with."""

    see_images: int = 512  # stage 0: the ViT, on its own pictures
    see_steps: int = 150
    see_batch: int = 16
    see_lr: float = 1e-3
    images: int = 256
    batch_size: int = 8
    stage1_steps: int = 20  # mlp1 only, on captions
    stage1_lr: float = 2e-3
    look_steps: int = 360  # stage 2 (mlp1 + LLM), first on LOOK ...
    talk_steps: int = 900  # ... then on TALK
    stage2_lr: float = 1e-3
    warmup: float = 0.1  # share of each stage's steps
    weight_decay: float = 0.01
    bf16: bool = True  # bfloat16 autocast: 1.4x faster steps on a CPU with AVX512-BF16
    eval_images: int = 16


@dataclass
class TrainLog:
    """Losses of a run: per step, and on held-out conversations before and after each stage."""

    stage0: list[float]
    stage1: list[float]
    stage2: list[float]
    eval_loss: dict[str, float]
    seconds: dict[str, float]


def _batches(model, tokenizer, talks: list[TableTalk], batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(talks), batch_size):
        chunk = talks[start:start + batch_size]
        encoded = [encode(t, tokenizer, model.template, model.system_message, model.num_image_token) for t in chunk]
        yield collate(encoded, [t.image for t in chunk], tokenizer.pad_token_id)


def answer_loss(model, features: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean next-token loss on the answer tokens, with cached ViT features.

    The same loss as the training ``forward(..., labels=...)``, but the vocabulary projection
    runs only where a label is: the answers are a tenth of each sequence, so this saves a
    sixth of a step.
    """
    llm = model.language_model
    embeds = llm.get_input_embeddings()(batch.input_ids)
    embeds = model.merge_image_features(embeds, batch.input_ids, model.mlp1(features[batch.images]))
    hidden = llm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    targets = batch.labels[:, 1:]
    scored = targets != IGNORE_INDEX
    logits = llm.get_output_embeddings()(hidden[:, :-1][scored]).float()
    return F.cross_entropy(logits, targets[scored])


@torch.no_grad()
def evaluate(model, tokenizer, features: torch.Tensor, talks: list[TableTalk], batch_size: int) -> float:
    """Answer-token loss on held-out conversations (mean over batches)."""
    model.eval()
    losses = [answer_loss(model, features, b).item() for b in _batches(model, tokenizer, talks, batch_size)]
    return sum(losses) / len(losses)


def _trainable(model, stage: int) -> list[torch.nn.Parameter]:
    """Stage 1: mlp1 only. Stage 2: mlp1 and the language model. The ViT stays frozen (its
    features are cached)."""
    model.requires_grad_(False)
    model.mlp1.requires_grad_(True)
    if stage == 2:
        model.language_model.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _warmup_cosine(steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to a tenth of the peak rate."""
    warm = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _tail(losses: list[float]) -> float:
    """The mean of the last ten step losses: one step's loss is noisy."""
    return sum(losses[-10:]) / len(losses[-10:])


def run_stage(model, tokenizer, features: torch.Tensor, talks: list[TableTalk], stage: int, lr: float,
              recipe: Recipe, bar: tqdm) -> list[float]:
    """One stage: AdamW over the stage's parameters, one step a batch, gradient clipping at 1."""
    params = _trainable(model, stage)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    steps = math.ceil(len(talks) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps, recipe.warmup))
    model.train()
    losses: list[float] = []
    bar.set_description(f"stage {stage} ({'mlp1' if stage == 1 else 'mlp1 + LLM'})")
    for batch in _batches(model, tokenizer, talks, recipe.batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = answer_loss(model, features, batch)
        _step(loss, params, optimizer, scheduler, losses, bar)
    return losses


def train_model(model, tokenizer, seed: int = 0, recipe: Recipe = Recipe(), progress: bool = True) -> TrainLog:
    """Both stages on ``model`` in place. Deterministic for a seed: fixed threads, seeded data."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    seconds: dict[str, float] = {}
    try:
        start = time.perf_counter()
        scenes = random_scenes(seed, recipe.images)
        size = recipe.batch_size
        stage1 = conversations(scenes, recipe.stage1_steps * size, seed, CAPTIONS)
        stage2 = (conversations(scenes, recipe.look_steps * size, seed + 1, LOOK)
                  + conversations(scenes, recipe.talk_steps * size, seed + 2, TALK))
        # Held out: pictures of another seed, never trained on.
        held_scenes = random_scenes(seed + 3, recipe.eval_images)
        held = conversations(held_scenes, recipe.eval_images, seed + 3, TALK)
        with tqdm(total=recipe.see_steps, disable=not progress, unit="step") as bar:
            start_see = time.perf_counter()
            see = train_vision(model, recipe, seed, bar)
            seconds["stage0"] = time.perf_counter() - start_see
        model.eval()
        features = image_features(model, scenes)
        held_features = image_features(model, held_scenes)
        seconds["pictures"] = time.perf_counter() - start - seconds["stage0"]
        eval_loss = {"start": evaluate(model, tokenizer, held_features, held, recipe.batch_size)}
        with tqdm(total=recipe.stage1_steps + recipe.look_steps + recipe.talk_steps, disable=not progress, unit="step") as bar:
            start = time.perf_counter()
            loss1 = run_stage(model, tokenizer, features, stage1, 1, recipe.stage1_lr, recipe, bar)
            seconds["stage1"] = time.perf_counter() - start
            eval_loss["stage1"] = evaluate(model, tokenizer, held_features, held, recipe.batch_size)
            start = time.perf_counter()
            loss2 = run_stage(model, tokenizer, features, stage2, 2, recipe.stage2_lr, recipe, bar)
            seconds["stage2"] = time.perf_counter() - start
        eval_loss["stage2"] = evaluate(model, tokenizer, held_features, held, recipe.batch_size)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return TrainLog(see, loss1, loss2, eval_loss, seconds)


# A reply that loops repeats a stretch at once: 3 to 12 characters in Chinese ("一把叉子和一把叉子和"),
# 2 to 6 words in English ("a pair and a pair and"). No sentence the generator writes does.
LOOP = {"zh": re.compile(r"(.{3,12})\1"), "en": re.compile(r"\b((?:\w+ ){2,6})\1")}
# What ``probe`` asks about held-out pictures: kinds whose answer is one fixed sentence.
PROBES: dict[str, Ask] = {"describe": ask_describe, "plate colour": ask_container_colour, "container": ask_container,
                          "total": ask_total, "shape colour": ask_shape_colour}


def well_formed(answer: str, lang: str) -> bool:
    """One sentence in the question's language: ends with its full stop, holds no chat markup,
    and does not loop (``LOOP``)."""
    if not answer or "<" in answer or "|" in answer or LOOP[lang].search(answer):
        return False
    if lang == "zh":
        return answer.endswith("。") and any("\u4e00" <= ch <= "\u9fff" for ch in answer)
    return answer.endswith(".") and answer.isascii() and answer[0].isupper()


@torch.no_grad()
def probe(model, tokenizer, seed: int = 1000, images: int = 24, max_new_tokens: int = 64) -> dict[str, dict[str, float]]:
    """Ask each kind of ``PROBES`` about ``images`` pictures the base never saw (a seed no recipe
    uses), in both languages, greedily. Per kind: ``exact`` (the share of answers equal to the
    generator's sentence, so both the wording and the looking are right) and ``well_formed``."""
    transform = build_transform(IMAGE_SIZE)
    rng = random.Random(seed)
    asked: dict[str, list[tuple[bool, bool]]] = {kind: [] for kind in PROBES}
    for scene in random_scenes(seed, images):
        pixels = transform(scene.image())[None]
        for kind, ask_kind in PROBES.items():
            for lang in ("zh", "en"):
                question = ask_kind(scene, rng, lang)
                if question is None:
                    continue
                reply = model.chat(tokenizer, pixels, question.text, dict(max_new_tokens=max_new_tokens, do_sample=False))
                asked[kind].append((reply == question.answer, well_formed(reply, lang)))
    return {kind: {"exact": sum(e for e, _ in rows) / len(rows), "well_formed": sum(w for _, w in rows) / len(rows)}
            for kind, rows in asked.items()}


def _random_tiny(seed: int):
    """The seeded random tiny model, its tokenizer and the tokenizer's sentencepiece model: what
    ``build_tiny_model(weights="random")`` writes."""
    from internvl_course.model.load import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", seed=seed, weights="random")
        model, tokenizer = load_model(model_dir)
        vocabulary = (model_dir / "tokenizer.model").read_bytes()
    return model, tokenizer, vocabulary


METADATA_KEY = "internvl_course.pretrain"


def _metadata(seed: int, recipe: Recipe, log: TrainLog) -> dict[str, str]:
    """What the file says about itself: the recipe and the (deterministic) losses, no timings.

    One key holding sorted JSON: safetensors writes several metadata keys in no fixed order,
    which would break "same seed, same bytes"."""
    about = {"seed": seed, "recipe": vars(recipe),
             "loss": {"stage0_last10": round(_tail(log.stage0), 4), "stage1_last10": round(_tail(log.stage1), 4),
                      "stage2_last10": round(_tail(log.stage2), 4)},
             "eval_loss": {k: round(v, 4) for k, v in log.eval_loss.items()}}
    return {METADATA_KEY: json.dumps(about, sort_keys=True)}


def read_metadata(path: str | Path = BASE_WEIGHTS) -> dict:
    """The recipe, seed and losses a weights file was trained with (see ``_metadata``)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} was not written by internvl_course.tiny.pretrain (no {METADATA_KEY!r} metadata). "
                         "Rebuild it with internvl-course base.")
    return json.loads(meta[METADATA_KEY])


def _kit_weights(path: Path) -> bool:
    """Whether ``path`` is a weights file this module wrote (it carries ``METADATA_KEY``)."""
    try:
        read_metadata(path)
    except Exception:  # not safetensors, not ours, unreadable: not the kit's to replace
        return False
    return True


def check_base_output(out_path: str | Path, overwrite: bool = False) -> None:
    """Refuse, before minutes of training, to replace files the kit did not write: an existing
    weights file must carry the kit's metadata, and an existing ``tokenizer.model`` beside it must
    sit beside such a file; ``overwrite`` replaces them anyway."""
    out = Path(out_path)
    if overwrite:
        return
    foreign = [out] if out.exists() and not _kit_weights(out) else []
    tokenizer = out.with_name("tokenizer.model")
    if tokenizer.exists() and not any(_kit_weights(p) for p in out.parent.glob("*.safetensors")):
        foreign.append(tokenizer)
    if foreign:
        raise FileExistsError(f"{', '.join(map(str, foreign))} already exist(s) and were not written by "
                              "internvl-course base; a base is written as the weights file and tokenizer.model "
                              "beside it. Choose an empty folder for --out, or pass --overwrite to replace them.")


def train_base(out_path: str | Path = BASE_WEIGHTS, seed: int = 0, recipe: Recipe = Recipe(),
               progress: bool = True, overwrite: bool = False) -> Path:
    """Train the talking base from the seeded random tiny model and write its weights.

    The file is a float32 safetensors state dict of the whole model (about 5 MB), written to a
    temporary file and renamed into place, so an interrupted run leaves the old weights intact;
    the ``tokenizer.model`` it was trained with is written beside it.
    With ``progress`` the stages show a progress bar and a summary is printed at the end. Existing
    files elsewhere than the shipped place are replaced only with ``overwrite``.
    """
    from safetensors.torch import save

    check_base_output(out_path, overwrite)
    start = time.perf_counter()
    model, tokenizer, vocabulary = _random_tiny(seed)
    log = train_model(model, tokenizer, seed, recipe, progress)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    out = atomic_write_bytes(Path(out_path), save(state, metadata=_metadata(seed, recipe, log)))
    # The weights belong to this exact vocabulary: keep it beside them (see tiny._tokenizer_for).
    atomic_write_bytes(out.with_name("tokenizer.model"), vocabulary)
    if progress:
        e = log.eval_loss
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s "
              f"(stage 0 {log.seconds['stage0']:.0f} s, pictures {log.seconds['pictures']:.0f} s, "
              f"stage 1 {log.seconds['stage1']:.0f} s, "
              f"stage 2 {log.seconds['stage2']:.0f} s)")
        print(f"training loss, mean of the last 10 steps: stage 0 {_tail(log.stage0):.3f}, "
              f"stage 1 {_tail(log.stage1):.3f}, "
              f"stage 2 {_tail(log.stage2):.3f}")
        print(f"held-out answer loss: start {e['start']:.3f}, after stage 1 {e['stage1']:.3f}, "
              f"after stage 2 {e['stage2']:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course base",
                                     description="Train the embedded tiny model's talking base (a few CPU minutes).")
    parser.add_argument("--out", default=str(BASE_WEIGHTS), help="safetensors file to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out and its tokenizer.model")
    args = parser.parse_args(argv)
    try:
        check_base_output(args.out, args.overwrite)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    train_base(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
