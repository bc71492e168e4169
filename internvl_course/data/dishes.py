"""Dish pictures: how each dish of the kit's food dataset looks, drawn with ``scenes.render``.

A dish is a *look*: the pieces on the plate (shape, colour, how many, how big), the sauce under
them and the plates it may come on. The look is what stays the same from one picture of a dish
to the next, so that a model can learn it; everything else changes with the seed: how many
pieces of each kind, their size, the plate and its colour, the tableware beside it, and, inside
``scenes.render``, the table, the position, scale and angle of the plate, the lighting, the
crumbs at the edges and the JPEG quality. No two seeds give the same picture, which is what
lets the train, validation and test splits hold different images of the same dishes.

The looks are stylised, not photographs: a tiny vision encoder trained on a laptop can learn
them, and a student can still tell the dumplings in a steamer from the mapo tofu in its bowl.
The dishes, their names and their facts come from ``corpus.DISHES`` so each is spelled one way
across the kit; only the drawing lives here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from internvl_course.data.words import DISHES, Dish
from internvl_course.data.drawing import Piece, Scene, render

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Layer:
    """Some pieces of one kind: a shape of ``scenes`` in one colour, ``count`` = (fewest, most)."""

    shape: str
    colour: RGB
    count: tuple[int, int]
    size: float


@dataclass(frozen=True)
class Look:
    """What every picture of a dish shares; ``plates`` are the containers it may be served in."""

    layers: tuple[Layer, ...]
    plates: tuple[str, ...] = ("round", "square")
    sauce: RGB | None = None
    plate_colours: tuple[RGB, ...] | None = None  # None: any of PLATE_COLOURS


# Everyday porcelain: white, blue-white, cream. A dish keeps its own look on any of them, so the
# plate colour is never the clue. Dark plates were dropped: for a vision encoder 64 numbers wide,
# a black plate moves a picture's features further than any dish does (a linear probe of the
# base's features named held-out dishes 79 % of the time on these plates, 62 % with black and
# celadon ones among them).
PLATE_COLOURS: tuple[RGB, ...] = ((245, 245, 240), (225, 235, 248), (248, 240, 220))
# How much of the picture the plate fills (``scenes.render``'s scale; its generic pictures use
# 0.72 to 0.95): food is photographed close up, and a close-up gives the pieces, not the table,
# most of the picture's 256 tokens (probe on held-out dishes: 52 % at the generic scale).
CLOSE_UP = (1.05, 1.25)
CLAY = ((125, 75, 50), (105, 60, 45))  # a clay pot
GREEN = (75, 160, 60)
RED_CHILI = (200, 35, 28)


def _l(shape: str, colour: RGB, fewest: int, most: int, size: float) -> Layer:
    return Layer(shape, colour, (fewest, most), size)


# 24 dishes of corpus.DISHES, every cuisine of corpus.CUISINES among them. Each look was chosen
# to differ from the others in at least two of: container, sauce, shapes, colours.
LOOKS: dict[str, Look] = {
    "宫保鸡丁": Look((_l("square", (215, 160, 100), 7, 9, 0.13), _l("dot", (205, 155, 95), 8, 12, 0.12),
                      _l("strip", (180, 30, 25), 4, 7, 0.14), _l("dot", GREEN, 3, 6, 0.08)),
                     sauce=(150, 60, 30)),
    "麻婆豆腐": Look((_l("square", (245, 240, 225), 8, 11, 0.14), _l("dot", (90, 50, 30), 8, 14, 0.07),
                      _l("dot", GREEN, 3, 6, 0.07)), plates=("bowl", "round"), sauce=(190, 40, 25)),
    "鱼香肉丝": Look((_l("strip", (165, 100, 65), 12, 16, 0.2), _l("strip", (40, 30, 30), 4, 7, 0.18),
                      _l("strip", (240, 140, 30), 4, 7, 0.18)), sauce=(160, 75, 40)),
    "水煮鱼": Look((_l("leaf", (245, 235, 215), 6, 9, 0.2), _l("dot", RED_CHILI, 10, 16, 0.07),
                     _l("dot", (60, 30, 20), 6, 12, 0.05)), plates=("bowl",), sauce=(205, 55, 20)),
    "担担面": Look((_l("noodle", (240, 210, 140), 14, 18, 0.45), _l("dot", (120, 70, 40), 6, 10, 0.09),
                     _l("leaf", GREEN, 2, 3, 0.15)), plates=("bowl",), sauce=(185, 70, 35)),
    "叉烧": Look((_l("rectangle", (190, 55, 45), 5, 7, 0.22), _l("leaf", GREEN, 1, 2, 0.15)),
                   sauce=(215, 150, 80)),
    "白切鸡": Look((_l("rectangle", (245, 228, 185), 6, 8, 0.22), _l("dot", (120, 185, 70), 3, 5, 0.1))),
    "虾饺": Look((_l("crescent", (248, 220, 210), 3, 4, 0.3),), plates=("steamer",)),
    "葱烧海参": Look((_l("oval", (40, 35, 35), 4, 6, 0.25), _l("strip", (110, 170, 70), 5, 8, 0.2)),
                     sauce=(95, 55, 30)),
    "小笼包": Look((_l("bun", (250, 245, 235), 5, 7, 0.24),), plates=("steamer",)),
    "狮子头": Look((_l("circle", (140, 85, 50), 2, 4, 0.33), _l("leaf", (200, 220, 150), 2, 3, 0.25)),
                     plates=("bowl",), sauce=(205, 165, 105)),
    "东坡肉": Look((_l("square", (165, 55, 35), 1, 2, 0.45), _l("leaf", GREEN, 3, 5, 0.2)),
                     plates=("square", "bowl"), sauce=(140, 40, 25)),
    "龙井虾仁": Look((_l("crescent", (245, 165, 140), 8, 12, 0.14), _l("leaf", (110, 170, 80), 6, 10, 0.09))),
    "佛跳墙": Look((_l("circle", (205, 175, 120), 2, 3, 0.18), _l("oval", (50, 40, 35), 2, 3, 0.2),
                     _l("dot", (110, 80, 60), 3, 5, 0.12)), plates=("bowl",), sauce=(200, 150, 80),
                    plate_colours=CLAY),
    "荔枝肉": Look((_l("circle", (210, 70, 50), 7, 10, 0.15), _l("dot", (240, 235, 220), 4, 6, 0.1)),
                     sauce=(200, 50, 40)),
    "剁椒鱼头": Look((_l("leaf", (205, 200, 190), 1, 1, 0.6), _l("dot", RED_CHILI, 20, 30, 0.08),
                       _l("dot", GREEN, 5, 8, 0.06)), sauce=(230, 120, 50)),
    "小炒肉": Look((_l("leaf", GREEN, 6, 9, 0.17), _l("oval", (190, 130, 90), 6, 8, 0.16),
                     _l("dot", (240, 235, 210), 3, 5, 0.06), _l("dot", RED_CHILI, 3, 5, 0.07))),
    "毛豆腐": Look((_l("rectangle", (235, 200, 110), 6, 8, 0.2), _l("dot", RED_CHILI, 4, 8, 0.07))),
    "北京烤鸭": Look((_l("oval", (150, 80, 40), 8, 12, 0.15), _l("circle", (245, 240, 220), 2, 3, 0.22),
                       _l("strip", (100, 170, 80), 4, 6, 0.16), _l("strip", (240, 240, 220), 3, 5, 0.14))),
    "红烧肉": Look((_l("square", (185, 80, 45), 6, 9, 0.17), _l("dot", GREEN, 2, 4, 0.07)),
                     plates=("round",), sauce=(110, 32, 18)),
    "西红柿炒鸡蛋": Look((_l("oval", (250, 215, 60), 5, 7, 0.2), _l("triangle", (220, 50, 35), 5, 7, 0.16),
                          _l("dot", GREEN, 2, 4, 0.06))),
    "饺子": Look((_l("crescent", (245, 240, 225), 6, 9, 0.2),)),
    "酸辣土豆丝": Look((_l("strip", (245, 220, 120), 24, 34, 0.2), _l("strip", RED_CHILI, 4, 7, 0.15))),
    "蛋炒饭": Look((_l("dot", (250, 238, 195), 50, 70, 0.1), _l("dot", (245, 200, 50), 12, 18, 0.1),
                     _l("dot", GREEN, 8, 12, 0.07)), plates=("round", "bowl")),
}

_unknown = sorted(set(LOOKS) - {dish.zh for dish in DISHES})
if _unknown:  # a typo here would silently drop a dish from the dataset
    raise ValueError(f"food.LOOKS names dishes that are not in corpus.DISHES: {', '.join(_unknown)}")

#: The dishes that have a look, in ``corpus.DISHES`` order.
FOOD_DISHES: tuple[Dish, ...] = tuple(dish for dish in DISHES if dish.zh in LOOKS)


def _jitter(colour: RGB, rng: random.Random, spread: float = 0.06) -> RGB:
    factor = rng.uniform(1 - spread, 1 + spread)
    return tuple(max(0, min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def _tableware(rng: random.Random, plate: str) -> tuple[str, ...]:
    """What lies beside the dish: chopsticks most of the time, a spoon more often with a bowl."""
    ware = []
    if rng.random() < 0.6:
        ware.append("pair of chopsticks")
    if rng.random() < (0.6 if plate == "bowl" else 0.25):
        ware.append("spoon")
    if rng.random() < 0.3:
        ware.append(rng.choice(("cup", "teapot")))
    if rng.random() < 0.2:
        ware.append("napkin")
    return tuple(ware)


def dish_scene(name: str, seed: int) -> Scene:
    """The ``Scene`` of one picture of dish ``name``: its look, varied by ``seed``.

    The choices made here use their own random stream (seeded by a string, which Python hashes
    the same way in every process), independent of the one ``scenes.render`` draws from.
    """
    if name not in LOOKS:
        raise KeyError(f"no look for {name!r}; dishes with a look: {', '.join(LOOKS)}")
    look = LOOKS[name]
    rng = random.Random(f"food.dish_scene:{name}:{seed}")
    plate = rng.choice(look.plates)
    plate_colour = rng.choice(look.plate_colours or PLATE_COLOURS)
    pieces = tuple(Piece(layer.shape, _jitter(layer.colour, rng), rng.randint(*layer.count),
                         layer.size * rng.uniform(0.9, 1.1)) for layer in look.layers)
    sauce = _jitter(look.sauce, rng) if look.sauce is not None else None
    return Scene(pieces=pieces, plate=plate, plate_colour=plate_colour, sauce=sauce,
                 tableware=_tableware(rng, plate), variation={"scale": rng.uniform(*CLOSE_UP)})


def draw_dish(name: str, seed: int, size: int = 448) -> Image.Image:
    """One picture of dish ``name`` (its Chinese name): a pure function of name, seed and size."""
    return render(dish_scene(name, seed), seed, size)
