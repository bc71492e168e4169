"""Check a VQA dataset before anything trains on it or is scored on it.

XTuner skips an item whose picture does not load and trains on the rest, printing one line
among thousands (docs/design.md, "XTuner 0.2.0"); an evaluation with a duplicated question counts
it twice; an item whose answer is empty teaches the model to say nothing. So every dataset the kit uses,
its own, a FoodieQA copy or a LLaVA file, goes through here first, and *every* problem is
listed with its item, not only the first, so that one run tells a student everything to fix.

Two formats are understood (detected from the items):

- ``sivqa``: FoodieQA's single-image VQA items (docs/design.md, "The original tutorial and
  FoodieQA"), which the kit's own dataset also uses;
- ``llava``: XTuner's ``{"image", "conversations"}`` items, as a JSON list or JSONL.

Each problem has a kind (``ProblemKind``), the item's position and id, and a message that says
what is wrong and where.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from collections.abc import Callable
from typing import Any

from internvl_course.model.preprocess import ImageLoadError, open_image


class ProblemKind(str, Enum):
    """What kind of fault a problem is; the value is what reports print."""

    ENCODING = "encoding"  # the file is not UTF-8 text
    NOT_JSON = "not_json"  # the file, or a JSONL line, does not parse
    SCHEMA = "schema"  # a field is missing or has the wrong type or value
    MISSING_IMAGE = "missing_image"  # the picture file is not there
    UNREADABLE_IMAGE = "unreadable_image"  # the file is there but is not a picture that decodes
    PATH_ESCAPES = "path_escapes"  # the picture path leads outside the image folder
    DUPLICATE = "duplicate"  # an id, a question or a choice appears twice
    EMPTY_ANSWER = "empty_answer"  # the answer (or the answered choice) is blank
    SPLIT_OVERLAP = "split_overlap"  # a picture is in two splits


@dataclass(frozen=True)
class Problem:
    """One fault of one item (``item`` is its 0-based position; None for the whole file)."""

    kind: ProblemKind
    message: str
    item: int | None = None
    item_id: str | None = None
    source: str = ""  # the file, when known

    def line(self, with_source: bool = True) -> str:
        """``[kind] source: item 3 (id): message``; without the source under a heading that names it."""
        where = "file" if self.item is None else f"item {self.item}" + (f" ({self.item_id})" if self.item_id else "")
        source = f"{self.source}: " if self.source and with_source else ""
        return f"[{self.kind.value}] {source}{where}: {self.message}"

    def __str__(self) -> str:
        return self.line()


class DatasetError(ValueError):
    """A dataset with problems; ``problems`` holds all of them and the message lists them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s); fix them all before using it:"]
        lines += [f"  {problem.line(with_source=problem.source != source)}" for problem in problems]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError) -> str:
    """What is wrong with a file that is not UTF-8, what it probably is, and the command that fixes it.

    Chinese Windows and Excel save text as GBK (GB18030 extends it) unless told otherwise, so a
    file that decodes as GB18030 is named as such; UTF-16 shows itself by its byte-order mark.
    """
    line = data.count(b"\n", 0, err.start) + 1
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding, looks = "UTF-16", "it looks like UTF-16 (it starts with UTF-16's byte-order mark)"
    else:
        try:
            data.decode("gb18030")
            encoding, looks = "GBK", "it looks like GBK/GB18030, as Chinese Windows and Excel save text"
        except UnicodeDecodeError:
            encoding, looks = "ENCODING", "it is not GBK either: find out which encoding saved it"
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return (f"not UTF-8 text: byte {data[err.start]:#04x} on line {line} ({err.reason}); {looks}. The kit reads "
            f"datasets as UTF-8: re-save it as UTF-8, e.g. `iconv -f {encoding} -t UTF-8 {shlex.quote(str(path))} > "
            f"{shlex.quote(str(converted))}`, then use the converted file in its place.")


