"""Procedural pictures of things on a table: the one image generator of the kit.

Two datasets draw with it: the generic colour/shape/count scenes that teach the tiny base model
to talk about images (its miniature stage 1 and stage 2), and the food pictures of the kit's own
VQA dataset, where each dish is a recipe of pieces. A picture is a pure function of its
``Scene`` and a seed, so every dataset is rebuilt byte for byte.

Variation comes from the seed: table texture and colour, plate position and scale, rotation,
lighting, clutter at the edges and JPEG quality, so that train, validation and test images
differ while the content (what a question asks about) stays what the ``Scene`` says.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

# RGB for each colour name of ``corpus.COLOURS`` (English), chosen to be told apart after JPEG.
RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 35), "orange": (240, 140, 30), "yellow": (245, 210, 50), "green": (60, 160, 60),
    "blue": (45, 90, 200), "purple": (130, 60, 160), "white": (245, 245, 240), "black": (30, 30, 30),
    "brown": (125, 75, 40), "grey": (140, 140, 140), "pink": (240, 150, 180),
}

# Shapes a caption can name (``corpus.SHAPES``) plus food-only ones (strips, dots, leaves, ...).
POLYGON_SHAPES = ("square", "triangle", "rectangle", "diamond", "hexagon", "star")
ROUND_SHAPES = ("circle", "oval", "dot")
FOOD_SHAPES = ("strip", "leaf", "crescent", "noodle", "bun")
ALL_SHAPES = POLYGON_SHAPES + ROUND_SHAPES + FOOD_SHAPES
PLATES = ("round", "square", "bowl", "steamer")

SUPERSAMPLE = 2  # draw at twice the size, then downscale: cheap anti-aliasing


@dataclass(frozen=True)
class Piece:
    """``count`` copies of one shape in one colour; ``size`` is relative to the plate radius."""

    shape: str
    colour: str | tuple[int, int, int]
    count: int = 1
    size: float = 0.18

    def rgb(self) -> tuple[int, int, int]:
        return self.colour if isinstance(self.colour, tuple) else RGB[self.colour]


@dataclass(frozen=True)
class Scene:
    """What is in the picture. Everything not said here is varied by the seed."""

    pieces: tuple[Piece, ...] = ()
    plate: str = "round"
    plate_colour: str | tuple[int, int, int] = "white"
    sauce: tuple[int, int, int] | None = None  # a pool under the pieces, e.g. braising liquid
    tableware: tuple[str, ...] = ()  # English names: "pair of chopsticks", "spoon", "cup"
    variation: dict[str, float] = field(default_factory=dict)  # overrides, e.g. {"rotation": 0}

    def __post_init__(self) -> None:
        for piece in self.pieces:
            if piece.shape not in ALL_SHAPES:
                raise ValueError(f"unknown shape {piece.shape!r}; choose one of {', '.join(ALL_SHAPES)}")
            if not isinstance(piece.colour, tuple) and piece.colour not in RGB:
                raise ValueError(f"unknown colour {piece.colour!r}; choose one of {', '.join(RGB)} or an RGB tuple")
            if piece.count < 0:
                raise ValueError(f"piece count must be >= 0, got {piece.count}")
        if self.plate not in PLATES:
            raise ValueError(f"unknown plate {self.plate!r}; choose one of {', '.join(PLATES)}")


def _rgb(colour: str | tuple[int, int, int]) -> tuple[int, int, int]:
    return colour if isinstance(colour, tuple) else RGB[colour]


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * factor))) for c in rgb)  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a shape of outer radius r, stretched for rectangles and diamonds, then turned."""
    if shape == "star":
        local = [(r if i % 2 == 0 else 0.45 * r, -math.pi / 2 + i * math.pi / 5) for i in range(10)]
    else:
        sides = {"square": 4, "rectangle": 4, "diamond": 4, "triangle": 3, "hexagon": 6}[shape]
        offset = math.pi / 4 if shape in ("square", "rectangle") else -math.pi / 2
        local = [(r, offset + 2 * math.pi * i / sides) for i in range(sides)]
    sx, sy = {"rectangle": (1.4, 0.75), "diamond": (0.7, 1.15)}.get(shape, (1.0, 1.0))
    points = []
    for radius, a in local:
        x, y = math.cos(a) * radius * sx, math.sin(a) * radius * sy
        points.append((cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle)))
    return points


