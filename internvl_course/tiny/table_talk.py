"""What the tiny base is taught to say: table scenes, their wording, questions and conversations.

``internvl_course.tiny.pretrain`` trains the tiny base on conversations about generic pictures
from ``drawing.render`` (shapes on a plate, tableware beside it). This module writes them, as a
pure function of a seed: the facts of each picture (``TableScene``), the Chinese and English
sentences that describe it, the questions about it (``ask_*``) and which of them each training
stage asks (``Mix``), and multi-turn conversations (``TableTalk``) that cycle over the pictures.

Dish names, cuisines, ingredients and flavours appear only as words to read back from a list
(``ask_read_option``), never beside a picture of a dish: like a real LLM, the base knows the
words, but nothing ties a name to a look, so the food fine-tune starts from no knowledge of the
dishes and an evaluation measures what the fine-tune taught. The 4-choice questions use the
food VQA format (the question, then "A. ..." to "D. ..." on their own lines, answered with the
option and a sentence, "白色，盘子是白色的。"), so that later the format is already known and
only the knowledge is new.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from internvl_course.data.drawing import PLATES, Piece, Scene, render
from internvl_course.data.food_vqa import LETTERS
from internvl_course.data.food_vqa import options as option_lines
from internvl_course.data.words import COLOURS, CUISINES, DISHES, FLAVOURS, INGREDIENTS, NUMBERS, SHAPES, TABLEWARE
from internvl_course.model.preprocess import IMAGE_SIZE

# ---------------------------------------------------------------------------------------------
# What a picture holds
# ---------------------------------------------------------------------------------------------

ZH_COLOUR = {en: zh for zh, en in COLOURS.items()}
ZH_SHAPE = {en: zh for zh, en in SHAPES.items()}
WARE = {ware.en: ware for ware in TABLEWARE}
# The tableware drawing.render draws, in groups that share one spot beside the plate: a scene
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
assert set(CONTAINERS) == set(PLATES), "every plate drawing.render draws needs words here"


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
# Stage 2 looks, then talks: picture-only questions first (docs/benchmarks.md, "The tiny base's pretraining choices").
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
class TableTalk:
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


def random_conversation(scene: TableScene, image: int, rng: random.Random, mix: Mix) -> TableTalk:
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
    return TableTalk(image, tuple(turns))


def random_scenes(seed: int, count: int) -> list[TableScene]:
    """``count`` generic scenes, a pure function of the seed."""
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def conversations(scenes: list[TableScene], count: int, seed: int, mix: Mix = TALK) -> list[TableTalk]:
    """``count`` conversations about ``scenes``, a pure function of its arguments.

    They cycle over the scenes, each visit asking new questions, so a few hundred pictures
    (drawing them is the slow part) carry thousands of conversations.
    """
    rng = random.Random(seed)
    return [random_conversation(scenes[i % len(scenes)], i % len(scenes), rng, mix) for i in range(count)]