def read_items(path: Path) -> tuple[list[Any] | None, list[Problem]]:
    """The items of a .json list or a .jsonl file, and the problems met reading it.

    Every dataset file the kit reads comes through here (``data check``, ``foodieqa``, evaluation's
    ``load_split``, fine-tune settings), so a file that is not UTF-8 is named with the fix
    everywhere rather than surfacing as Python's bare UnicodeDecodeError.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, [Problem(ProblemKind.ENCODING, _not_utf8(path, data, err), source=source)]
    if path.suffix == ".jsonl":
        items, problems = [], []
        for number, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                problems.append(Problem(ProblemKind.NOT_JSON, f"line {number + 1} is not JSON: {err}",
                                        len(items), source=source))
        return items, problems
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        return None, [Problem(ProblemKind.NOT_JSON, f"not JSON: {err}", source=source)]
    if not isinstance(items, list):
        return None, [Problem(ProblemKind.SCHEMA, f"the file holds a {type(items).__name__}, not a list of items",
                              source=source)]
    return items, []


def detect_format(items: list[Any]) -> str | None:
    """``"llava"`` when the first dict item has conversations, ``"sivqa"`` when it has choices."""
    first = next((item for item in items if isinstance(item, dict)), {})
    if "conversations" in first:
        return "llava"
    if "choices" in first:
        return "sivqa"
    return None


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


class _Pictures:
    """Checks each picture path once, however many items share the picture.

    Every picture is looked up; the first ``decode_limit`` of them (all, when None) are also
    decoded, which costs milliseconds a picture where a lookup costs microseconds.
    """

    def __init__(self, root: Path, decode_limit: int | None = None) -> None:
        self.root = Path(root)
        self.resolved_root = self.root.resolve()
        self.seen: dict[str, tuple[ProblemKind, str] | None] = {}
        self.decode_limit = decode_limit

    def problem(self, relative: str) -> tuple[ProblemKind, str] | None:
        if relative not in self.seen:
            self.seen[relative] = self._check(relative)
        return self.seen[relative]

    def _check(self, relative: str) -> tuple[ProblemKind, str] | None:
        if PurePath(relative).is_absolute():
            return ProblemKind.PATH_ESCAPES, f"{relative!r} is an absolute path; it must be relative to {self.root}"
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.resolved_root):
            return ProblemKind.PATH_ESCAPES, f"{relative!r} leads outside the image folder {self.root} (to {path})"
        if not path.exists():
            return ProblemKind.MISSING_IMAGE, f"{relative!r}: no such file under {self.root}"
        if self.decode_limit is not None and len(self.seen) >= self.decode_limit:  # pictures checked before this one
            return None
        try:
            open_image(path)
        except (ImageLoadError, OSError) as err:
            return ProblemKind.UNREADABLE_IMAGE, f"{relative!r} does not decode: {err}"
        return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ---------------------------------------------------------------------------------------------
# sivqa
# ---------------------------------------------------------------------------------------------


def _sivqa_fields(item: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(schema faults, empty-answer faults) of one sivqa item's fields."""
    schema: list[str] = []
    empty: list[str] = []
    for key in ("question", "question_type", "food_name"):
        if not _text(item.get(key)):
            schema.append(f'"{key}" must be a non-empty string, got {item.get(key)!r}')
    if not isinstance(item.get("question_id"), (str, int)) or item.get("question_id") == "":
        schema.append(f'"question_id" must be a string or an integer, got {item.get("question_id")!r}')
    choices = item.get("choices")
    if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
        schema.append(f'"choices" must be a list of 4 strings, got {choices!r}')
        choices = None
    answer = item.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        empty.append('"answer" is empty')
    elif not (isinstance(answer, (str, int)) and not isinstance(answer, bool) and str(answer).isdigit()
              and int(answer) < 4):
        schema.append(f'"answer" must be the index of the right choice, "0" to "3", got {answer!r}')
    elif choices is not None and not choices[int(answer)].strip():
        empty.append(f'the answer is choice {answer}, which is blank')
    if choices is not None:
        blank = [i for i, c in enumerate(choices) if not c.strip() and str(answer) != str(i)]
        if blank:
            schema.append(f"choice(s) {blank} are blank")
    if "choices_en" in item and not (isinstance(item["choices_en"], list) and len(item["choices_en"]) == 4):
        schema.append(f'"choices_en", when present, must be a list of 4 strings, got {item["choices_en"]!r}')
    meta = item.get("food_meta")
    if not isinstance(meta, dict) or not _text(meta.get("food_file")):
        schema.append('"food_meta" must be an object with a non-empty "food_file" (the picture path)')
    return schema, empty


@dataclass(frozen=True)
class _Format:
    """What differs between the two dataset formats; ``_check_items`` does the rest."""

    id_field: str  # "question_id" (sivqa) or "id" (LLaVA)
    fields: Callable[[dict[str, Any]], tuple[list[str], list[str]]]  # (schema faults, empty answers)
    question: Callable[[dict[str, Any]], tuple | None]  # what makes two items the same question
    picture: Callable[[dict[str, Any]], str | None]  # the picture's path, when the item names one
    extra: Callable[[dict[str, Any]], list[tuple[ProblemKind, str]]] = lambda item: []


