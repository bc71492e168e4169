"""Score a model on food VQA: multiple choice the way FoodieQA asks, and naming the dish freely.

Two measurements, both through the chat API (``chat.pipeline``), so the same code scores the
tiny model on a laptop and InternVL2 under LMDeploy on a GPU:

- **multiple choice**: each sivqa item is asked with its four options, in FoodieQA's prompt
  style (the question, the options as "(A) ...", then the request to pick one; FoodieQA's own
  evaluation used this style) or in the kit's training style (``data.question_with_options``);
  the reply is parsed into a choice (``parse_choice``) and compared with the answer, per
  question type. Chance is 25 %: the kit's answers sit at A, B, C and D equally often.
- **open-ended dish names**: each picture is asked "图中的菜是什么？" with no options; the reply
  is right when it contains the dish's name. Chance is close to 0: this is the question the
  tutorial's fine-tune was meant to teach.

Replies are parsed, never trusted to be tidy: "B", "B，图中的菜是...", "答案：(B)", "（B）",
"b." and the bare text of a choice ("川菜，图中的菜是宫保鸡丁") all count as B; a reply with no
recognisable choice counts as wrong (FoodieQA guessed at random instead, which hides it).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from internvl_course.data.food_vqa import ENGLISH_NAMES, LETTERS, question_and_choices, question_with_options

PROMPT_STYLES = ("foodieqa", "kit")
#: The open question; the same words as the kit's dish question, without options.
OPEN_QUESTION = {"zh": "图中的菜是什么？", "en": "What is the dish in the picture?"}


def mc_prompt(item: dict[str, Any], style: str = "foodieqa", lang: str = "zh") -> str:
    """The multiple-choice prompt for one sivqa item.

    ``"foodieqa"``: FoodieQA's evaluation style, the question, the options as "(A) ..." lines
    and a request to choose one that ends on an open bracket, inviting a letter. ``"kit"``: the
    human turn the kit trains on, the question and "A. ..." lines.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    if style == "kit":
        return question_with_options(item, lang)
    question, choices = question_and_choices(item, lang)
    lines = "\n".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices))
    if lang == "zh":
        return f"{question.strip()} 选项有:\n{lines}\n请根据上图从所提供的选项中选择一个正确答案，为（"
    return f"{question.strip()} Here are the options:\n{lines}\nPlease select one of the options as your answer ("


# ---------------------------------------------------------------------------------------------
# Reading a reply
# ---------------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Full-width letters, digits and brackets to ASCII (NFKC), case folded, no surrounding space."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


_LEAD_IN = re.compile(r"^(?:[*#>\s]|答案|正确答案|选项|我选择|我选|选择|选|the answer is|answer|my answer would be|"
                      r"i would select|i choose|option|是|为|is|[:：])*", re.IGNORECASE)
_LETTER_ALONE = re.compile(r"[(\[（【]?\s*([A-D])\s*(?:[)\]）】.．、:：,，。;；!！*]|$)")
_LETTER_THEN_SPACE = re.compile(r"([A-D])\s+(\S.*)", re.DOTALL)
_KEYWORD_LETTER = re.compile(r"(?i:答案|选项|选择|选|answer|option)\s*(?i:是|为|is|would be)?\s*[:：]?\s*[(（]?\s*"
                             r"([A-D])(?![A-Za-z])")  # any case for the words, a capital for the letter
_BRACKETED = re.compile(r"[(（]\s*([A-D])\s*[)）]")


def _found_choices(text: str, choices: Sequence[str]) -> list[tuple[int, int, int]]:
    """(start, -length, index) of each choice found in ``text``, leaving out a choice found only
    inside a longer one ("鱼" inside "鱼香肉丝")."""
    found = []
    for index, choice in enumerate(choices):
        needle = _plain(choice)
        if needle and needle in text:
            start = text.index(needle)
            found.append((start, -len(needle), index))
    return [f for f in found if not any(o != f and o[0] <= f[0] and f[0] - f[1] <= o[0] - o[1] for o in found)]


