"""Dynamic tiling decides like InternVL (docs/design.md, "InternVL2"), and load_image reads real-world files.

The grid acceptance test compares ``choose_grid`` with a reference written here from the
description in docs/design.md, in a different shape: instead of InternVL's running "best so far" loop
it collects every grid at the smallest distance and applies the tie rule to that set.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from internvl_course.model import preprocess
from internvl_course.model.preprocess import (IMAGENET_MEAN, IMAGENET_STD, ImageLoadError, choose_grid,
                                        dynamic_preprocess, load_image, num_image_tokens, open_image)

TILE = 448


def reference_grid(width: int, height: int, max_num: int, min_num: int = 1) -> tuple[int, int]:
    """docs/design.md, "InternVL2" (dynamic tiling), read literally.

    Candidates: every (i, j) with min_num <= i*j <= max_num, sorted by i*j. Choose the one whose
    i/j is closest to width/height (as floats, like InternVL). Among exact ties the first is
    taken, and each later tied grid replaces the choice when width*height > 0.5 * 448^2 * i*j:
    so the winner is the last tied grid that passes that test, or the first tied grid if none does.
    """
    ratio = width / height
    grids = sorted(((i, j) for i in range(1, max_num + 1) for j in range(1, max_num + 1)
                    if min_num <= i * j <= max_num), key=lambda g: g[0] * g[1])
    distance = {g: abs(ratio - g[0] / g[1]) for g in grids}
    closest = min(distance.values())
    tied = [g for g in grids if distance[g] == closest]
    passing = [g for g in tied[1:] if width * height > 0.5 * TILE * TILE * g[0] * g[1]]
    return passing[-1] if passing else tied[0]


def size_grid() -> list[tuple[int, int]]:
    """Over 500 (width, height) pairs from 1 to 8000 px, with many exact aspect-ratio ties.

    A log-spaced square of sides, the tutorial's sizes, plus p:q shapes (p, q <= 8) at scales
    whose area falls either side of the tie rule's thresholds: 3:2 with max_num 4, for example,
    is equally far from 1x1 and 2x1 and 2x2.
    """
    sides = sorted(set(np.geomspace(1, 8000, 22).round().astype(int).tolist())
                   | {2, 3, 447, 448, 449, 600, 800, 896, 1000, 1080, 1344, 1920, 4032})
    sizes = {(w, h) for w in sides for h in sides}
    for p in range(1, 9):
        for q in range(1, 9):
            for k in (20, 60, 150, 230, 300, 448, 700, 1000):
                if max(p, q) * k <= 8000:
                    sizes.add((p * k, q * k))
    return sorted(sizes)


SIZES = size_grid()


def test_grid_acceptance_over_500_sizes_and_every_max_num():
    assert len(SIZES) >= 500 and min(min(s) for s in SIZES) == 1 and max(max(s) for s in SIZES) == 8000
    ties_won_by_area = ties_kept_small = 0
    for width, height in SIZES:
        for max_num in range(1, 13):
            expected = reference_grid(width, height, max_num)
            assert choose_grid(width, height, max_num=max_num) == expected, (width, height, max_num)
            ratio = width / height
            tied = [g for g in preprocess.candidate_grids(1, max_num)
                    if abs(ratio - g[0] / g[1]) == abs(ratio - expected[0] / expected[1])]
            if len(tied) > 1:
                if expected == tied[0]:
                    ties_kept_small += 1
                else:
                    ties_won_by_area += 1
    # The tie rule was exercised both ways, so the grid really tests it.
    assert ties_won_by_area > 100 and ties_kept_small > 100


@pytest.mark.parametrize("size, grid, tiles", [
    ((800, 600), (4, 3), 13), ((1920, 1080), (4, 2), 9), ((1000, 1000), (3, 3), 10), ((448, 448), (1, 1), 1)])
def test_the_examples_of_the_reference(size, grid, tiles):
    assert choose_grid(*size, max_num=12) == grid
    assert preprocess.num_tiles(*size, max_num=12) == tiles
    assert num_image_tokens(*size, max_num=12) == tiles * 256


def test_the_tie_rule_gives_bigger_pictures_more_tiles():
    # 3:2 with max_num 5: 1x1, 2x1 and 2x2 are all 0.5 away; the area decides.
    assert choose_grid(300, 200, max_num=5) == (1, 1)  # 60 000 px: not more than half of 2 tiles
    assert choose_grid(600, 400, max_num=5) == (2, 1)  # 240 000 px: more than half of 2, not of 4
    assert choose_grid(1500, 1000, max_num=5) == (2, 2)


def test_grids_of_equal_count_never_tie_when_min_num_is_1():
    """InternVL orders grids of equal tile count by set iteration; we order them by columns.

    Two grids can only tie at the midpoint of their ratios; with min_num=1 some other grid is
    always strictly closer there (exact fractions), so the order can never change a decision.
    """
    for max_num in range(1, 13):
        grids = preprocess.candidate_grids(1, max_num)
        for a in grids:
            for b in grids:
                if a < b and a[0] * a[1] == b[0] * b[1]:
                    middle = (Fraction(*a) + Fraction(*b)) / 2
                    gap = abs(middle - Fraction(*a))
                    assert any(abs(middle - Fraction(*g)) < gap for g in grids), (max_num, a, b)


def test_candidates_and_bad_arguments():
    assert preprocess.candidate_grids(1, 1) == ((1, 1),)
    assert len(preprocess.candidate_grids(1, 12)) == 35
    counts = [c * r for c, r in preprocess.candidate_grids(1, 12)]
    assert counts == sorted(counts)
    assert all(c * r >= 3 for c, r in preprocess.candidate_grids(3, 6))
    with pytest.raises(ValueError, match="min_num"):
        preprocess.candidate_grids(0, 4)
    with pytest.raises(ValueError, match="min_num"):
        preprocess.candidate_grids(5, 4)
    with pytest.raises(ValueError, match="1x1"):
        choose_grid(0, 10)
    with pytest.raises(ValueError, match="empty"):
        preprocess.find_closest_aspect_ratio(1.0, [], 10, 10, TILE)


def test_tokens_per_tile():
    assert preprocess.tokens_per_tile() == 256
    assert preprocess.tokens_per_tile(224) == 64
    assert num_image_tokens(800, 600, max_num=6, use_thumbnail=False) == 6 * 256  # 3x2


def coordinate_picture(width: int, height: int) -> Image.Image:
    """Red grows left to right, green top to bottom: a tile's mean colour says where it came from."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).round().astype(np.uint8))