def _check_items(items: list[Any], image_root: Path, source: str, fmt: _Format,
                 decode_limit: int | None = None) -> list[Problem]:
    """Every problem of ``items``: schema, empty answers, duplicate ids and questions, pictures
    (the first ``decode_limit`` of them decoded, all when None)."""
    pictures = _Pictures(image_root, decode_limit)
    problems: list[Problem] = []
    first_id: dict[str, int] = {}
    first_question: dict[tuple, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem(ProblemKind.SCHEMA, f"an item must be an object, got {type(item).__name__}",
                                    index, source=source))
            continue
        item_id = str(item[fmt.id_field]) if isinstance(item.get(fmt.id_field), (str, int)) else None

        def add(kind: ProblemKind, message: str) -> None:
            problems.append(Problem(kind, message, index, item_id, source))

        schema, empty = fmt.fields(item)
        for message in schema:
            add(ProblemKind.SCHEMA, message)
        for message in empty:
            add(ProblemKind.EMPTY_ANSWER, message)
        if item_id is not None:
            if item_id in first_id:
                add(ProblemKind.DUPLICATE, f"{fmt.id_field} {item_id!r} is also item {first_id[item_id]}'s")
            first_id.setdefault(item_id, index)
        for kind, message in fmt.extra(item):
            add(kind, message)
        key = fmt.question(item)
        if key is not None:
            if key in first_question:
                add(ProblemKind.DUPLICATE, f"the same question about the same picture as item {first_question[key]}")
            first_question.setdefault(key, index)
        picture = fmt.picture(item)
        if picture is not None:
            found = pictures.problem(picture)
            if found is not None:
                add(*found)
    return problems


def _repeated_choices(item: dict[str, Any]) -> list[tuple[ProblemKind, str]]:
    choices = item.get("choices")
    if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
        repeated = sorted({c for c in choices if choices.count(c) > 1})
        if repeated:
            return [(ProblemKind.DUPLICATE, f"choice(s) {repeated} appear more than once in this item")]
    return []


def _sivqa_picture(item: dict[str, Any]) -> str | None:
    meta = item.get("food_meta")
    food_file = meta.get("food_file") if isinstance(meta, dict) else None
    return food_file if _text(food_file) else None


def _sivqa_question(item: dict[str, Any]) -> tuple | None:
    food_file = _sivqa_picture(item)
    if food_file is None:
        return None
    return food_file, item.get("question"), json.dumps(item.get("choices"), ensure_ascii=False)


def check_sivqa(items: list[Any], image_root: Path, source: str = "") -> list[Problem]:
    """Every problem of FoodieQA-style sivqa items whose pictures live under ``image_root``."""
    return _check_items(items, image_root, source, _Format("question_id", _sivqa_fields, _sivqa_question,
                                                           _sivqa_picture, _repeated_choices))


# ---------------------------------------------------------------------------------------------
# LLaVA
# ---------------------------------------------------------------------------------------------