def parse_choice(reply: str, choices: Sequence[str]) -> int | None:
    """The index of the choice ``reply`` picks, or None when it picks none recognisably.

    In order: a letter opening the reply ("B", "(B)", "B，...", "答案：B"); a letter after
    "答案"/"answer" anywhere; the one letter in brackets, when only one is; then the text of a
    choice: the whole reply, its first clause, or the choice named first. A capital followed by
    a space and a word ("A dish of ...") is English, not a letter.
    """
    text = unicodedata.normalize("NFKC", reply).strip()
    body = _LEAD_IN.sub("", text)
    match = _LETTER_ALONE.match(body)
    if match is None and len(body) <= 2:  # "b" or "b." alone; longer lower-case text is a word
        match = _LETTER_ALONE.match(body.upper())
    if match:
        return LETTERS.index(match.group(1))
    match = _LETTER_THEN_SPACE.match(body)
    if match:
        rest = match.group(2)
        index = LETTERS.index(match.group(1))
        if not rest[0].isascii() or _plain(rest).startswith(_plain(choices[index])):
            return index
    match = _KEYWORD_LETTER.search(text)
    if match:
        return LETTERS.index(match.group(1))
    bracketed = set(_BRACKETED.findall(text))
    if len(bracketed) == 1:
        return LETTERS.index(bracketed.pop())
    plain = _plain(text)
    plain_choices = [_plain(c) for c in choices]
    head = re.split(r"[,，。.;；:：\n]", plain, maxsplit=1)[0].strip()
    for candidate in (plain.rstrip("。.!！ "), head):
        if candidate in plain_choices and candidate:
            return plain_choices.index(candidate)
    found = _found_choices(plain, choices)
    return min(found)[2] if found else None


def named_dish(reply: str, names: Sequence[str]) -> str | None:
    """The dish of ``names`` (Chinese, or English for the kit's dishes) the reply names first."""
    plain = _plain(reply)
    spellings = [(name, spelling) for name in names for spelling in (name, ENGLISH_NAMES.get(name, "")) if spelling]
    found = _found_choices(plain, [spelling for _, spelling in spellings])
    return spellings[min(found)[2]][0] if found else None


def mentions(reply: str, name: str) -> bool:
    """Whether the reply contains the dish's Chinese name (or, for a kit dish, its English name)."""
    plain = _plain(reply)
    return any(spelling and _plain(spelling) in plain for spelling in (name, ENGLISH_NAMES.get(name, "")))


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One multiple-choice question, the model's reply and what it was read as."""

    item: dict[str, Any]
    prompt: str
    reply: str
    predicted: int | None

    @property
    def expected(self) -> int:
        return int(self.item["answer"])

    @property
    def correct(self) -> bool:
        return self.predicted == self.expected

    @property
    def question_type(self) -> str:
        return self.item["question_type"]


@dataclass(frozen=True)
class OpenAnswer:
    """One open-ended "what is this dish" question about a picture."""

    food_name: str
    image: str
    reply: str
    named: str | None  # the dish of the evaluated set it names first, if any

    @property
    def correct(self) -> bool:
        return mentions(self.reply, self.food_name)


def _share(hits: int, total: int) -> float:
    return hits / total if total else math.nan


@dataclass
class Evaluation:
    """Every reply of one evaluation run, with the accuracies computed from them."""

    answers: list[Answer]
    open_answers: list[OpenAnswer] = field(default_factory=list)
    style: str = "foodieqa"
    lang: str = "zh"

    def accuracy(self, question_type: str | None = None) -> float:
        chosen = [a for a in self.answers if question_type is None or a.question_type == question_type]
        return _share(sum(a.correct for a in chosen), len(chosen))

    @property
    def open_accuracy(self) -> float:
        return _share(sum(a.correct for a in self.open_answers), len(self.open_answers))

    def per_type(self) -> dict[str, dict[str, float]]:
        """{question type or "all": questions, correct, accuracy, unparsed (share of replies with no choice)}."""
        types = list(dict.fromkeys(a.question_type for a in self.answers))
        rows = {}
        for name in [*types, "all"]:
            chosen = [a for a in self.answers if name == "all" or a.question_type == name]
            rows[name] = {"questions": len(chosen), "correct": sum(a.correct for a in chosen),
                          "accuracy": _share(sum(a.correct for a in chosen), len(chosen)),
                          "unparsed": _share(sum(a.predicted is None for a in chosen), len(chosen))}
        return rows

    def summary(self) -> dict[str, float]:
        """Flat numbers for ``publish``: ``mc_accuracy``, ``<type>_accuracy``, ``open_dish_accuracy``..."""
        rows = self.per_type()
        numbers = {"mc_accuracy": rows["all"]["accuracy"], "unparsed_share": rows["all"]["unparsed"],
                   "evaluated_questions": rows["all"]["questions"], "open_questions": len(self.open_answers),
                   "open_dish_accuracy": self.open_accuracy}
        numbers.update({f"{name}_accuracy": row["accuracy"] for name, row in rows.items() if name != "all"})
        return numbers

    def table(self) -> str:
        """A plain-text table of accuracy per question type, with the open-ended row."""
        lines = [f"{'question type':<18}{'questions':>10}{'correct':>9}{'accuracy':>10}{'unparsed':>10}"]
        for name, row in self.per_type().items():
            lines.append(f"{name:<18}{row['questions']:>10}{row['correct']:>9}{row['accuracy']:>10.1%}"
                         f"{row['unparsed']:>10.1%}")
        if self.open_answers:
            hits = sum(a.correct for a in self.open_answers)
            lines.append(f"{'open dish name':<18}{len(self.open_answers):>10}{hits:>9}{self.open_accuracy:>10.1%}")
        return "\n".join(lines)

    def wrong(self) -> list[Answer]:
        return [a for a in self.answers if not a.correct]


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


