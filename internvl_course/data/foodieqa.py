"""FoodieQA from your own copy: a held-out evaluation set, and (only if you may) a LLaVA file.

FoodieQA (lyan62/FoodieQA on Hugging Face, gated) is the dataset the original tutorial
fine-tuned on. Its licence is CC BY-NC-ND 4.0 and its card says it may be used for evaluation
only, not to train models (docs/design.md, "The original tutorial and FoodieQA"). So the kit
never ships it and never trains on it by default:

- **evaluation** is always allowed: ``load_foodieqa`` validates a local copy's
  ``sivqa_tidy.json`` and its pictures and returns the items for ``evaluate.evaluate``, and
  ``export_sivqa`` writes a LLaVA file for tools that read that format;
- a **training** export is written only with an explicit acknowledgement
  (``--for-training --acknowledge-licence``): you state that you have read the terms and have
  the right to train on the data, and the responsibility is yours.

The terms are printed on every run::

    internvl-course foodieqa path/to/FoodieQA/sivqa_tidy.json --out sivqa_llava.json

The output has the tutorial's shape (``image`` = ``food_meta.food_file``, relative to the
FoodieQA folder, which becomes XTuner's ``image_folder``), built by the same ``data.to_llava``
as the kit's own dataset, so both are asked and answered the same way. ``--out`` is never the
sivqa file or one of its pictures, and an existing file is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from internvl_course.data.food_vqa import dumps, to_llava
from internvl_course.fileio import atomic_write_text, refuse_overlap
from internvl_course.data.validate import DatasetError, Problem, check_file, detect_format, read_items

LICENCE_TERMS = """\
FoodieQA (lyan62/FoodieQA) is licensed CC BY-NC-ND 4.0: attribution, non-commercial, no
derivatives (https://creativecommons.org/licenses/by-nc-nd/4.0/). Its dataset card says it may
only be used for evaluation, not for training models. This converter never changes the data's
terms: evaluation use is always allowed; a training export needs --for-training together with
--acknowledge-licence, by which you state that you have the right to train on it.
The kit's own food dataset (data/food, internvl-course data) is free to train on."""

PURPOSES = ("evaluation", "training")


class LicenceNotAcknowledged(PermissionError):
    """A training export of FoodieQA was asked for without acknowledging its licence."""


@dataclass(frozen=True)
class FoodieQAExport:
    """What ``export_sivqa`` wrote: the file, how many items, and the items it left out (and why)."""

    out: Path
    image_folder: Path
    written: int
    purpose: str
    dropped: tuple[Problem, ...] = ()


def load_foodieqa(sivqa_json: Path, image_root: Path | None = None) -> list[dict[str, Any]]:
    """The sivqa items of a local FoodieQA copy, for evaluation; a ``DatasetError`` lists every
    problem (missing pictures, bad fields, duplicates...) if it has any."""
    problems = check_file(Path(sivqa_json), image_root)
    if problems:
        raise DatasetError(str(sivqa_json), problems)
    items, _ = read_items(Path(sivqa_json))
    return items or []


def _refuse_out(out: Path, overwrite: bool) -> None:
    """Raise before any work if ``out`` is a folder, or an existing file without ``overwrite``."""
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give the name of the JSON file to write, e.g. "
                                f"{out / 'sivqa_llava.json'}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} already exists; the kit does not overwrite it unless asked to "
                              "(--overwrite, or overwrite=True). Choose another file name, or ask.")


def _pictures(items: list[Any]) -> list[tuple[int, str]]:
    """(index, food_file) of every item that names a picture, valid or not: all of them are inputs."""
    metas = [(index, item.get("food_meta")) for index, item in enumerate(items) if isinstance(item, dict)]
    return [(index, meta["food_file"]) for index, meta in metas
            if isinstance(meta, dict) and isinstance(meta.get("food_file"), str)]


def export_sivqa(sivqa_json: Path, out: Path, image_root: Path | None = None, purpose: str = "evaluation",
                 acknowledge_licence: bool = False, drop_invalid: bool = False,
                 echo: Callable[[str], None] = print, overwrite: bool = False) -> FoodieQAExport:
    """Convert ``sivqa_tidy.json`` to the LLaVA format XTuner reads, after printing the terms.

    ``purpose="training"`` raises ``LicenceNotAcknowledged`` unless ``acknowledge_licence``.
    Items with problems stop the conversion (every problem is listed), or with ``drop_invalid``
    are left out and returned in ``dropped``. ``out`` may not be the input or one of its
    pictures, and replaces an existing file only with ``overwrite``.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    out = Path(out)
    refuse_overlap(out, {"sivqa file": Path(sivqa_json)}, "Give a new file name for the LLaVA JSON.", "--out")
    _refuse_out(out, overwrite)
    echo(LICENCE_TERMS)
    if purpose == "training" and not acknowledge_licence:
        raise LicenceNotAcknowledged(
            "A training export of FoodieQA needs an explicit acknowledgement of its licence "
            "(CC BY-NC-ND 4.0, evaluation only): pass acknowledge_licence=True (--acknowledge-licence) "
            "only if you have the right to train on it. Evaluation exports need no flag.")
    sivqa_json = Path(sivqa_json)
    root = Path(image_root) if image_root is not None else sivqa_json.parent
    items = read_items(sivqa_json)[0] or []
    if detect_format(items) == "llava":
        raise ValueError(f"{sivqa_json} holds LLaVA items (with \"conversations\"), the format this command writes, "
                         "not FoodieQA's sivqa items: give your FoodieQA copy's sivqa_tidy.json, or give this file to "
                         "XTuner as it is")
    refuse_overlap(out, {f"picture of item {index}": root / picture for index, picture in _pictures(items)},
                   "Give a new file name for the LLaVA JSON.", "--out")  # before the pictures are checked
    problems = check_file(sivqa_json, root)
    if problems and (not drop_invalid or any(p.item is None for p in problems)):  # a whole-file fault drops all
        raise DatasetError(str(sivqa_json), problems)
    bad = {p.item for p in problems}
    kept = [item for index, item in enumerate(items) if index not in bad]
    atomic_write_text(out, dumps(to_llava(kept)))
    echo(f"wrote {len(kept)} {purpose} item(s) to {out} (image_folder = {root})"
         + (f"; left out {len(bad)} item(s) with problems" if bad else ""))
    return FoodieQAExport(Path(out), root, len(kept), purpose, tuple(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course foodieqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sivqa_json", type=Path, help="your local FoodieQA sivqa_tidy.json")
    parser.add_argument("--out", type=Path, required=True, help="the LLaVA-format JSON to write")
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder that food_meta.food_file is relative to (default: the JSON's folder)")
    parser.add_argument("--for-training", action="store_true", help="a training export (needs --acknowledge-licence)")
    parser.add_argument("--acknowledge-licence", action="store_true",
                        help="you have read the CC BY-NC-ND 4.0 / evaluation-only terms and may train on the data")
    parser.add_argument("--drop-invalid", action="store_true", help="leave out items with problems instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the input)")
    args = parser.parse_args(argv)
    try:
        result = export_sivqa(args.sivqa_json, args.out, args.image_root,
                              "training" if args.for_training else "evaluation", args.acknowledge_licence,
                              args.drop_invalid, overwrite=args.overwrite)
    except LicenceNotAcknowledged as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DatasetError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for problem in result.dropped:
        print(f"left out: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