def _llava_turns(item: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(schema faults, empty-answer faults) of one LLaVA item's conversation."""
    conversations = item.get("conversations")
    if not isinstance(conversations, list) or len(conversations) < 2:
        return ['"conversations" must be a list of at least two turns (human, then gpt)'], []
    schema: list[str] = []
    empty: list[str] = []
    for number, turn in enumerate(conversations):
        expected = "human" if number % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            schema.append(f'turn {number} must be an object with a string "value"')
            continue
        if turn.get("from") != expected:
            schema.append(f'turn {number} is from {turn.get("from")!r}; turns alternate human, gpt, starting with human')
        elif expected == "gpt" and not turn["value"].strip():
            empty.append(f"turn {number} (gpt) is empty")
    if len(conversations) % 2:
        schema.append("the conversation ends with a human turn: the last turn must be the answer (gpt)")
    values = [turn["value"] for turn in conversations if isinstance(turn, dict) and isinstance(turn.get("value"), str)]
    markers = sum(value.count("<image>") for value in values)
    if item.get("image") is not None:
        if not _text(item.get("image")):
            schema.append(f'"image" must be a non-empty path, got {item.get("image")!r}')
        first = values[0] if values else ""
        if markers != 1 or first.count("<image>") != 1:
            schema.append(f'an item with a picture needs exactly one "<image>", in the first human turn; found {markers}')
    elif markers:
        schema.append(f'"<image>" appears {markers} time(s) but the item has no "image"')
    return schema, empty


def _llava_question(item: dict[str, Any]) -> tuple | None:
    conversations = item.get("conversations")
    if isinstance(conversations, list) and conversations and isinstance(conversations[0], dict):
        return str(item.get("image")), str(conversations[0].get("value"))
    return None


def _llava_picture(item: dict[str, Any]) -> str | None:
    return item["image"] if _text(item.get("image")) else None


def check_llava(items: list[Any], image_folder: Path, source: str = "",
                decode_limit: int | None = None) -> list[Problem]:
    """Every problem of LLaVA-format items whose pictures live under ``image_folder``."""
    return _check_items(items, image_folder, source, _Format("id", _llava_turns, _llava_question, _llava_picture),
                        decode_limit)


# ---------------------------------------------------------------------------------------------
# Files, splits, the kit's dataset
# ---------------------------------------------------------------------------------------------


def check_file(path: Path, image_root: Path | None = None, training: bool = False,
               decode_limit: int | None = None) -> list[Problem]:
    """Every problem of one dataset file; pictures are looked up under ``image_root`` (default:
    the file's folder, which is FoodieQA's layout, the tutorial's ``image_folder`` and the kit's).

    ``training``: the file is XTuner's training data, so it must hold LLaVA items; sivqa items are
    refused with the command that converts them. ``decode_limit``: decode only the first pictures
    (each one is still looked up), so that a large dataset is checked in a second.
    """
    path = Path(path)
    items, problems = read_items(path)
    if items is None:
        return problems
    root = Path(image_root) if image_root is not None else path.parent
    kind = detect_format(items)
    if kind == "sivqa" and training:
        llava = path.with_name(f"{path.stem}_llava.json")
        return problems + [Problem(ProblemKind.SCHEMA, "holds FoodieQA-style sivqa items (with \"choices\"), but "
                                   "XTuner trains on LLaVA items ({\"image\", \"conversations\"}). Convert it first: "
                                   f"`internvl-course foodieqa {path} --out {llava}` (training on FoodieQA also needs "
                                   "--for-training --acknowledge-licence: its licence is for evaluation); the kit's "
                                   f"own splits come with their LLaVA twin ({llava.name}).",
                                   source=str(path))]
    if kind == "sivqa":
        return problems + check_sivqa(items, root, str(path))
    if kind == "llava":
        return problems + check_llava(items, root, str(path), decode_limit)
    return problems + [Problem(ProblemKind.SCHEMA, "neither sivqa items (with \"choices\") nor LLaVA items "
                                                   "(with \"conversations\")", source=str(path))]


def load_checked(path: Path, image_root: Path | None = None) -> list[dict[str, Any]]:
    """The items of a dataset file, or a ``DatasetError`` listing every problem it has."""
    problems = check_file(path, image_root)
    if problems:
        raise DatasetError(str(path), problems)
    items, _ = read_items(Path(path))
    return items or []


def _picture_files(items: list[Any]) -> set[str]:
    files = set()
    for item in items:
        if isinstance(item, dict):
            meta = item.get("food_meta")
            path = meta.get("food_file") if isinstance(meta, dict) else item.get("image")
            if _text(path):
                files.add(path)
    return files


def check_splits(splits: dict[str, list[Any]], image_root: Path) -> list[Problem]:
    """Pictures shared between splits, by path or by identical bytes under another name.

    A picture in both train and test lets a model pass the test by remembering it: the very
    mistake of judging a fine-tune on its own training pictures (docs/design.md, "The original tutorial and
    FoodieQA").
    """
    root = Path(image_root)
    owner_by_path: dict[str, str] = {}
    owner_by_digest: dict[str, tuple[str, str]] = {}
    problems = []
    for split, items in splits.items():
        for relative in sorted(_picture_files(items)):
            if relative in owner_by_path and owner_by_path[relative] != split:
                problems.append(Problem(ProblemKind.SPLIT_OVERLAP, f"{relative!r} is in both {owner_by_path[relative]} "
                                                                   f"and {split}", source=split))
                continue
            owner_by_path[relative] = split
            path = (root / relative).resolve()
            if not path.is_file() or not path.is_relative_to(root.resolve()):
                continue  # reported by the per-file checks
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in owner_by_digest and owner_by_digest[digest][0] != split:
                other_split, other = owner_by_digest[digest]
                problems.append(Problem(ProblemKind.SPLIT_OVERLAP, f"{relative!r} has the same bytes as {other!r} "
                                                                   f"of {other_split}", source=split))
            owner_by_digest.setdefault(digest, (split, relative))
    return problems


def check_dataset(root: Path, splits: tuple[str, ...] = ("train", "validation", "test")) -> list[Problem]:
    """Every problem of a kit-layout dataset folder: each split's sivqa and LLaVA files, and
    pictures shared between splits."""
    root = Path(root)
    problems: list[Problem] = []
    loaded: dict[str, list[Any]] = {}
    for split in splits:
        for name in (f"{split}.json", f"{split}_llava.json"):
            path = root / name
            if not path.is_file():
                problems.append(Problem(ProblemKind.SCHEMA, f"{name} is missing", source=str(root)))
                continue
            problems += check_file(path, root)
        if (root / f"{split}.json").is_file():
            loaded[split] = read_items(root / f"{split}.json")[0] or []
    return problems + check_splits(loaded, root)