def pick_pictures(items: list[dict[str, Any]], max_images: int | None = None) -> list[str]:
    """The pictures to ask about: all of them, or ``max_images`` spread evenly over the list (so
    a short run still meets many dishes, since items come dish by dish)."""
    files = list(dict.fromkeys(item["food_meta"]["food_file"] for item in items))
    if max_images is None or max_images >= len(files):
        return files
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    return [files[i * len(files) // max_images] for i in range(max_images)]


def _ask(pipe: Any, prompts: list[tuple[str, str]], gen_config: Any, batch_size: int, progress: bool) -> list[str]:
    """Every prompt through ``pipe.batch``, ``batch_size`` at a time, under one progress bar."""
    from tqdm.auto import tqdm

    replies: list[str] = []
    with tqdm(total=len(prompts), desc="asking", unit="question", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            replies += [response.text for response in pipe.batch(chunk, gen_config=gen_config)]
            bar.update(len(chunk))
    return replies


def evaluate(pipe: Any, items: list[dict[str, Any]], image_root: Path, *, style: str = "foodieqa",
             lang: str = "zh", open_ended: bool = True, max_images: int | None = None,
             max_new_tokens: int = 32, batch_size: int = 8, progress: bool = True) -> Evaluation:
    """Ask ``pipe`` (a ``chat.pipeline``, any backend) every question about the chosen pictures.

    Greedy decoding (temperature 0), so a run is repeatable. ``items`` are sivqa items whose
    ``food_meta.food_file`` is relative to ``image_root``; validate them first
    (``validate.load_checked``). With ``open_ended``, each picture is also asked to name its dish.
    """
    from internvl_course.serve.chat import GenerationConfig

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    root = Path(image_root)
    chosen = set(pick_pictures(items, max_images))
    asked = [item for item in items if item["food_meta"]["food_file"] in chosen]
    prompts = [(mc_prompt(item, style, lang), str(root / item["food_meta"]["food_file"])) for item in asked]
    pictures: dict[str, str] = {}
    if open_ended:
        for item in asked:
            pictures.setdefault(item["food_meta"]["food_file"], item["food_name"])
    prompts += [(OPEN_QUESTION[lang], str(root / file)) for file in pictures]
    replies = _ask(pipe, prompts, GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                   batch_size, progress)
    answers = [Answer(item, prompt, reply, parse_choice(reply, question_and_choices(item, lang)[1]))
               for item, (prompt, _), reply in zip(asked, prompts, replies)]
    names = list(dict.fromkeys(item["food_name"] for item in items))
    open_answers = [OpenAnswer(name, file, reply, named_dish(reply, names))
                    for (file, name), reply in zip(pictures.items(), replies[len(asked):])]
    return Evaluation(answers, open_answers, style, lang)


# ---------------------------------------------------------------------------------------------
# Pictures of the results (matplotlib)
# ---------------------------------------------------------------------------------------------

_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
                 "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Hiragino Sans GB", "Arial Unicode MS")
_CJK_FILES = ("/usr/share/fonts/**/*[Cc][Jj][Kk]*", "/usr/share/fonts/**/wqy*", "/usr/share/fonts/**/*[Hh]ei*",
              "/System/Library/Fonts/PingFang.ttc", "/System/Library/Fonts/STHeiti*", "/Library/Fonts/Arial Unicode.ttf",
              "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/simhei.ttf")


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of a font with Chinese characters, made known to matplotlib; None when
    the machine has none (the plots then label the kit's dishes in English).

    matplotlib ships no Chinese font and does not look inside .ttc collections on its own, which
    is where Linux distributions keep theirs. Finding the font selects nothing: each plot of this
    module selects it for its own figures only (``_use_plot_fonts``).
    """
    import glob

    from matplotlib import font_manager

    known = {font.name for font in font_manager.fontManager.ttflist}
    name = next((family for family in _CJK_FAMILIES if family in known), None)
    if name is None:
        for pattern in _CJK_FILES:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if not path.lower().endswith((".ttc", ".ttf", ".otf")):
                    continue
                font_manager.fontManager.addfont(path)
                name = font_manager.FontProperties(fname=path).get_name()
                break
            if name:
                break
    return name


def _use_plot_fonts(figure) -> None:
    """Give ``figure``'s text DejaVu Sans, then the Chinese font for the glyphs DejaVu lacks (a list
    of families is a per-glyph fallback chain, matplotlib >= 3.6); called before layout.

    Set on the figure's own text, never through ``rcParams``: the student's figures keep their
    settings, and Jupyter's inline backend keeps its own (an ``rc_context`` around a kernel's first
    figure made every later figure of the notebook vanish).
    """
    from matplotlib.text import Text

    name = cjk_font()
    if name is None:
        return
    family = ["DejaVu Sans", name]
    for axes in figure.axes:
        axes.tick_params(labelfontfamily=family)  # tick labels made again at draw time
    for text in figure.findobj(Text):
        text.set_fontfamily(family)


def label(name: str) -> str:
    """A dish name as the plots can show it: Chinese with a Chinese font, else English if known."""
    return name if cjk_font() else ENGLISH_NAMES.get(name, name)


def _thumbnail(path: Path, side: int = 160):
    from internvl_course.model.preprocess import open_image

    image = open_image(path)
    image.thumbnail((side, side))
    return image


def plot_dish_pictures(pictures: Sequence[tuple[Path, str]], columns: int = 6, side: float = 1.9):
    """A grid of dish pictures, each with its caption: ``pictures`` is a list of (path, caption)."""
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(pictures) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * side, rows * (side + 0.35)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, caption) in zip(axes.flat, pictures):
        ax.imshow(_thumbnail(Path(path), 224))
        ax.set_title(caption, fontsize=8)
    _use_plot_fonts(figure)
    figure.tight_layout()
    return figure


def _confusion(pairs: list[tuple[str, str]], missing: str) -> tuple[list[str], list[str], list[list[int]]]:
    rows = list(dict.fromkeys(truth for truth, _ in pairs))
    columns = rows + [p for p in dict.fromkeys(p for _, p in pairs) if p not in rows and p != missing]
    if any(p == missing for _, p in pairs):
        columns.append(missing)
    counts = [[sum(1 for t, p in pairs if t == truth and p == guess) for guess in columns] for truth in rows]
    return rows, columns, counts


def plot_confusion(evaluation: Evaluation, open_ended: bool = False):
    """Which dish the model said for which dish: the multiple-choice dish questions (the chosen
    option), or with ``open_ended`` the dish its free answer named. A diagonal is a model that
    knows the dishes; one bright column is a model that says the same thing to every picture."""
    import matplotlib.pyplot as plt

    if open_ended:
        pairs = [(a.food_name, a.named or "(other)") for a in evaluation.open_answers]
        accuracy, missing, what = evaluation.open_accuracy, "(other)", "open-ended: dish named in the reply"
    else:
        pairs = [(a.item["food_name"], a.item["choices"][a.predicted] if a.predicted is not None else "(no choice)")
                 for a in evaluation.answers if a.question_type == "dish"]
        accuracy, missing, what = evaluation.accuracy("dish"), "(no choice)", "multiple choice: option chosen"
    if not pairs:
        raise ValueError("no answers of that kind to plot: evaluate with dish questions (or open_ended=True)")
    rows, columns, counts = _confusion(pairs, missing)
    figure, ax = plt.subplots(figsize=(2 + 0.32 * len(columns), 1.5 + 0.3 * len(rows)))
    ax.imshow(counts, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(columns)), [label(c) for c in columns], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=7)
    for r, row in enumerate(counts):
        for c, count in enumerate(row):
            if count:
                ax.text(c, r, str(count), ha="center", va="center", fontsize=6,
                        color="white" if count > max(map(max, counts)) / 2 else "black")
    ax.set_xlabel("model's answer")
    ax.set_ylabel("dish in the picture")
    ax.set_title(f"{what}\naccuracy {accuracy:.0%} on {len(pairs)} pictures", fontsize=9)
    _use_plot_fonts(figure)
    figure.tight_layout()
    return figure


def _short(text: str, width: int = 34) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def plot_wrong_answers(evaluation: Evaluation, image_root: Path, limit: int = 8):
    """A table of wrong multiple-choice answers: the picture, the question, the right choice,
    what the model said and what it was read as."""
    import matplotlib.pyplot as plt

    chinese = cjk_font() is not None and evaluation.lang == "zh"
    wrong = evaluation.wrong()[:limit]
    if not wrong:
        figure, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no wrong answers", ha="center", va="center")
        return figure
    figure, axes = plt.subplots(len(wrong), 2, figsize=(9, 1.45 * len(wrong)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 5]})
    for (picture_ax, text_ax), answer in zip(axes, wrong):
        item = answer.item
        picture_ax.imshow(_thumbnail(Path(image_root) / item["food_meta"]["food_file"], 120))
        picture_ax.axis("off")
        text_ax.axis("off")
        question, choices = question_and_choices(item, "zh" if chinese else "en")
        said = ("(no choice)" if answer.predicted is None
                else f"{LETTERS[answer.predicted]}. {choices[answer.predicted]}")
        text_ax.text(0, 0.5, f"[{answer.question_type}] {question}\n"
                             f"right: {LETTERS[answer.expected]}. {choices[answer.expected]}\n"
                             f"read as: {said}\n"
                             f"reply: {_short(answer.reply)}", va="center", fontsize=8)
    figure.suptitle(f"{len(wrong)} of {len(evaluation.wrong())} wrong answers", fontsize=10)
    _use_plot_fonts(figure)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# Before and after a fine-tune (lesson 07)
# ---------------------------------------------------------------------------------------------


def compare_table(before: Evaluation, after: Evaluation) -> str:
    """Accuracy per question type (and the open-ended dish question) side by side, with the change."""
    b_rows, a_rows = before.per_type(), after.per_type()
    lines = [f"{'question type':<18}{'questions':>10}{'before':>9}{'after':>9}{'change':>9}"]
    rows = [(name, b_rows[name]["questions"], b_rows[name]["accuracy"], a_rows[name]["accuracy"])
            for name in b_rows if name in a_rows]
    if before.open_answers and after.open_answers:
        rows.append(("open dish name", len(before.open_answers), before.open_accuracy, after.open_accuracy))
    for name, count, was, now in rows:
        lines.append(f"{name:<18}{count:>10}{was:>9.1%}{now:>9.1%}{(now - was) * 100:>+8.1f}p")
    return "\n".join(lines)


def side_by_side(before: Evaluation, after: Evaluation, question_type: str = "dish",
                 limit: int = 8) -> list[dict[str, str]]:
    """The same questions with both models' replies (matched by question id): rows of picture,
    right answer, before, after, each marked right or wrong. Both runs must ask the same items."""
    after_by_id = {a.item["question_id"]: a for a in after.answers}
    rows = []
    for was in before.answers:
        now = after_by_id.get(was.item["question_id"])
        if now is None or was.question_type != question_type:
            continue
        right = was.item["choices"][was.expected]
        rows.append({"picture": Path(was.item["food_meta"]["food_file"]).name, "right answer": right,
                     "before": ("✓ " if was.correct else "✗ ") + _short(was.reply, 28),
                     "after": ("✓ " if now.correct else "✗ ") + _short(now.reply, 28)})
        if len(rows) == limit:
            break
    return rows


def plot_before_after(before: Evaluation, after: Evaluation, chance: float = 0.25):
    """Bars of accuracy per question type before and after, with the guessing level."""
    import matplotlib.pyplot as plt

    b_rows, a_rows = before.per_type(), after.per_type()
    names = [name for name in b_rows if name in a_rows]
    values = [(b_rows[n]["accuracy"], a_rows[n]["accuracy"]) for n in names]
    if before.open_answers and after.open_answers:
        names.append("open dish name")
        values.append((before.open_accuracy, after.open_accuracy))
    figure, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [v[0] for v in values], width=0.4, label="before (base)", color="tab:grey")
    ax.bar([i + 0.2 for i in x], [v[1] for v in values], width=0.4, label="after (fine-tuned)", color="tab:green")
    ax.axhline(chance, color="black", ls="--", lw=1, label=f"guessing a choice ({chance:.0%})")
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on held-out pictures")
    ax.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure
