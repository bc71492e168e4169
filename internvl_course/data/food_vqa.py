"""The kit's own food VQA dataset: FoodieQA's format, pictures the course may train on.

The original tutorial fine-tunes on FoodieQA, whose licence (CC BY-NC-ND 4.0, evaluation only)
does not allow training on it (docs/design.md, "The original tutorial and FoodieQA"). This
module generates a dataset of the same shape that the kit owns: every picture is drawn by
``food.draw_dish`` and every question is written from the facts of ``corpus.DISHES``, so it can
be rebuilt, byte for byte, by anyone::

    internvl-course data build      # writes data/food/ (half a minute on a laptop)
    internvl-course data check      # validates every split (see validate.py)

What it writes, under ``data/food/``:

- ``train.json``, ``validation.json``, ``test.json``: FoodieQA's single-image VQA (sivqa) items:
  ``question``, four ``choices``, ``answer`` (the index, as a string), ``question_type``,
  ``food_name``, ``question_id``, ``food_meta`` and English copies ``question_en`` /
  ``choices_en``. Each picture gets one question of each type: dish, cuisine, main ingredient,
  flavour. The right answer sits at A, B, C and D equally often, so a model that always says
  "A" scores exactly the 25 % chance level.
- ``<split>_llava.json``: the same items in the LLaVA format XTuner reads (docs/design.md,
  "XTuner 0.2.0"),
  shaped like the tutorial's ``sivqa_llava.json``: the human turn is the question, the four
  options and ``<image>``; the answer is "<choice>，图中的菜是<dish>".
- ``images/<split>/<dish>_<nn>.jpg``: every picture drawn from its own seed, so no picture is
  in two splits; a test measures what a fine-tune learnt about a dish, not about a picture.
- ``README.md``: the dataset card.

``build`` replaces only a folder the kit wrote (``fileio.atomic_directory``), so ``--out`` can never
cost a user's folder its notes or photos.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from internvl_course.data.words import CUISINES, DISHES, FLAVOURS, INGREDIENTS, Dish
from internvl_course.fileio import MARKER, atomic_directory, atomic_write_bytes, atomic_write_text, mark_as_written
from internvl_course.data.dishes import FOOD_DISHES, draw_dish
from internvl_course.paths import food_data_dir

#: Pictures per dish in each split, in the order the splits are built. Thirty a dish to train on:
#: with ten, a linear probe of the tiny base's vision features named 79 % of held-out dishes,
#: with twenty 90 %, with forty 94 %; the pictures, not the epochs, are what a tiny model
#: generalises from.
SPLITS: dict[str, int] = {"train": 30, "validation": 2, "test": 4}
IMAGE_SIZE = 448  # one InternVL2 tile: the model sees the picture as drawn
JPEG_QUALITY = 85
LETTERS = "ABCD"
#: The answer sentence of the tutorial's sivqa_llava.json (docs/design.md, "The original tutorial
#: and FoodieQA").
ANSWER_TEMPLATE = "{choice}，图中的菜是{food_name}"
#: The region each cuisine label comes from, for FoodieQA's ``food_location``.
CUISINE_REGIONS: dict[str, str] = {
    "川菜": "四川", "粤菜": "广东", "鲁菜": "山东", "苏菜": "江苏", "浙菜": "浙江", "闽菜": "福建",
    "湘菜": "湖南", "徽菜": "安徽", "京菜": "北京", "家常菜": "全国",
}
#: What a main-ingredient question may offer: the main ingredient of any dish in the corpus.
MAIN_INGREDIENTS: tuple[str, ...] = tuple(dict.fromkeys(dish.ingredients[0] for dish in DISHES))


@dataclass(frozen=True)
class QuestionType:
    """One kind of question: its wording, its right answer for a dish, and the other candidates."""

    name: str
    zh: str
    en: str
    answer: Callable[[Dish], str]
    candidates: Callable[[Dish], tuple[str, ...]]  # wrong answers to draw three from
    english: Callable[[str], str]  # a choice in English


#: Each dish's English name, by its Chinese name.
ENGLISH_NAMES: dict[str, str] = {dish.zh: dish.en for dish in DISHES}

QUESTION_TYPES: tuple[QuestionType, ...] = (
    QuestionType("dish", "图中的菜是什么？", "What is the dish in the picture?",
                 lambda d: d.zh, lambda d: tuple(o.zh for o in FOOD_DISHES if o.zh != d.zh), ENGLISH_NAMES.__getitem__),
    QuestionType("cuisine", "图中的菜属于哪个菜系？", "Which cuisine does the dish in the picture belong to?",
                 lambda d: d.cuisine, lambda d: tuple(c for c in CUISINES if c != d.cuisine), CUISINES.__getitem__),
    QuestionType("main_ingredient", "图中的菜的主要食材是什么？", "What is the main ingredient of the dish in the picture?",
                 lambda d: d.ingredients[0], lambda d: tuple(i for i in MAIN_INGREDIENTS if i not in d.ingredients),
                 INGREDIENTS.__getitem__),
    QuestionType("flavour", "图中的菜是什么口味？", "What does the dish in the picture taste like?",
                 lambda d: d.flavour, lambda d: tuple(f for f in FLAVOURS if f != d.flavour), FLAVOURS.__getitem__),
)


@dataclass(frozen=True)
class Picture:
    """One picture of the dataset: which dish, which seed, where the file goes."""

    split: str
    dish: Dish
    number: int  # 0-based, within this dish and split
    seed: int

    @property
    def file(self) -> str:
        """The path under the dataset folder, as ``food_meta.food_file`` and LLaVA's ``image`` hold it."""
        return f"images/{self.split}/{slug(self.dish.en)}_{self.number:02d}.jpg"


def slug(name: str) -> str:
    """"lion's head meatballs" -> "lion_s_head_meatballs": plain ASCII file names on every OS."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def pictures(split: str, per_dish: int | None = None) -> list[Picture]:
    """The pictures of ``split``, dish by dish in ``corpus.DISHES`` order.

    The seed is a function of split, dish and number only, so changing one split's size never
    changes another split's pictures; the three splits use disjoint seed ranges.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    count = SPLITS[split] if per_dish is None else per_dish
    if not 0 < count < 1000:
        raise ValueError(f"pictures per dish must be between 1 and 999, got {count}")
    offset = (list(SPLITS).index(split) + 1) * 1_000_000
    return [Picture(split, dish, n, offset + DISHES.index(dish) * 1000 + n)
            for dish in FOOD_DISHES for n in range(count)]


def _item(picture: Picture, qtype: QuestionType, index: int, position: int) -> dict[str, Any]:
    """One sivqa item: the question of ``qtype`` about ``picture``, right answer at ``position``."""
    dish = picture.dish
    rng = random.Random(f"data.choices:{picture.seed}:{qtype.name}")
    choices = rng.sample(qtype.candidates(dish), 3)
    choices.insert(position, qtype.answer(dish))
    return {
        "question": qtype.zh,
        "choices": choices,
        "answer": str(position),
        "question_type": qtype.name,
        "food_name": dish.zh,
        "question_id": f"kit-{picture.split}-{index:04d}-{qtype.name}",
        "food_meta": {
            "main_ingredient": list(dish.ingredients),
            "id": str(DISHES.index(dish)),
            "food_name": dish.zh,
            "food_type": dish.cuisine,
            "food_location": CUISINE_REGIONS[dish.cuisine],
            "food_file": picture.file,
        },
        "question_en": qtype.en,
        "choices_en": [qtype.english(choice) for choice in choices],
    }


def sivqa_items(split: str, per_dish: int | None = None) -> list[dict[str, Any]]:
    """Every question of ``split`` in FoodieQA's sivqa schema: one of each type per picture.

    Where the right answer goes is dealt from a shuffled deck holding A, B, C and D equally
    often (per split and question type), so the letters are balanced without a pattern.
    """
    shown = pictures(split, per_dish)
    positions = {}
    for qtype in QUESTION_TYPES:
        deck = [i % len(LETTERS) for i in range(len(shown))]
        random.Random(f"data.positions:{split}:{qtype.name}").shuffle(deck)
        positions[qtype.name] = deck
    return [_item(picture, qtype, index, positions[qtype.name][index])
            for index, picture in enumerate(shown) for qtype in QUESTION_TYPES]


# ---------------------------------------------------------------------------------------------
# The LLaVA format XTuner reads
# ---------------------------------------------------------------------------------------------


def options(choices: list[str]) -> list[str]:
    """["A. 川菜", "B. 粤菜", ...]: the option lines of every multiple-choice prompt in the kit."""
    return [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices)]