def _draw_piece(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float,
                rgb: tuple[int, int, int]) -> None:
    outline = _shade(rgb, 0.7)
    width = max(1, int(r * 0.08))
    if shape in POLYGON_SHAPES:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=rgb, outline=outline, width=width)
    elif shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb, outline=outline, width=width)
    elif shape in ("oval", "dot", "bun"):
        rx, ry = {"oval": (r, r * 0.6), "dot": (r * 0.45, r * 0.4), "bun": (r, r * 0.85)}[shape]
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=rgb, outline=outline, width=width)
        if shape == "bun":  # the pleats on top of a steamed bun
            for k in range(5):
                a = angle + k * 2 * math.pi / 5
                draw.line([cx, cy, cx + math.cos(a) * rx * 0.5, cy + math.sin(a) * ry * 0.5], fill=outline, width=width)
    elif shape == "strip":
        dx, dy = math.cos(angle) * r, math.sin(angle) * r
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=rgb, width=max(2, int(r * 0.35)))
    elif shape == "leaf":
        draw.chord([cx - r, cy - r * 0.5, cx + r, cy + r * 0.5], 0, 180, fill=rgb, outline=outline)
        draw.chord([cx - r, cy - r * 0.5, cx + r, cy + r * 0.5], 180, 360, fill=_shade(rgb, 1.1), outline=outline)
    elif shape == "crescent":  # a dumpling seen from above
        draw.pieslice([cx - r, cy - r * 0.7, cx + r, cy + r * 0.9], 180, 360, fill=rgb, outline=outline, width=width)
        for k in range(4):
            x = cx - r * 0.6 + k * r * 0.4
            draw.line([x, cy - r * 0.1, x + r * 0.1, cy - r * 0.5], fill=outline, width=width)
    elif shape == "noodle":
        points = [(cx - r + 2 * r * t / 12, cy + math.sin(t + angle * 3) * r * 0.25) for t in range(13)]
        draw.line(points, fill=rgb, width=max(2, int(r * 0.12)), joint="curve")


def _table(size: int, rng: random.Random) -> Image.Image:
    """A wooden table or a checked cloth, in a random warm or neutral colour."""
    base = rng.choice([(160, 110, 70), (120, 80, 50), (200, 180, 150), (90, 90, 100), (180, 60, 50),
                       (70, 110, 90), (220, 215, 205)])
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.6:  # wood grain
        for _ in range(40):
            y = rng.uniform(0, size)
            draw.line([(0, y), (size, y + rng.uniform(-20, 20))], fill=_shade(base, rng.uniform(0.85, 1.1)),
                      width=rng.randint(1, 4))
    else:  # checked cloth
        step = rng.randint(size // 12, size // 6)
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle([x, y, x + step, y + step], fill=_shade(base, 1.2))
    return image


def _tableware(draw: ImageDraw.ImageDraw, name: str, size: int, rng: random.Random) -> None:
    s = size
    if name == "pair of chopsticks":
        x = rng.uniform(0.82, 0.9) * s
        for dx in (0, 0.03 * s):
            draw.line([x + dx, 0.15 * s, x + dx + 0.02 * s, 0.85 * s], fill=(190, 150, 90), width=max(2, s // 70))
    elif name == "spoon":
        x, y = rng.uniform(0.05, 0.12) * s, rng.uniform(0.55, 0.7) * s
        draw.ellipse([x, y, x + 0.08 * s, y + 0.12 * s], fill=(200, 200, 205), outline=(120, 120, 125))
        draw.line([x + 0.04 * s, y + 0.12 * s, x + 0.04 * s, y + 0.3 * s], fill=(200, 200, 205), width=max(2, s // 60))
    elif name in ("cup", "teapot", "bowl", "clay pot"):
        x, y = rng.uniform(0.03, 0.1) * s, rng.uniform(0.05, 0.15) * s
        r = 0.09 * s if name != "teapot" else 0.12 * s
        fill = {"cup": (225, 235, 240), "teapot": (150, 90, 60), "bowl": (240, 240, 235), "clay pot": (120, 70, 50)}[name]
        draw.ellipse([x, y, x + 2 * r, y + 2 * r], fill=fill, outline=_shade(fill, 0.6), width=max(1, s // 150))
        draw.ellipse([x + r * 0.4, y + r * 0.4, x + r * 1.6, y + r * 1.6], fill=_shade(fill, 0.85))
    elif name == "napkin":
        x, y = rng.uniform(0.75, 0.85) * s, rng.uniform(0.75, 0.85) * s
        draw.rectangle([x, y, x + 0.14 * s, y + 0.14 * s], fill=(235, 230, 215), outline=(200, 195, 180))
    elif name in ("fork",):
        x = rng.uniform(0.08, 0.14) * s
        draw.line([x, 0.25 * s, x, 0.75 * s], fill=(200, 200, 205), width=max(2, s // 70))
        for k in range(3):
            draw.line([x - 0.02 * s + k * 0.02 * s, 0.2 * s, x - 0.02 * s + k * 0.02 * s, 0.28 * s],
                      fill=(200, 200, 205), width=max(1, s // 120))


def render(scene: Scene, seed: int, size: int = 448) -> Image.Image:
    """Draw ``scene`` as an RGB picture of ``size`` x ``size`` pixels; the seed picks the variation."""
    rng = random.Random(seed)
    v = scene.variation
    big = size * SUPERSAMPLE
    image = _table(big, rng)
    draw = ImageDraw.Draw(image)

    for _ in range(int(v.get("clutter", rng.randint(0, 3)))):  # crumbs and stains near the edges
        x, y = rng.choice([(rng.uniform(0, 0.15), rng.uniform(0, 1)), (rng.uniform(0.85, 1), rng.uniform(0, 1))])
        r = rng.uniform(0.01, 0.03) * big
        draw.ellipse([x * big - r, y * big - r, x * big + r, y * big + r], fill=_shade(image.getpixel((0, 0)), 0.75))
    for name in scene.tableware:
        _tableware(draw, name, big, rng)

    scale = v.get("scale", rng.uniform(0.72, 0.95))
    radius = big * 0.36 * scale
    cx = big / 2 + rng.uniform(-0.05, 0.05) * big
    cy = big / 2 + rng.uniform(-0.05, 0.05) * big
    plate_rgb = _rgb(scene.plate_colour)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    draw.ellipse([b + radius * 0.05 for b in box], fill=_shade(image.getpixel((0, 0)), 0.6))  # shadow
    if scene.plate == "square":
        draw.rounded_rectangle(box, radius=radius * 0.15, fill=plate_rgb, outline=_shade(plate_rgb, 0.8), width=big // 150)
        inner = radius * 0.8
    elif scene.plate == "steamer":
        draw.ellipse(box, fill=(200, 160, 100), outline=(150, 110, 60), width=big // 100)
        for k in range(1, 4):
            draw.ellipse([cx - radius * k / 4, cy - radius * k / 4, cx + radius * k / 4, cy + radius * k / 4],
                         outline=(170, 130, 75), width=big // 300)
        inner = radius * 0.82
    else:
        draw.ellipse(box, fill=plate_rgb, outline=_shade(plate_rgb, 0.8), width=big // 150)
        rim = 0.82 if scene.plate == "round" else 0.7
        draw.ellipse([cx - radius * rim, cy - radius * rim, cx + radius * rim, cy + radius * rim],
                     fill=_shade(plate_rgb, 0.93 if scene.plate == "round" else 0.8))
        inner = radius * (rim - 0.08)
    if scene.sauce is not None:
        draw.ellipse([cx - inner * 0.85, cy - inner * 0.8, cx + inner * 0.85, cy + inner * 0.8], fill=scene.sauce)

    placed: list[tuple[float, float, float]] = []
    for piece in scene.pieces:
        r = piece.size * radius
        for _ in range(piece.count):
            for _attempt in range(30):  # keep pieces apart when there is room
                a, d = rng.uniform(0, 2 * math.pi), math.sqrt(rng.random()) * max(inner - r, 0)
                x, y = cx + math.cos(a) * d, cy + math.sin(a) * d
                if all(math.hypot(x - px, y - py) > (r + pr) * 0.8 for px, py, pr in placed):
                    break
            placed.append((x, y, r))
            _draw_piece(draw, piece.shape, x, y, r, rng.uniform(0, 2 * math.pi),
                        _shade(piece.rgb(), rng.uniform(0.92, 1.06)))

    rotation = v.get("rotation", rng.uniform(-12, 12))
    if rotation:
        image = image.rotate(rotation, resample=Image.BICUBIC, fillcolor=image.getpixel((0, 0)))
    image = image.resize((size, size), Image.LANCZOS)
    image = ImageEnhance.Brightness(image).enhance(v.get("brightness", rng.uniform(0.8, 1.15)))
    image = ImageEnhance.Contrast(image).enhance(v.get("contrast", rng.uniform(0.85, 1.15)))
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    quality = int(v.get("jpeg_quality", rng.randint(55, 95)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
