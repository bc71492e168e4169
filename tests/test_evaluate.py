"""The evaluator: prompts, reading replies, accuracies on crafted answers, plots, and one real run.

The crafted runs use a stand-in pipeline whose replies are chosen per question, so every
accuracy is known exactly; the last test goes through the real chat API (transformers backend)
on the tiny model, whose answers are not expected to be right, only to be scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from internvl_course.finetune import evaluate as ev
from internvl_course.serve.chat import Response
from internvl_course.data.food_vqa import LETTERS, question_with_options
from internvl_course.paths import food_data_dir

ROOT = food_data_dir()
TEST = json.loads((ROOT / "test.json").read_text(encoding="utf-8"))
CUISINES = ["湘菜", "粤菜", "川菜", "鲁菜"]
DISHES = ["鱼香肉丝", "鱼香茄子", "饺子", "虾饺"]


@pytest.mark.parametrize("reply, choices, expected", [
    ("B", CUISINES, 1),
    ("b.", CUISINES, 1),
    ("Ｃ", CUISINES, 2),
    ("(D)", CUISINES, 3),
    ("（B）图中的菜是宫保鸡丁", CUISINES, 1),
    ("B）", CUISINES, 1),
    ("B，盘子是白色的。", CUISINES, 1),
    ("B. 粤菜", CUISINES, 1),
    ("B 粤菜", CUISINES, 1),
    ("答案：C", CUISINES, 2),
    ("答案是C。", CUISINES, 2),
    ("我选择（A）", CUISINES, 0),
    ("**B**", CUISINES, 1),
    ("我觉得答案是D，因为很辣", CUISINES, 3),
    ("The answer is (C).", CUISINES, 2),
    ("my answer would be (A", CUISINES, 0),
    ("Answer: d", CUISINES, 3),
    ("川菜，图中的菜是宫保鸡丁", CUISINES, 2),
    ("粤菜", CUISINES, 1),
    ("这道菜属于鲁菜。", CUISINES, 3),
    ("鱼香茄子，图中的菜是鱼香茄子", DISHES, 1),
    ("图中的菜是虾饺", DISHES, 3),
    ("shrimp dumplings", ["dumplings", "char siu pork", "mapo tofu", "shrimp dumplings"], 3),
    ("Dumplings, I think.", ["dumplings", "char siu pork", "mapo tofu", "shrimp dumplings"], 0),
    ("A dish of noodles", CUISINES, None),
    ("The answer is a bit unclear", CUISINES, None),
    ("Bananas", CUISINES, None),
    ("红色批批批批批批批", CUISINES, None),
    ("", CUISINES, None),
    ("(A) 湘菜 (B) 粤菜", CUISINES, 0),
])
def test_parse_choice(reply, choices, expected):
    assert ev.parse_choice(reply, choices) == expected


def test_a_choice_inside_a_longer_one_is_not_a_match():
    ingredients = ["猪肉", "鱼", "牛肉", "虾"]
    assert ev.parse_choice("猪肉，图中的菜是鱼香肉丝", ingredients) == 0
    assert ev.parse_choice("图中的菜是鱼香肉丝，主要食材是鱼", ["鱼香肉丝", "鱼", "饺子", "叉烧"]) == 0


def test_open_answers_are_read_by_dish_name():
    assert ev.mentions("这是宫保鸡丁。", "宫保鸡丁")
    assert ev.mentions("It looks like Kung Pao Chicken.", "宫保鸡丁")
    assert not ev.mentions("这是麻婆豆腐。", "宫保鸡丁")
    assert ev.named_dish("不是虾饺，是饺子", ["饺子", "虾饺"]) == "虾饺"
    assert ev.named_dish("soup dumplings!", ["饺子", "小笼包"]) == "小笼包"
    assert ev.named_dish("红色的盘子", ["饺子", "小笼包"]) is None


def test_prompt_styles():
    item = TEST[1]
    foodie = ev.mc_prompt(item)
    assert foodie.startswith(item["question"] + " 选项有:\n(A) " + item["choices"][0])
    assert foodie.endswith("请根据上图从所提供的选项中选择一个正确答案，为（")
    assert ev.mc_prompt(item, "kit") == question_with_options(item)
    assert "(B) " + item["choices_en"][1] in ev.mc_prompt(item, lang="en")
    with pytest.raises(ValueError, match="prompt style"):
        ev.mc_prompt(item, "mmbench")


class Scripted:
    """A stand-in for ``chat.pipeline``: ``answer(text, image)`` decides each reply."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[list[tuple[str, str]]] = []

    def batch(self, prompts, gen_config=None):
        assert gen_config.temperature == 0 and gen_config.max_new_tokens == 32
        self.calls.append(list(prompts))
        return [Response(self.answer(text, image)) for text, image in prompts]


def _item_for(text: str, image: str) -> dict:
    return next(i for i in TEST if str(ROOT / i["food_meta"]["food_file"]) == image and ev.mc_prompt(i) == text)


def test_accuracy_per_type_on_crafted_answers():
    named_right = {str(ROOT / f) for f in ev.pick_pictures(TEST, 8)[:3]}

    def answer(text: str, image: str) -> str:
        assert Path(image).is_file()
        if text == ev.OPEN_QUESTION["zh"]:  # names the dish of the first three pictures only
            name = next(i["food_name"] for i in TEST if str(ROOT / i["food_meta"]["food_file"]) == image)
            return f"这是{name}。" if image in named_right else "不知道"
        item = _item_for(text, image)
        right = int(item["answer"])
        return {"dish": f"{LETTERS[right]}，图中的菜是{item['food_name']}",      # letter: right
                "cuisine": LETTERS[(right + 1) % 4],                              # letter: wrong
                "main_ingredient": f"{item['choices'][right]}，图中的菜是...",   # text: right
                "flavour": "嗯"}[item["question_type"]]                          # nothing to read

    pipe = Scripted(answer)
    result = ev.evaluate(pipe, TEST, ROOT, max_images=8, batch_size=5, progress=False)
    assert len(result.answers) == 32 and len(result.open_answers) == 8
    assert all(len(call) <= 5 for call in pipe.calls) and sum(map(len, pipe.calls)) == 40
    rows = result.per_type()
    assert {name: row["accuracy"] for name, row in rows.items()} == {
        "dish": 1.0, "cuisine": 0.0, "main_ingredient": 1.0, "flavour": 0.0, "all": 0.5}
    assert rows["flavour"]["unparsed"] == 1.0 and rows["cuisine"]["unparsed"] == 0.0
    assert len({a.food_name for a in result.open_answers}) == 8  # eight pictures of eight dishes
    assert result.open_accuracy == 3 / 8
    assert [a.named for a in result.open_answers][3:] == [None] * 5
    summary = result.summary()
    assert summary["mc_accuracy"] == 0.5 and summary["dish_accuracy"] == 1.0 and summary["evaluated_questions"] == 32
    assert "main_ingredient" in result.table() and len(result.wrong()) == 16


def test_a_model_that_always_says_a_scores_exactly_chance():
    result = ev.evaluate(Scripted(lambda text, image: "A"), TEST, ROOT, open_ended=False, progress=False)
    assert len(result.answers) == len(TEST)
    assert all(row["accuracy"] == 0.25 for row in result.per_type().values())


def test_pick_pictures_spreads_over_the_split():
    files = ev.pick_pictures(TEST, 4)
    assert len(files) == 4 and len({f.rsplit("_", 1)[0] for f in files}) == 4
    assert ev.pick_pictures(TEST) == list(dict.fromkeys(i["food_meta"]["food_file"] for i in TEST))
    with pytest.raises(ValueError):
        ev.pick_pictures(TEST, 0)


