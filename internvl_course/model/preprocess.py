"""From a picture to InternVL2's input: dynamic tiling, the tile transform, the token budget.

InternVL2 sees a picture as a few 448x448 tiles plus, when there is more than one, a thumbnail
of the whole picture (docs/design.md, "InternVL2"; InternVL's README and model cards describe the
same recipe, this file is our own code for it):

1. every grid of ``cols x rows`` tiles with ``min_num <= cols * rows <= max_num`` is a
   candidate, fewest tiles first;
2. the grid whose shape ``cols / rows`` is closest to the picture's ``width / height`` wins;
   on an exact tie a later (larger) grid wins only if the picture has more than half the
   pixels that grid would hold (``width * height > 0.5 * 448^2 * cols * rows``), so a small
   picture is not blown up into many tiles;
3. the picture is resized to ``(448 * cols, 448 * rows)`` and cut into tiles row by row, left to
   right; with ``use_thumbnail`` and more than one tile, the whole picture resized to 448x448
   comes last;
4. each tile is normalised with the ImageNet mean and std; each becomes 256 tokens in the LLM.

``load_image`` is the whole path from a file (or bytes, an array, a PIL image) to the tensor
``model.chat`` takes, with the care real files need: EXIF orientation, every colour mode, and an
error that names the file when it is missing, empty, truncated or not an image.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: InternVL2's tile side, ViT patch side and pixel-shuffle ratio (InternVL2-2B's config.json).
IMAGE_SIZE = 448
PATCH_SIZE = 14
DOWNSAMPLE_RATIO = 0.5

#: ``scheme://`` at the start of a string: a web address (http, https, ftp, s3 ...), which Path()
#: would quietly turn into a relative path with one slash.
_WEB_ADDRESS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image]


class ImageLoadError(ValueError):
    """A file or buffer that exists but cannot be read as a picture; the message names it."""


# ---------------------------------------------------------------------------------------------
# Choosing the grid: pure arithmetic, so the token budget needs no pixels at all
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def candidate_grids(min_num: int = 1, max_num: int = 12) -> tuple[tuple[int, int], ...]:
    """Every ``(cols, rows)`` with ``min_num <= cols * rows <= max_num``, fewest tiles first.

    Grids with the same number of tiles are ordered by columns. InternVL orders them the way a
    Python set happens to iterate; that can only matter when two grids of equal count tie
    exactly, which never happens with ``min_num=1`` (tests/test_preprocess.py proves it).
    """
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    grids = [(cols, rows) for cols in range(1, max_num + 1) for rows in range(1, max_num + 1)
             if min_num <= cols * rows <= max_num]
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


def find_closest_aspect_ratio(aspect_ratio: float, target_ratios: list[tuple[int, int]] | tuple[tuple[int, int], ...],
                              width: int, height: int, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """The grid in ``target_ratios`` (in order) whose ``cols / rows`` is closest to ``aspect_ratio``.

    Distances are compared as floats, exactly as InternVL does, because its tie rule depends on
    exact equality: a later grid at the same distance replaces the current choice only when the
    picture's area exceeds half of that grid's area in pixels.
    """
    if not target_ratios:
        raise ValueError("target_ratios is empty: there is no grid to choose from")
    best, best_diff = target_ratios[0], math.inf
    area = width * height
    for cols, rows in target_ratios:
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def choose_grid(width: int, height: int, min_num: int = 1, max_num: int = 12,
                image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(cols, rows)`` of tiles for a ``width x height`` picture: step 1 and 2 of the recipe."""
    if width < 1 or height < 1:
        raise ValueError(f"a picture needs at least 1x1 pixels, got {width}x{height}")
    return find_closest_aspect_ratio(width / height, candidate_grids(min_num, max_num), width, height, image_size)


def num_tiles(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = IMAGE_SIZE,
              use_thumbnail: bool = True) -> int:
    """How many 448x448 images a ``width x height`` picture becomes, the thumbnail included."""
    cols, rows = choose_grid(width, height, min_num, max_num, image_size)
    return cols * rows + (1 if use_thumbnail and cols * rows > 1 else 0)


