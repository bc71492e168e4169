"""The tiny base that can talk: a miniature of InternVL2's training recipe, on a CPU in minutes.

A randomly initialised tiny model only babbles, so every lesson that asks it about a picture
would show noise, and a fine-tune measured on it would measure nothing. This module gives the
embedded model a base that answers in well-formed Chinese and English sentences about a
picture, trained the way InternVL2 itself was, in miniature (FACTS.md section 4):

- stage 0 trains the vision encoder alone to tell what a picture holds (InternViT is pretrained
  before InternVL2 is assembled; a random one cannot see);
- stage 1 trains only the ``mlp1`` projector on short captions (coarse data), with the vision
  encoder and the language model frozen;
- stage 2 trains ``mlp1`` and the whole language model on multi-turn question answering
  (fine data): captions, counts, colours, shapes, tableware, yes/no and 4-choice questions.

The data is generic pictures from ``scenes.render`` (shapes on a plate, tableware beside it).
Dish names, cuisines, ingredients and flavours appear only as words to read back from a list
(``ask_read_option``), never beside a picture of a dish: like a real LLM, the base knows the
words, but nothing ties a name to a look, so the food fine-tune starts from no knowledge of the
dishes and an evaluation measures what the fine-tune taught. The 4-choice questions use the
food VQA format (the question, then "A. ..." to "D. ..." on their own lines, answered with the
option and a sentence, "白色，盘子是白色的。"), so that later the format is already known and
only the knowledge is new.

Every sample is the exact prompt ``model.chat()`` builds (system message, ``<img>`` + 256
``<IMG_CONTEXT>`` + ``</img>\\n`` + question, internlm2-chat turns) and the loss falls on the
answer tokens only. The vision encoder stays frozen after stage 0, so its features are
computed once per picture and cached; that is what makes the whole recipe fit in a few CPU
minutes. Rebuild the shipped weights with ``internvl-course base``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from internvl_course.data.words import COLOURS, CUISINES, DISHES, FLAVOURS, INGREDIENTS, NUMBERS, SHAPES, TABLEWARE
from internvl_course.data.food_vqa import LETTERS
from internvl_course.data.food_vqa import options as option_lines
from internvl_course.fileio import atomic_write_bytes
from internvl_course.modelcode.conversation import get_conv_template
from internvl_course.model.preprocess import IMAGE_SIZE, build_transform
from internvl_course.data.drawing import PLATES, Piece, Scene, render
from internvl_course.paths import BASE_WEIGHTS
from internvl_course.tiny.build import build_tiny_model

IGNORE_INDEX = -100  # labels that carry no loss (prompt, image, padding)
THREADS = 2  # fixed, so that every run does the same floating-point sums in the same order

# ---------------------------------------------------------------------------------------------
# What a picture holds
# ---------------------------------------------------------------------------------------------

ZH_COLOUR = {en: zh for zh, en in COLOURS.items()}
ZH_SHAPE = {en: zh for zh, en in SHAPES.items()}
WARE = {ware.en: ware for ware in TABLEWARE}
# The tableware scenes.render draws, in groups that share one spot beside the plate: a scene
# takes at most one item of each group, so that no drawing hides another.
WARE_SPOTS = (("cup", "teapot", "clay pot"), ("spoon", "fork"), ("pair of chopsticks",), ("napkin",))
# Colours that vanish on the bamboo of a steamer.
STEAMER_LIKE = ("brown", "orange", "yellow")


@dataclass(frozen=True)
class Container:
    """What the pieces lie in, named as the answers name it."""

    zh: str
    short_zh: str
    en: str
    short_en: str
    preposition: str  # "on the plate", "in the bowl"
    coloured: bool  # a steamer is always bamboo: no colour to ask about


CONTAINERS = {
    "round": Container("圆盘子", "盘子", "round plate", "plate", "on", True),
    "square": Container("方盘子", "盘子", "square plate", "plate", "on", True),
    "bowl": Container("碗", "碗", "bowl", "bowl", "in", True),
    "steamer": Container("竹蒸笼", "蒸笼", "bamboo steamer", "steamer", "in", False),
}
assert set(CONTAINERS) == set(PLATES), "every plate scenes.render draws needs words here"


@dataclass(frozen=True)
class Group:
    """``count`` pieces of one shape in one colour (English names, as scenes and corpus use)."""

    shape: str
    colour: str
    count: int


@dataclass(frozen=True)
class TableScene:
    """The facts of one generic picture; the answers are written from these, the image drawn from them."""

    groups: tuple[Group, ...]
    plate: str
    plate_colour: str
    tableware: tuple[str, ...]
    seed: int  # the render seed: table, placement, lighting

    @property
    def container(self) -> Container:
        return CONTAINERS[self.plate]

    @property
    def total(self) -> int:
        return sum(group.count for group in self.groups)

    def image(self, size: int = IMAGE_SIZE) -> Image.Image:
        piece_size = 0.2 if self.total <= 3 else 0.16 if self.total <= 6 else 0.13
        pieces = tuple(Piece(g.shape, g.colour, g.count, piece_size) for g in self.groups)
        return render(Scene(pieces, self.plate, self.plate_colour, tableware=self.tableware), self.seed, size)


def random_scene(rng: random.Random) -> TableScene:
    """One to three groups of distinct shapes and colours (so "the red thing" names one group)."""
    plate = rng.choice(PLATES)
    plate_colour = "brown" if plate == "steamer" else rng.choice(list(ZH_COLOUR))
    hidden = STEAMER_LIKE if plate == "steamer" else (plate_colour,)
    kinds = rng.choice((1, 1, 2, 2, 3))
    shapes = rng.sample(list(ZH_SHAPE), kinds)
    colours = rng.sample([c for c in ZH_COLOUR if c not in hidden], kinds)
    most = 5 if kinds == 1 else 4 if kinds == 2 else 2
    groups = tuple(Group(s, c, rng.randint(1, most)) for s, c in zip(shapes, colours, strict=True))
    tableware = tuple(rng.choice(spot) for spot in WARE_SPOTS if rng.random() < 0.4)
    return TableScene(groups, plate, plate_colour, tableware, rng.randrange(2**31))


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------


def _num_zh(n: int) -> str:
    return NUMBERS[n - 1][0]


def _num_en(n: int) -> str:
    return NUMBERS[n - 1][1]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _join_zh(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "、".join(parts[:-1]) + "和" + parts[-1]


def _join_en(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _pieces_zh(group: Group) -> str:
    return f"{_num_zh(group.count)}个{ZH_COLOUR[group.colour]}的{ZH_SHAPE[group.shape]}"


def _pieces_en(group: Group) -> str:
    return f"{_num_en(group.count)} {group.colour} {group.shape}{'s' if group.count > 1 else ''}"


def _ware_zh(name: str) -> str:
    return f"一{WARE[name].measure}{WARE[name].zh}"


def _container_zh(scene: TableScene) -> str:
    c = scene.container
    return f"{ZH_COLOUR[scene.plate_colour]}的{c.zh}" if c.coloured else c.zh


def _container_en(scene: TableScene) -> str:
    c = scene.container
    return f"{scene.plate_colour} {c.en}" if c.coloured else c.en


def _on_en(scene: TableScene) -> str:
    """"on the plate" or "in the bowl"."""
    return f"{scene.container.preposition} the {scene.container.short_en}"


def _there_en(n: int) -> str:
    return "There is" if n == 1 else "There are"


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question and its one-sentence answer.

    ``choices`` (the right one first, then every wrong one there is) lets the same question be
    asked as a 4-choice question; empty when the question has no natural options.
    """

    text: str
    answer: str
    choices: tuple[str, ...] = ()