def test_plots(tmp_path):
    """A model that always chooses B and always names kung pao chicken: each plot shows exactly that."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = ev.evaluate(Scripted(lambda text, image: "宫保鸡丁" if text == ev.OPEN_QUESTION["zh"] else "B，图中的菜是饺子"),
                         TEST, ROOT, max_images=6, progress=False)
    dish = [a for a in result.answers if a.question_type == "dish"]
    multiple_choice, open_ended = ev.plot_confusion(result), ev.plot_confusion(result, open_ended=True)
    wrong = ev.plot_wrong_answers(result, ROOT, limit=3)
    captions = [ev.label(i["food_name"]) for i in TEST[:8:4]]
    pictures = ev.plot_dish_pictures([(ROOT / i["food_meta"]["food_file"], c) for i, c in zip(TEST[:8:4], captions)])

    ax = multiple_choice.axes[0]
    counts, columns = ax.images[0].get_array(), [t.get_text() for t in ax.get_xticklabels()]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert counts.sum() == len(dish) == 6 and f"accuracy {result.accuracy('dish'):.0%} on 6 pictures" in ax.get_title()
    for answer in dish:  # each picture's count sits at (its dish, option B's dish)
        truth, said = ev.label(answer.item["food_name"]), ev.label(answer.item["choices"][1])
        assert counts[rows.index(truth)][columns.index(said)] >= 1
    ax = open_ended.axes[0]
    counts, columns = ax.images[0].get_array(), [t.get_text() for t in ax.get_xticklabels()]
    named = columns.index(ev.label("宫保鸡丁"))
    assert counts[:, named].sum() == counts.sum() == 6  # one bright column: the same dish for every picture
    assert f"accuracy {result.open_accuracy:.0%} on 6 pictures" in ax.get_title()
    assert len(wrong.axes) == 2 * 3 and wrong.get_suptitle() == f"3 of {len(result.wrong())} wrong answers"
    said = [text.get_text() for ax in wrong.axes for text in ax.texts]
    assert len(said) == 3 and all("read as: B. " in text and "reply: B，图中的菜是饺子" in text for text in said)
    assert [ax.get_title() for ax in pictures.axes if ax.images] == captions
    for figure in (multiple_choice, open_ended, wrong, pictures):
        figure.savefig(tmp_path / "figure.png")
        assert (tmp_path / "figure.png").read_bytes().startswith(b"\x89PNG")
        plt.close(figure)


@pytest.mark.slow
def test_end_to_end_through_the_transformers_backend(tiny_model):
    from internvl_course.serve.chat import pipeline

    pipe = pipeline(tiny_model, backend="transformers", quiet=True)
    result = ev.evaluate(pipe, TEST, ROOT, max_images=2, max_new_tokens=6, progress=False)
    assert pipe.backend == "transformers"
    assert len(result.answers) == 8 and len(result.open_answers) == 2
    assert all(isinstance(a.reply, str) for a in result.answers + result.open_answers)
    assert all(a.predicted == ev.parse_choice(a.reply, a.item["choices"]) for a in result.answers)
    assert 0 <= result.accuracy() <= 1 and 0 <= result.open_accuracy <= 1


@pytest.mark.slow
def test_the_tiny_base_answers_dish_questions_near_chance(tiny_model):
    """Issue 5's acceptance: before any fine-tune, the tiny base (which never saw a dish name)
    answers the test split's dish questions no better than chance plus 10 points."""
    from internvl_course.serve.chat import pipeline

    dish_items = [item for item in TEST if item["question_type"] == "dish"]
    pipe = pipeline(tiny_model, backend="transformers", quiet=True)
    result = ev.evaluate(pipe, dish_items, ROOT, open_ended=False, max_new_tokens=8, progress=False)
    assert len(result.answers) == len(dish_items) == 96
    assert result.accuracy("dish") <= 0.25 + 0.10


@pytest.fixture
def chinese_font(monkeypatch):
    """A machine whose "Chinese font" is matplotlib's own DejaVu Serif: found on every machine."""
    monkeypatch.setattr(ev, "_CJK_FAMILIES", ("DejaVu Serif",))
    ev.cjk_font.cache_clear()
    yield "DejaVu Serif"
    ev.cjk_font.cache_clear()


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # the stand-in font has no Chinese
def test_plots_use_the_chinese_font_without_changing_matplotlib_settings(chinese_font):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    result = ev.evaluate(Scripted(lambda text, image: "B"), TEST, ROOT, max_images=2, progress=False)
    figures = [ev.plot_dish_pictures([(ROOT / TEST[0]["food_meta"]["food_file"], "宫保鸡丁")]),
               ev.plot_confusion(result), ev.plot_wrong_answers(result, ROOT, limit=1)]
    try:
        for figure in figures:
            figure.canvas.draw()
            assert figure.axes[0].title.get_fontfamily() == ["DejaVu Sans", chinese_font]
    finally:
        for figure in figures:
            plt.close(figure)
    assert dict(matplotlib.rcParams) == before, "a plot changed matplotlib's settings for every later figure"


def test_every_figure_made_with_the_plot_fonts_reaches_the_notebook():
    """In a kernel, an rc_context around the first figure made every later figure vanish (lessons
    05 and 07 showed 1 of 5 and 1 of 4): each figure of each cell must come out as a picture."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = ["from internvl_course.finetune import evaluate\nimport matplotlib.pyplot as plt",
             "figure, axes = plt.subplots()\naxes.set_title('宫保鸡丁')\nevaluate._use_plot_fonts(figure)",
             "figure, axes = plt.subplots()\naxes.plot([1, 2])",
             "evaluate._use_plot_fonts(plt.subplots()[0])\nplt.subplots()"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, kernel_name="internvl-course", timeout=120).execute()
    pictures = [sum("image/png" in o.get("data", {}) for o in cell.outputs) for cell in nb.cells]
    assert pictures == [0, 1, 1, 2]