def tokens_per_tile(image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE,
                    downsample_ratio: float = DOWNSAMPLE_RATIO) -> int:
    """(448 / 14)^2 = 1024 patches, times 0.5^2 from pixel shuffle: 256 tokens per tile."""
    return int((image_size // patch_size) ** 2 * downsample_ratio**2)


def num_image_tokens(width: int, height: int, max_num: int = 12, min_num: int = 1, image_size: int = IMAGE_SIZE,
                     patch_size: int = PATCH_SIZE, downsample_ratio: float = DOWNSAMPLE_RATIO,
                     use_thumbnail: bool = True) -> int:
    """The ``<IMG_CONTEXT>`` tokens a ``width x height`` picture costs in the LLM's context."""
    tiles = num_tiles(width, height, min_num, max_num, image_size, use_thumbnail)
    return tiles * tokens_per_tile(image_size, patch_size, downsample_ratio)


# ---------------------------------------------------------------------------------------------
# Cutting the tiles
# ---------------------------------------------------------------------------------------------


def tile_boxes(cols: int, rows: int, image_size: int = IMAGE_SIZE) -> list[tuple[int, int, int, int]]:
    """The (left, top, right, bottom) of each tile in the resized picture, row by row."""
    return [(c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size)
            for r in range(rows) for c in range(cols)]


def dynamic_preprocess(image: Image.Image, min_num: int = 1, max_num: int = 12, image_size: int = IMAGE_SIZE,
                       use_thumbnail: bool = False) -> list[Image.Image]:
    """Cut ``image`` into the tiles InternVL2 sees (steps 1-3 of the recipe), in reading order.

    ``use_thumbnail=False`` is InternVL's default here; ``load_image`` and InternVL2's config
    (``use_thumbnail: true``) turn it on.
    """
    cols, rows = choose_grid(image.width, image.height, min_num, max_num, image_size)
    resized = image.resize((image_size * cols, image_size * rows), Image.Resampling.BICUBIC)
    tiles = [resized.crop(box) for box in tile_boxes(cols, rows, image_size)]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def build_transform(input_size: int = IMAGE_SIZE) -> Callable[[Image.Image], torch.Tensor]:
    """One tile -> a normalised [3, input_size, input_size] float tensor (step 4).

    The resize does nothing to a tile that already has the right size; it is there so the same
    transform also serves a single whole picture, which is how InternVL's fixed-size path works.
    """
    # torchvision is imported here, not at the top, so that the grid arithmetic above can be
    # used (by the demo, by the token-budget plots) without loading it.
    from torchvision import transforms as T

    return T.Compose([
        T.Lambda(to_rgb),
        T.Resize((input_size, input_size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


# ---------------------------------------------------------------------------------------------
# Reading a picture from anything a student may hold
# ---------------------------------------------------------------------------------------------


def _scaled_to_8_bit(array: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Map high-bit-depth or float pixel values to 0..255 instead of clipping them.

    PIL's own ``convert`` clips: a 16-bit grey of 32768 (mid-grey) would become 255 (white), a
    float 0.5 would become 0 (black).
    """
    if array.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
    elif sixteen_bit or int(array.max(initial=0)) > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return np.clip(np.nan_to_num(array.astype(np.float64) * scale), 0, 255).round().astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, the way a person would expect the picture to look.

    Transparent areas become white (``convert("RGB")`` would reveal whatever colour hides under
    the alpha, often black); 16-bit and float greys are rescaled rather than clipped; palette
    pictures keep their transparency; CMYK uses PIL's conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        grey = _scaled_to_8_bit(np.asarray(image), sixteen_bit=image.mode.startswith("I;16"))
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    """An HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16, bool or float in 0..1) -> a PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"a picture array must be HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) with H, W >= 1; "
                         f"got shape {array.shape}. A channels-first CxHxW array needs array.transpose(1, 2, 0).")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = _scaled_to_8_bit(array, sixteen_bit=array.dtype == np.uint16)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.shape[2] if array.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


@contextlib.contextmanager
def _truncated_images_are_errors() -> Iterator[None]:
    """Make PIL raise on a truncated file while we decode one.

    LMDeploy sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` for the whole process when it is
    imported, after which PIL silently pads a cut-off file with grey: a broken download would
    then be trained on or chatted about without anyone noticing.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


#: The most pixels a picture file may have. The model sees at most ``max_num`` tiles of 448x448
#: (12 tiles and a thumbnail: 2.6 megapixels), so more pixels add no detail it can see, only
#: memory: 3 bytes a pixel once decoded and as much again while the picture is resized (a
#: 169-megapixel JPEG took 1.1 GB). 64 megapixels admits every phone's full-resolution photo up to
#: 48 and 50 megapixels, and stays below PIL's own decompression-bomb warning (89 megapixels).
MAX_PIXELS = 64_000_000


@contextlib.contextmanager
def _pil_size_check_off() -> Iterator[None]:
    """Let ``_decode`` compare the size itself while PIL reads a header: PIL's decompression-bomb
    check would otherwise print a warning above 89 megapixels and raise above 179, neither naming
    the file. The size is then refused against a limit no higher than PIL's."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _refuse_too_many_pixels(image: Image.Image, name: str) -> None:
    """Refuse a picture over ``MAX_PIXELS`` (or PIL's own limit, when someone set it lower) from its
    header, before its pixels are decoded."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    limit = min(MAX_PIXELS, pil_limit) if pil_limit else MAX_PIXELS
    pixels = image.width * image.height
    if pixels > limit:
        whose = "" if limit == MAX_PIXELS else ", PIL.Image.MAX_IMAGE_PIXELS as set in this process"
        raise ImageLoadError(
            f"{name} has more pixels than the kit reads: {image.width}x{image.height} = {pixels / 1e6:.3g} megapixels; "
            f"the limit is {limit / 1e6:.3g} megapixels{whose} (the model sees at most a few 448x448 tiles, so more "
            "pixels only cost memory). Shrink it first, e.g. `magick IN.jpg -resize 4000x4000 OUT.jpg` (ImageMagick) "
            "or a photo editor's export at a smaller size, and give the smaller file.")


def _decode(data: bytes, name: str) -> Image.Image:
    """Decode encoded picture bytes completely, or raise ImageLoadError naming ``name``."""
    if not data:
        raise ImageLoadError(f"{name} is empty (0 bytes): there is no picture in it.")
    try:
        with _truncated_images_are_errors():
            with _pil_size_check_off():
                image = Image.open(io.BytesIO(data))  # reads the header only
            _refuse_too_many_pixels(image, name)
            image.load()  # the pixels come here
    except ImageLoadError:  # the kit's own refusal, which names the file already
        raise
    except UnidentifiedImageError:
        head = data[:16]
        raise ImageLoadError(f"{name} is not a picture PIL can read ({len(data)} bytes starting {head!r}). "
                             "Use a JPEG, PNG, WebP, BMP, GIF or TIFF file.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # what PIL's decoders raise on cut-off data
        raise ImageLoadError(f"{name} is truncated or corrupt ({len(data)} bytes; PIL says: {err}). "
                             "Download or copy it again.") from err
    return image


def open_image(source: ImageSource) -> Image.Image:
    """A path, encoded bytes, an array or a PIL image -> an upright 8-bit RGB PIL image.

    Upright means the EXIF orientation is applied: phones store portrait photos as landscape
    pixels plus a tag saying "rotate me", and a model fed the raw pixels sees the world sideways.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        return to_rgb(_array_to_image(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        image = _decode(data, f"the given bytes ({len(data)} bytes)")
    elif isinstance(source, (str, os.PathLike)):
        if isinstance(source, str) and _WEB_ADDRESS.match(source):
            raise ImageLoadError(f"{source!r} is a web address; the kit reads local files only. Download it first, "
                                 f"e.g. `curl -L -o picture.jpg '{source}'`, then give the file's path.")
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file (looked in {path.resolve().parent}).")
        if path.is_dir():
            raise ImageLoadError(f"{path} is a folder, not a picture file.")
        image = _decode(path.read_bytes(), str(path))
    else:
        raise TypeError(f"cannot read a picture from {type(source).__name__}: give a path, bytes, "
                        "a numpy array or a PIL image")
    return to_rgb(ImageOps.exif_transpose(image))


def load_image(source: ImageSource, input_size: int = IMAGE_SIZE, max_num: int = 12, *, min_num: int = 1,
               use_thumbnail: bool = True) -> torch.Tensor:
    """A picture -> ``pixel_values`` [tiles, 3, input_size, input_size] for ``model.chat``.

    ``use_thumbnail=True`` as in InternVL2's config: a picture cut into several tiles also gets
    one tile of the whole picture, so the model sees both detail and layout.
    """
    image = open_image(source)
    transform = build_transform(input_size)
    tiles = dynamic_preprocess(image, min_num=min_num, max_num=max_num, image_size=input_size,
                               use_thumbnail=use_thumbnail)
    return torch.stack([transform(tile) for tile in tiles])