@pytest.mark.parametrize("width, height, max_num", [
    (800, 600, 12), (1920, 1080, 12), (600, 1400, 6), (2400, 300, 12), (60, 40, 12), (448, 448, 12), (900, 300, 2)])
def test_tiles_count_size_and_reading_order(width, height, max_num):
    picture = coordinate_picture(width, height)
    cols, rows = reference_grid(width, height, max_num)
    tiles = dynamic_preprocess(picture, max_num=max_num, use_thumbnail=True)
    assert len(tiles) == cols * rows + (cols * rows > 1)
    assert all(t.size == (TILE, TILE) for t in tiles)
    resized = picture.resize((TILE * cols, TILE * rows), Image.Resampling.BICUBIC)
    for k, tile in enumerate(tiles[:cols * rows]):
        row, col = divmod(k, cols)  # row-major: left to right, then the next row
        box = (col * TILE, row * TILE, (col + 1) * TILE, (row + 1) * TILE)
        assert tile.tobytes() == resized.crop(box).tobytes()
        red, green, _ = np.asarray(tile, dtype=float).mean(axis=(0, 1))
        assert abs(red - 255 * (col + 0.5) / cols) < 3 and abs(green - 255 * (row + 0.5) / rows) < 3
    if cols * rows > 1:
        assert tiles[-1].tobytes() == picture.resize((TILE, TILE), Image.Resampling.BICUBIC).tobytes()


@pytest.mark.parametrize("width, height, max_num", [
    (100, 100, 12), (1000, 1000, 1), (1000, 1000, 12), (20, 300, 12), (300, 200, 5), (600, 400, 5)])
@pytest.mark.parametrize("use_thumbnail", [True, False])
def test_thumbnail_exactly_when_there_are_several_tiles(width, height, max_num, use_thumbnail):
    cols, rows = reference_grid(width, height, max_num)
    tiles = dynamic_preprocess(Image.new("RGB", (width, height), "orange"), max_num=max_num,
                               use_thumbnail=use_thumbnail)
    assert len(tiles) == cols * rows + (1 if use_thumbnail and cols * rows > 1 else 0)
    assert preprocess.num_tiles(width, height, max_num=max_num, use_thumbnail=use_thumbnail) == len(tiles)


# ---------------------------------------------------------------------------------------------
# load_image: every kind of source and colour mode, and clear errors
# ---------------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor([(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)])


