"""How many pictures a second ``internvl_course.model.preprocess.load_image`` turns into model input, on the CPU.

    python benchmarks/preprocess_throughput.py [--sizes 448x448 800x600 ...] [--max-num 1 6 12]
                                               [--min-seconds 2] [--threads 1] [--json out.json]

Every chat turn and every training sample starts here: decode the JPEG, apply its EXIF
orientation, choose the tile grid, resize, cut the tiles (plus a thumbnail), normalise each into
a [3, 448, 448] tensor. ``load_image`` is the kit's own code for it (the transformers backend and
the evaluation use it); XTuner's dataloader and LMDeploy run their own code for the same recipe,
so the figures are a fair proxy for them too. It runs on the CPU, so on a machine with few cores
it can starve a GPU. For each picture size (a
synthetic food picture, JPEG quality 90, held in memory so disk speed does not count) and each
``max_num`` (the tile limit: 6 for the ``24gb`` training preset, 12 for chat and the ``tutorial``
preset) it times ``load_image(jpeg_bytes, max_num=...)`` for at least ``--min-seconds`` (the median
of 5 rounds) and reports images/s, tiles/s and milliseconds per image, one call at a time on one
torch thread (``--threads``): what one of XTuner's dataloader workers or one chat request gets.
A machine with more cores runs that many workers side by side.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

from report import Column, describe, environment, format_table, parse_size, write_json

SIZES = ("448x448", "800x600", "1344x896", "1792x1344", "3000x2000")
MAX_NUMS = (1, 6, 12)

COLUMNS: list[Column] = [("size", "picture", ""), ("max_num", "max_num", "d"), ("tiles", "tiles", "d"),
                         ("images_per_s", "images/s", ".2f"), ("tiles_per_s", "tiles/s", ".1f"),
                         ("ms_per_image", "ms/image", ".1f"), ("jpeg_kb", "JPEG KB", ".0f")]


def jpeg_picture(width: int, height: int, seed: int = 0) -> bytes:
    """A food picture of the kit's dataset style at ``width x height``, as JPEG bytes (quality 90)."""
    from internvl_course.data.dishes import FOOD_DISHES, draw_dish

    picture = draw_dish(FOOD_DISHES[seed % len(FOOD_DISHES)].zh, seed=seed, size=max(width, height))
    buffer = io.BytesIO()
    picture.resize((width, height)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def time_load(data: bytes, max_num: int, min_seconds: float, min_repeats: int, rounds: int = 5) -> tuple[int, float]:
    """(tiles per image, seconds per image) of ``load_image(data, max_num=...)``.

    After one untimed call (which also counts the tiles), ``rounds`` rounds of at least
    ``min_repeats`` calls and ``min_seconds / rounds`` seconds each; the median round counts, so
    a burst of load from another process on a shared machine moves the figure less than a mean would.
    """
    from internvl_course.model.preprocess import load_image

    tiles = load_image(data, max_num=max_num).shape[0]
    per_call = []
    for _ in range(rounds):
        repeats, start = 0, time.perf_counter()
        while repeats < min_repeats or time.perf_counter() - start < min_seconds / rounds:
            load_image(data, max_num=max_num)
            repeats += 1
        per_call.append((time.perf_counter() - start) / repeats)
    return tiles, statistics.median(per_call)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in SIZES],
                        metavar="WxH", help=f"picture sizes (default: {' '.join(SIZES)})")
    parser.add_argument("--max-num", nargs="+", type=int, default=list(MAX_NUMS),
                        help="tile limits to measure (default: 1 6 12)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each combination at least this long")
    parser.add_argument("--min-repeats", type=int, default=2, help="and at least this many calls per round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: what one "
                        "dataloader worker gets, since torch gives each worker one thread)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    env = environment(("torch", "torchvision", "pillow", "numpy"))
    print(describe(env), flush=True)
    rows = []
    for width, height in args.sizes:
        data = jpeg_picture(width, height)
        for max_num in args.max_num:
            tiles, seconds = time_load(data, max_num, args.min_seconds, args.min_repeats)
            rows.append({"size": f"{width}x{height}", "max_num": max_num, "tiles": tiles,
                         "images_per_s": 1 / seconds, "tiles_per_s": tiles / seconds, "ms_per_image": seconds * 1e3,
                         "jpeg_kb": len(data) / 1024})
            print(f"  {width}x{height} max_num {max_num}: {tiles} tiles, {seconds * 1e3:.1f} ms", flush=True)
    print(format_table(rows, COLUMNS))
    if args.json:
        write_json(args.json, {"environment": env, "source": "JPEG bytes in memory (quality 90)", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