def question_and_choices(item: dict[str, Any], lang: str = "zh") -> tuple[str, list[str]]:
    """An item's question and choices in Chinese (``"zh"``) or in their English copies (``"en"``)."""
    if lang not in ("zh", "en"):
        raise ValueError(f"unknown language {lang!r}; choose zh or en")
    return (item["question"], item["choices"]) if lang == "zh" else (item["question_en"], item["choices_en"])


def question_with_options(item: dict[str, Any], lang: str = "zh") -> str:
    """The question, then one "A. ..." line per choice: the format the tiny base already knows
    from its pretraining (``table_talk.as_multiple_choice``), so fine-tuning only adds knowledge."""
    question, choices = question_and_choices(item, lang)
    return "\n".join([question.strip(), *options(choices)])


def answer_sentence(item: dict[str, Any]) -> str:
    """"川菜，图中的菜是宫保鸡丁": the right choice, then the dish, as the tutorial trains it."""
    return ANSWER_TEMPLATE.format(choice=item["choices"][int(item["answer"])], food_name=item["food_name"])


def to_llava(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sivqa items -> XTuner's LLaVA items; ``image`` is ``food_meta.food_file``, relative to the
    dataset folder, which is XTuner's ``image_folder``.

    ``<image>`` ends the human turn as in the tutorial's file; XTuner moves the picture to the
    front of the prompt whatever its place (docs/design.md, "XTuner 0.2.0"), as InternVL's ``chat()`` does.
    """
    return [{
        "id": str(item["question_id"]),
        "image": item["food_meta"]["food_file"],
        "conversations": [
            {"from": "human", "value": question_with_options(item) + "\n<image>"},
            {"from": "gpt", "value": answer_sentence(item)},
        ],
    } for item in items]


def dumps(items: list[Any]) -> str:
    """A JSON list as the kit writes it: UTF-8 Chinese, one item per line (compact, yet a diff
    shows which item changed); same items, same bytes."""
    return "[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n"


def load_split(split: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The sivqa items of one split of a built dataset, validated first (validate.py)."""
    from internvl_course.data.validate import load_checked

    return load_checked((root or food_data_dir()) / f"{split}.json")


# ---------------------------------------------------------------------------------------------
# Building it
# ---------------------------------------------------------------------------------------------


def jpeg_bytes(picture: Picture, size: int = IMAGE_SIZE) -> bytes:
    """The file of one picture. Same picture, same bytes (PIL's encoder is deterministic)."""
    buffer = io.BytesIO()
    draw_dish(picture.dish.zh, picture.seed, size).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


#: The first line of every dataset card ``build`` writes.
CARD_TITLE = "# The kit's food VQA dataset"


def dataset_card(counts: dict[str, int], size: int) -> str:
    """data/food/README.md: what the dataset is, how it was made and how to remake it."""
    dishes = "、".join(dish.zh for dish in FOOD_DISHES)
    rows = "\n".join(f"| {split} | {n * len(FOOD_DISHES)} | {n * len(FOOD_DISHES) * len(QUESTION_TYPES)} |"
                     for split, n in counts.items())
    return f"""{CARD_TITLE}

Generated by `internvl-course data build` (internvl_course/data/food_vqa.py, dishes.py, drawing.py);
do not edit by hand: rebuild instead. The same code gives the same bytes.

Every picture is drawn procedurally ({size}x{size} JPEG) and every question is written from
`internvl_course/data/words.py`, so the whole dataset belongs to this kit and is licensed with it
(Apache-2.0): you may train on it. FoodieQA, which the original tutorial trained on, may only be
used for evaluation (CC BY-NC-ND 4.0): see `internvl-course foodieqa --help`.

| split | pictures | questions |
| --- | --- | --- |
{rows}

{len(FOOD_DISHES)} dishes: {dishes}.

Question types (4 choices each, one of each per picture): {", ".join(q.name for q in QUESTION_TYPES)}.

- `<split>.json`: FoodieQA's sivqa schema (`question`, `choices`, `answer` index as a string,
  `question_type`, `food_name`, `question_id`, `food_meta`, `question_en`, `choices_en`).
- `<split>_llava.json`: XTuner's LLaVA format; `image_folder` is this folder.
- `images/<split>/`: the pictures; no picture appears in two splits.
"""


def _built_before_markers(out: Path) -> bool:
    """True for the kit's own ``data/food`` as an older kit left it, without ``fileio.MARKER``
    (the repository shipped it so): the dataset card, and only names ``build`` writes. A dataset
    an older kit built elsewhere is not taken for one: its owner removes it."""
    if out.resolve() != food_data_dir().resolve() or (out / MARKER).exists() or not (out / "README.md").is_file():
        return False
    if not (out / "README.md").read_text(encoding="utf-8").startswith(CARD_TITLE):
        return False
    names = {"README.md", *(f"{split}{suffix}.json" for split in SPLITS for suffix in ("", "_llava"))}
    picture = re.compile(rf"images/({'|'.join(SPLITS)})/[a-z0-9_]+_\d{{2,3}}\.jpg")
    for path in out.rglob("*"):
        name = path.relative_to(out).as_posix()
        if not (path.is_dir() and not path.is_symlink()) and name not in names and not picture.fullmatch(name):
            return False
    return True


def build(out_dir: Path | None = None, per_dish: dict[str, int] | None = None, size: int = IMAGE_SIZE,
          progress: bool = True) -> Path:
    """Write the whole dataset to ``out_dir`` (default ``data/food``), replacing an older build.

    It is assembled in a temporary folder beside ``out_dir`` and renamed into place, so a crash
    never leaves half a dataset, and pictures of an older, larger build never linger. Only a
    folder the kit wrote is replaced, and only if nothing was added to it (``fileio``).
    """
    out = Path(out_dir) if out_dir is not None else food_data_dir()
    if _built_before_markers(out):
        mark_as_written(out)
    counts = {split: (per_dish or {}).get(split, n) for split, n in SPLITS.items()}
    with atomic_directory(out, overwrite=True) as staging:
        from tqdm.auto import tqdm

        plan = {split: pictures(split, n) for split, n in counts.items()}
        bar = tqdm(total=sum(len(p) for p in plan.values()), desc="drawing", unit="picture", disable=not progress)
        for split, shown in plan.items():
            for picture in shown:
                atomic_write_bytes(staging / picture.file, jpeg_bytes(picture, size))
                bar.update()
            items = sivqa_items(split, counts[split])
            atomic_write_text(staging / f"{split}.json", dumps(items))
            atomic_write_text(staging / f"{split}_llava.json", dumps(to_llava(items)))
        bar.close()
        atomic_write_text(staging / "README.md", dataset_card(counts, size))
    return out


def statistics(root: Path | None = None) -> dict[str, Any]:
    """Counts a student can check a dataset by: per split, per dish, per type, per answer letter."""
    root = root or food_data_dir()
    stats: dict[str, Any] = {"splits": {}, "dishes": {}, "question_types": {}, "answer_letters": {}}
    for split in SPLITS:
        items = json.loads((root / f"{split}.json").read_text(encoding="utf-8"))
        images = {item["food_meta"]["food_file"] for item in items}
        stats["splits"][split] = {"questions": len(items), "pictures": len(images),
                                  "megabytes": sum((root / f).stat().st_size for f in images) / 1e6}
        for item in items:
            for key, value in (("dishes", item["food_name"]), ("question_types", item["question_type"]),
                               ("answer_letters", LETTERS[int(item["answer"])])):
                stats[key][value] = stats[key].get(value, 0) + 1
    stats["megabytes"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="draw the pictures and write every split (replaces data/food)")
    build_cmd.add_argument("--out", type=Path, default=None, help="output folder (default data/food)")
    check_cmd = sub.add_parser("check", help="validate the dataset's files and that the splits share no picture")
    check_cmd.add_argument("--root", type=Path, default=None, help="dataset folder (default data/food)")
    args = parser.parse_args(argv)
    if args.command == "build":
        start = time.perf_counter()
        try:
            out = build(args.out)
        except FileExistsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        stats = statistics(out)
        print(f"wrote {out}: {sum(s['pictures'] for s in stats['splits'].values())} pictures, "
              f"{sum(s['questions'] for s in stats['splits'].values())} questions, {stats['megabytes']:.1f} MB "
              f"in {time.perf_counter() - start:.0f} s")
        return 0
    from internvl_course.data.validate import check_dataset

    problems = check_dataset(args.root or food_data_dir())
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