def test_load_image_from_path_bytes_array_and_pil_agree(tmp_path):
    picture = coordinate_picture(800, 600)
    path = tmp_path / "picture.png"
    picture.save(path)
    from_path = load_image(path, max_num=6)
    assert from_path.shape == (7, 3, TILE, TILE) and from_path.dtype == torch.float32  # 3x2 + thumbnail
    for source in (str(path), path.read_bytes(), bytearray(path.read_bytes()), np.asarray(picture), picture):
        assert torch.equal(load_image(source, max_num=6), from_path)


def test_load_image_normalises_with_imagenet_statistics():
    white = load_image(Image.new("RGB", (448, 448), "white"))
    assert white.shape == (1, 3, TILE, TILE)
    torch.testing.assert_close(white[0, :, 200, 200], normalised((255, 255, 255)))


def test_exif_orientation_is_applied():
    # Stored landscape (red left half, blue right half) with "rotate 90 degrees clockwise" in EXIF.
    stored = Image.new("RGB", (600, 300), "blue")
    stored.paste((255, 0, 0), (0, 0, 300, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, the pixels were not
    data = encoded(stored, "JPEG", quality=95, exif=exif)
    upright = open_image(data)
    assert upright.size == (300, 600)
    top, bottom = np.asarray(upright)[150, 150], np.asarray(upright)[450, 150]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    assert load_image(data, max_num=12).shape[0] == 3  # portrait 1:2 -> 1x2 tiles + thumbnail


def test_greyscale_8_and_16_bit_and_float():
    grey = open_image(Image.new("L", (4, 4), 100))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (100, 100, 100)
    sixteen = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert open_image(encoded(sixteen)).getpixel((0, 0)) == (128, 128, 128)  # PIL's convert would say 255
    assert open_image(np.full((4, 4), 65535, dtype=np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert open_image(np.full((4, 4), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert open_image(np.full((4, 4, 3), 0.25)).getpixel((0, 0)) == (64, 64, 64)
    assert open_image(np.ones((4, 4, 1), dtype=bool)).getpixel((0, 0)) == (255, 255, 255)
    assert open_image(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_transparency_becomes_white_not_black():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    rgb = open_image(encoded(rgba))
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((3, 3)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (127, 127, 127)  # half-transparent black over white
    la = Image.new("LA", (2, 2), (0, 0))
    assert open_image(la).getpixel((0, 0)) == (255, 255, 255)
    array = np.zeros((2, 2, 4), dtype=np.uint8)
    array[0, 0] = (0, 255, 0, 255)
    assert open_image(array).getpixel((0, 0)) == (0, 255, 0) and open_image(array).getpixel((1, 1)) == (255,) * 3


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    assert open_image(encoded(palette)).getpixel((0, 0)) == (255, 0, 0)
    palette.info["transparency"] = 0
    rgb = open_image(encoded(palette, transparency=0))
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == (0, 0, 255)
    gif = open_image(encoded(palette, "GIF", transparency=0))
    assert gif.getpixel((0, 0)) == (255, 255, 255) and gif.getpixel((1, 0)) == (0, 0, 255)


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 8, 16))  # no cyan, full magenta and yellow: red
    rgb = np.asarray(open_image(encoded(cmyk, "JPEG", quality=95)), dtype=int)
    assert (rgb[8, 2] - (255, 0, 0)).__abs__().max() < 20
    assert (rgb[8, 13] - (255, 255, 255)).__abs__().max() < 20


def test_missing_file(tmp_path):
    missing = tmp_path / "no_such_photo.jpg"
    with pytest.raises(FileNotFoundError, match="no_such_photo.jpg"):
        load_image(missing)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg is empty"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt, monkeypatch):
    data = encoded(coordinate_picture(300, 200), fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    # LMDeploy switches PIL's truncated-image check off for the whole process when imported.
    monkeypatch.setattr("PIL.ImageFile.LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageLoadError, match=rf"cut\.{fmt.lower()} is truncated or corrupt"):
        load_image(cut)
    from PIL import ImageFile
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # left as it was found


def test_not_an_image(tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is text with a .jpg name\n")
    with pytest.raises(ImageLoadError, match=r"notes\.jpg is not a picture"):
        load_image(notes)
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match=r"huge\.png has more pixels"):
        load_image(path)


def test_bad_arrays_and_types():
    with pytest.raises(ValueError, match="CxHxW"):
        load_image(np.zeros((3, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="HxW"):
        load_image(np.zeros((0, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="path, bytes"):
        load_image(12345)