Ask = Callable[[TableScene, random.Random, str], "Question | None"]  # None: not about this scene

# Several wordings of the open questions, so that the answer hangs on what is asked, not on
# the exact words: a base that met one wording answers a new one with broken sentences.
DESCRIBE = {
    "zh": ("请用一句话描述这张图片。", "这张图片里有什么？", "描述一下这张图片。", "图中有什么？", "你看到了什么？",
           "桌上有什么？", "说说这张图片。", "图片里都有哪些东西？"),
    "en": ("Describe this image in one sentence.", "What is in this picture?", "Describe the image.",
           "What can you see in the image?", "What do you see?", "What is on the table?", "Tell me about this picture.",
           "Can you describe the picture?"),
}


def ask_describe(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """A one-sentence caption: the container, what lies in it and what lies beside it."""
    if lang == "zh":
        text = f"桌上有一个{_container_zh(scene)}，里面有{_join_zh([_pieces_zh(g) for g in scene.groups])}"
        if scene.tableware:
            text += f"，旁边放着{_join_zh([_ware_zh(w) for w in scene.tableware])}"
        return Question(rng.choice(DESCRIBE["zh"]), text + "。")
    text = f"{_a(_container_en(scene)).capitalize()} on the table holds {_join_en([_pieces_en(g) for g in scene.groups])}"
    if scene.tableware:
        text += f", with {_join_en([_a(w) for w in scene.tableware])} beside it"
    return Question(rng.choice(DESCRIBE["en"]), text + ".")


def _number_choices(n: int, lang: str) -> tuple[str, ...]:
    word = (lambda k: f"{_num_zh(k)}个") if lang == "zh" else _num_en
    return (word(n),) + tuple(word(k) for k in range(1, 7) if k != n)


def ask_count(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """How many pieces of one shape; now and then a shape that is not there (answer: none)."""
    c = scene.container
    present = {g.shape: g for g in scene.groups}
    if rng.random() < 0.15:
        shape = rng.choice([s for s in ZH_SHAPE if s not in present])
        if lang == "zh":
            return Question(f"{c.short_zh}里有几个{ZH_SHAPE[shape]}？", f"{c.short_zh}里没有{ZH_SHAPE[shape]}。")
        return Question(f"How many {shape}s are there {_on_en(scene)}?", f"There are no {shape}s {_on_en(scene)}.")
    group = rng.choice(scene.groups)
    if lang == "zh":
        return Question(f"{c.short_zh}里有几个{ZH_SHAPE[group.shape]}？", f"{c.short_zh}里有{_pieces_zh(group)}。",
                        _number_choices(group.count, lang))
    return Question(f"How many {group.shape}s are there {_on_en(scene)}?",
                    f"{_there_en(group.count)} {_pieces_en(group)} {_on_en(scene)}.", _number_choices(group.count, lang))


def ask_total(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """How many pieces in all, whatever their shape."""
    n, c = scene.total, scene.container
    if lang == "zh":
        return Question(f"{c.short_zh}里一共有几个东西？", f"{c.short_zh}里一共有{_num_zh(n)}个东西。",
                        _number_choices(n, lang))
    thing = "thing" if n == 1 else "things"
    return Question(f"How many things are there {_on_en(scene)} in total?",
                    f"{_there_en(n)} {_num_en(n)} {thing} {_on_en(scene)} in total.", _number_choices(n, lang))


def _colour_choices(colour: str, lang: str) -> tuple[str, ...]:
    names = ZH_COLOUR if lang == "zh" else {c: c for c in ZH_COLOUR}
    return (names[colour],) + tuple(names[c] for c in ZH_COLOUR if c != colour)


def ask_shape_colour(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """The colour of the pieces of one shape."""
    group = rng.choice(scene.groups)
    shape, colour = group.shape, group.colour
    if lang == "zh":
        return Question(f"{ZH_SHAPE[shape]}是什么颜色的？", f"{ZH_SHAPE[shape]}是{ZH_COLOUR[colour]}的。",
                        _colour_choices(colour, lang))
    if group.count == 1:
        return Question(f"What colour is the {shape}?", f"The {shape} is {colour}.", _colour_choices(colour, lang))
    return Question(f"What colour are the {shape}s?", f"The {shape}s are {colour}.", _colour_choices(colour, lang))


def ask_colour_shape(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """The shape of the pieces of one colour."""
    group = rng.choice(scene.groups)
    shape, colour = group.shape, group.colour
    if lang == "zh":
        choices = (ZH_SHAPE[shape],) + tuple(z for e, z in ZH_SHAPE.items() if e != shape)
        return Question(f"{ZH_COLOUR[colour]}的东西是什么形状的？", f"{ZH_COLOUR[colour]}的东西是{ZH_SHAPE[shape]}。", choices)
    choices = (shape,) + tuple(e for e in ZH_SHAPE if e != shape)
    if group.count == 1:
        return Question(f"What shape is the {colour} thing?", f"The {colour} thing is {_a(shape)}.", choices)
    return Question(f"What shape are the {colour} things?", f"The {colour} things are {shape}s.", choices)


def ask_container_colour(scene: TableScene, rng: random.Random, lang: str) -> Question | None:
    """The colour of the plate or bowl (a steamer is always bamboo)."""
    c = scene.container
    if not c.coloured:
        return None
    colour = scene.plate_colour
    if lang == "zh":
        text = rng.choice((f"{c.short_zh}是什么颜色的？", f"{c.short_zh}是什么颜色？"))
        return Question(text, f"{c.short_zh}是{ZH_COLOUR[colour]}的。", _colour_choices(colour, lang))
    text = rng.choice((f"What colour is the {c.short_en}?", f"What is the colour of the {c.short_en}?"))
    return Question(text, f"The {c.short_en} is {colour}.", _colour_choices(colour, lang))


def ask_container(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """What the pieces lie in."""
    key = scene.plate
    if lang == "zh":
        choices = (CONTAINERS[key].zh,) + tuple(v.zh for k, v in CONTAINERS.items() if k != key)
        return Question("这些东西在哪里？", f"它们在一个{_container_zh(scene)}里。", choices)
    choices = (CONTAINERS[key].en,) + tuple(v.en for k, v in CONTAINERS.items() if k != key)
    return Question("Where are the things?", f"They are {scene.container.preposition} {_a(_container_en(scene))}.", choices)


def ask_tableware(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """Everything beside the container, or that nothing is."""
    c, wares = scene.container, scene.tableware
    if lang == "zh":
        if not wares:
            return Question(f"{c.short_zh}旁边有什么餐具？", f"{c.short_zh}旁边没有餐具。")
        return Question(f"{c.short_zh}旁边有什么餐具？", f"{c.short_zh}旁边有{_join_zh([_ware_zh(w) for w in wares])}。")
    if not wares:
        return Question(f"What tableware is next to the {c.short_en}?", f"There is no tableware next to the {c.short_en}.")
    listed = _join_en([_a(w) for w in wares])
    return Question(f"What tableware is next to the {c.short_en}?",
                    f"Next to the {c.short_en} there {'is' if len(wares) == 1 else 'are'} {listed}.")


def ask_has_ware(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """Yes or no: is this piece of tableware on the table? As 4-choice: which of these is?"""
    drawn = [w for spot in WARE_SPOTS for w in spot]
    absent = [w for w in drawn if w not in scene.tableware]
    if scene.tableware and rng.random() < 0.5:
        name = rng.choice(scene.tableware)
        if lang == "zh":
            return Question(f"桌上有{WARE[name].zh}吗？", f"有，桌上有{_ware_zh(name)}。",
                            (WARE[name].zh,) + tuple(WARE[w].zh for w in absent))
        return Question(f"Is there {_a(name)} on the table?", f"Yes, there is {_a(name)} on the table.",
                        (name,) + tuple(absent))
    name = rng.choice(absent)
    if lang == "zh":
        return Question(f"桌上有{WARE[name].zh}吗？", f"没有，桌上没有{WARE[name].zh}。")
    return Question(f"Is there {_a(name)} on the table?", f"No, there is no {name} on the table.")


def ask_has_piece(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """Yes or no: is there a piece of this colour and shape?"""
    if rng.random() < 0.5:
        group = rng.choice(scene.groups)
        shape, colour = group.shape, group.colour
        if lang == "zh":
            return Question(f"图中有{ZH_COLOUR[colour]}的{ZH_SHAPE[shape]}吗？", f"有，图中有{_pieces_zh(group)}。")
        return Question(f"Is there {_a(colour)} {shape} in the image?",
                        f"Yes, {_there_en(group.count).lower()} {_pieces_en(group)} in the image.")
    present = {(g.shape, g.colour) for g in scene.groups}
    shape, colour = rng.choice([(s, c) for s in ZH_SHAPE for c in ZH_COLOUR if (s, c) not in present])
    if lang == "zh":
        return Question(f"图中有{ZH_COLOUR[colour]}的{ZH_SHAPE[shape]}吗？", f"没有，图中没有{ZH_COLOUR[colour]}的{ZH_SHAPE[shape]}。")
    return Question(f"Is there {_a(colour)} {shape} in the image?", f"No, there is no {colour} {shape} in the image.")


def with_option(option: str, sentence: str, lang: str) -> str:
    """The shape of every 4-choice answer: the option, a comma, the sentence ("白色，盘子是白色的。"
    / "white, the plate is white.")."""
    if lang == "zh":
        return f"{option}，{sentence}"
    return f"{option}, {sentence[0].lower()}{sentence[1:]}"


# The words the food questions offer as options: dish names, cuisines, ingredients, flavours.
# InternVL2's language model has read them all; the tiny one has not, and a word it never read
# is a row of random numbers that LoRA (which leaves the embeddings alone) cannot fix. So the
# base reads them here, in option lists it is asked to read back ("选项C是什么？"), one group
# per question as the food questions do, and never beside a picture of a dish: it learns the
# words, not what any dish looks like, which stays the fine-tune's job.
READING_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "zh": (tuple(d.zh for d in DISHES), tuple(CUISINES), tuple(INGREDIENTS), tuple(FLAVOURS)),
    "en": (tuple(d.en for d in DISHES), tuple(CUISINES.values()), tuple(INGREDIENTS.values()), tuple(FLAVOURS.values())),
}
READ_STEM = {"zh": "选项{letter}是什么？", "en": "What is option {letter}?"}


def ask_read_option(scene: TableScene, rng: random.Random, lang: str) -> Question:
    """Read back one option of a list of food words; the answer is in the text, not the picture."""
    words = rng.sample(rng.choice(READING_WORDS[lang]), 4)
    at = rng.randrange(4)
    letter = LETTERS[at]
    sentence = f"选项{letter}是{words[at]}。" if lang == "zh" else f"Option {letter} is {words[at]}."
    return Question("\n".join([READ_STEM[lang].format(letter=letter), *option_lines(words)]),
                    with_option(words[at], sentence, lang))


@dataclass(frozen=True)
class Mix:
    """Which questions a conversation asks (kinds with relative weights, and perhaps one kind it
    always opens with), how many turns at most, and what share of the questions that have
    options are asked as 4-choice questions."""

    kinds: tuple[tuple[Ask, int], ...]
    max_turns: int
    multiple_choice: float
    first: Ask | None = None  # the kind every conversation opens with, when there is one


# Stage 1, coarse: one caption per picture.
CAPTIONS = Mix(((ask_describe, 1),), max_turns=1, multiple_choice=0.0)
# Stage 2, first part: one question whose answer only the picture holds, mostly the colour of the
# plate or bowl (the shape's colour for a steamer). Trained on the full mix from the start, the
# tiny model learns the sentences long before it learns to look, and the picture's 256 tokens end
# up as a place to park attention that mlp1 flattens. The split between the two parts trades
# looking against talking; ``probe`` on 24 held-out pictures (plate colour right / captions well
# formed): 240 + 660 steps 37% / 100%, 360 + 900 (the recipe) 50% / 100%, 480 + 840 77% / 88%.
LOOK = Mix(((ask_container_colour, 4), (ask_shape_colour, 1)), max_turns=1, multiple_choice=0.0)
# Stage 2, second part: every kind of question, in conversations of up to four turns, the food
# VQA's 4-choice format included.
TALK = Mix(((ask_describe, 4), (ask_count, 3), (ask_total, 1), (ask_shape_colour, 3), (ask_colour_shape, 2),
            (ask_container_colour, 3), (ask_container, 1), (ask_tableware, 2), (ask_has_ware, 2),
            (ask_has_piece, 2), (ask_read_option, 2)), max_turns=4, multiple_choice=0.35)
# The stem InternVL would see for "which of these is on the table", not the yes/no one.
WARE_STEM = {"zh": "桌上有下面哪种餐具？", "en": "Which of these is on the table?"}


def as_multiple_choice(question: Question, rng: random.Random, lang: str, stem: str | None = None) -> Question:
    """The food VQA format: the question, then "A. ..." to "D. ..." lines; the answer is the
    right option's text, a comma and the sentence ("白色，盘子是白色的。" / "white, the plate is
    white."), the shape of the kit's food answers ("宫保鸡丁，图中的菜是宫保鸡丁")."""
    options = [question.choices[0], *rng.sample(question.choices[1:], 3)]
    right = rng.randrange(4)
    options[0], options[right] = options[right], options[0]
    return Question("\n".join([stem or question.text, *option_lines(options)]),
                    with_option(options[right], question.answer, lang))



def ask(kind: Ask, scene: TableScene, rng: random.Random, lang: str, multiple_choice: float) -> Question | None:
    """One question of ``kind``, asked as 4-choice that share of the time when it has options."""
    question = kind(scene, rng, lang)
    if question is None or len(question.choices) < 4 or rng.random() >= multiple_choice:
        return question
    stem = WARE_STEM[lang] if kind is ask_has_ware else None
    return as_multiple_choice(question, rng, lang, stem)


# ---------------------------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """Turns about one picture (``image`` indexes the scene list); the first question comes
    without ``<image>``: encoding adds it as chat() does."""

    image: int
    turns: tuple[tuple[str, str], ...]


def _language(rng: random.Random) -> str:
    return rng.choice(("zh", "en"))


def _languages(rng: random.Random, turns: int) -> list[str]:
    """Mostly one language a conversation; one in ten switches per turn, so the answer's
    language follows the question's, not the conversation's."""
    if rng.random() < 0.1:
        return [_language(rng) for _ in range(turns)]
    return [_language(rng)] * turns


def random_conversation(scene: TableScene, image: int, rng: random.Random, mix: Mix) -> Conversation:
    """One to ``mix.max_turns`` questions about one scene, each of a different kind."""
    left = dict(mix.kinds)
    turns: list[tuple[str, str]] = []
    for turn, lang in enumerate(_languages(rng, rng.randint(1, mix.max_turns))):
        question = None
        if turn == 0 and mix.first is not None:
            left.pop(mix.first, None)
            question = ask(mix.first, scene, rng, lang, mix.multiple_choice)
        while question is None and left:  # None: that kind is not about this scene (a steamer's colour)
            kind = rng.choices(list(left), list(left.values()))[0]
            del left[kind]
            question = ask(kind, scene, rng, lang, mix.multiple_choice)
        if question is not None:
            turns.append((question.text, question.answer))
    if not turns:  # no kind of the mix is about this scene: a caption always is
        question = ask_describe(scene, rng, _language(rng))
        turns.append((question.text, question.answer))
    return Conversation(image, tuple(turns))


def random_scenes(seed: int, count: int) -> list[TableScene]:
    """``count`` generic scenes, a pure function of the seed."""
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def conversations(scenes: list[TableScene], count: int, seed: int, mix: Mix = TALK) -> list[Conversation]:
    """``count`` conversations about ``scenes``, a pure function of its arguments.

    They cycle over the scenes, each visit asking new questions, so a few hundred pictures
    (drawing them is the slow part) carry thousands of conversations.
    """
    rng = random.Random(seed)
    return [random_conversation(scenes[i % len(scenes)], i % len(scenes), rng, mix) for i in range(count)]


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


def encode(talk: Conversation, tokenizer, template: str, system_message: str,
           num_image_token: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation, exactly as ``chat()`` prompts it turn by turn.

    For each turn the prompt is the template's text up to "<|im_start|>assistant\\n" (with
    ``<image>`` expanded into ``<img>`` + ``<IMG_CONTEXT>`` x 256 + ``</img>``), followed by the
    answer and "<|im_end|>", which alone carry labels. The pieces are tokenized one by one; they
    meet at a newline or a special token, which the tokenizer never merges across, so the ids are
    those of the whole text.
    """
    conv = get_conv_template(template)
    conv.system_message = system_message
    image_tokens = "<img>" + "<IMG_CONTEXT>" * num_image_token + "</img>"
    ids: list[int] = []
    labels: list[int] = []
    said = ""
    for turn, (question, answer) in enumerate(talk.turns):
        conv.append_message(conv.roles[0], "<image>\n" + question if turn == 0 else question)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        prompt_ids = tokenizer(prompt[len(said):].replace("<image>", image_tokens, 1),
                               add_special_tokens=turn == 0).input_ids
        answer_ids = tokenizer(answer + conv.sep, add_special_tokens=False).input_ids
        ids += prompt_ids + answer_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        conv.messages[-1] = (conv.roles[1], answer)
        said = conv.get_prompt()
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

# InternVL2 starts from InternViT, a vision encoder pretrained on its own before any language
# model meets it (FACTS.md section 4). A seeded random ViT is no such thing: measured with a
# linear probe, its features tell the food dataset's dishes apart on 11 % of held-out pictures
# (chance 4 %), while a colour histogram of the plate's middle manages 66 %. So the tiny base
# first trains its ViT to name what generic pictures hold: the container and its colour, and
# which colours and shapes the pieces have (several may be there: one yes/no output each). The
# outputs read the pixel-shuffled tokens that mlp1 later receives, averaged and maxed over the
# picture, so that small pieces count as much as the big plate.
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
    """Linear read-outs of the pooled tokens; thrown away after stage 0."""

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


def _batches(model, tokenizer, talks: list[Conversation], batch_size: int) -> Iterator[Batch]:
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
def evaluate(model, tokenizer, features: torch.Tensor, talks: list[Conversation], batch_size: int) -> float:
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


def run_stage(model, tokenizer, features: torch.Tensor, talks: list[Conversation], stage: int, lr: float,
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
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
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


def train_base(out_path: str | Path = BASE_WEIGHTS, seed: int = 0, recipe: Recipe = Recipe(),
               progress: bool = True) -> Path:
    """Train the talking base from the seeded random tiny model and write its weights.

    The file is a float32 safetensors state dict of the whole model (about 5 MB), written to a
    temporary file and renamed into place, so an interrupted run leaves the old weights intact;
    the ``tokenizer.model`` it was trained with is written beside it.
    With ``progress`` the stages show a progress bar and a summary is printed at the end.
    """
    from safetensors.torch import save

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
    args = parser.parse_args(argv)
    train_base(args.out, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
