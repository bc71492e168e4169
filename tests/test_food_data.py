"""The kit's food dataset, its validation and the FoodieQA converter's licence gate.

The shipped ``data/food`` is checked against the code that generates it (the JSON entirely, a
few pictures byte for byte), so a change to scenes.py, food.py or corpus.py that would change
the dataset fails here until the dataset is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from internvl_course.data import food_vqa, foodieqa
from internvl_course.data.words import CUISINES, DISHES
from internvl_course.data.dishes import FOOD_DISHES, LOOKS, draw_dish
from internvl_course.paths import food_data_dir
from internvl_course.data.validate import (DatasetError, ProblemKind, check_dataset, check_file, check_splits,
                                      load_checked)

ROOT = food_data_dir()
SIVQA_KEYS = {"question", "choices", "answer", "question_type", "food_name", "question_id", "food_meta",
              "question_en", "choices_en"}
META_KEYS = {"main_ingredient", "id", "food_name", "food_type", "food_location", "food_file"}


def shipped(split: str) -> list[dict]:
    return json.loads((ROOT / f"{split}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Dishes and pictures
# ---------------------------------------------------------------------------------------------


def test_at_least_twelve_dishes_from_the_corpus_covering_every_cuisine():
    assert len(FOOD_DISHES) >= 12
    assert set(LOOKS) <= {dish.zh for dish in DISHES}
    assert {dish.cuisine for dish in FOOD_DISHES} == set(CUISINES)


def test_a_picture_is_a_pure_function_of_dish_and_seed():
    first = draw_dish("麻婆豆腐", 7, 96)
    assert first.tobytes() == draw_dish("麻婆豆腐", 7, 96).tobytes()
    assert first.tobytes() != draw_dish("麻婆豆腐", 8, 96).tobytes()
    assert first.tobytes() != draw_dish("小笼包", 7, 96).tobytes()


def test_build_is_deterministic_and_writes_what_doctor_looks_for(tmp_path):
    sizes = {"train": 1, "validation": 1, "test": 1}
    first = food_vqa.build(tmp_path / "a", per_dish=sizes, size=96, progress=False)
    second = food_vqa.build(tmp_path / "b", per_dish=sizes, size=96, progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert (first / "train.json").is_file()  # doctor's marker for the food dataset
    assert len(list((first / "images").rglob("*.jpg"))) == 3 * len(FOOD_DISHES)
    assert check_dataset(first) == []


def test_build_refuses_a_folder_that_is_not_a_kit_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="the kit did not write it"):
        food_vqa.build(tmp_path, per_dish={"train": 1, "validation": 1, "test": 1}, size=64, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("split", list(food_vqa.SPLITS))
def test_shipped_json_is_what_the_code_generates(split):
    items = food_vqa.sivqa_items(split)
    assert shipped(split) == items
    assert (ROOT / f"{split}.json").read_text(encoding="utf-8") == food_vqa.dumps(items)
    assert (ROOT / f"{split}_llava.json").read_text(encoding="utf-8") == food_vqa.dumps(food_vqa.to_llava(items))


def test_shipped_pictures_are_what_the_code_draws():
    chosen = [food_vqa.pictures(split)[i] for split in food_vqa.SPLITS for i in (0, -1)]
    for picture in chosen:
        assert (ROOT / picture.file).read_bytes() == food_vqa.jpeg_bytes(picture), picture.file
    card = food_vqa.dataset_card(dict(food_vqa.SPLITS), food_vqa.IMAGE_SIZE)
    assert (ROOT / "README.md").read_text(encoding="utf-8") == card


def test_shipped_dataset_is_small_and_has_no_problems():
    assert food_vqa.main(["check"]) == 0
    assert food_vqa.statistics(ROOT)["megabytes"] < 20  # 864 pictures: small enough to ship in the repo


def test_splits_share_no_picture_by_name_seed_or_content():
    files, seeds, digests = {}, {}, {}
    for split in food_vqa.SPLITS:
        files[split] = {item["food_meta"]["food_file"] for item in shipped(split)}
        seeds[split] = {p.seed for p in food_vqa.pictures(split)}
        digests[split] = {hashlib.sha256((ROOT / f).read_bytes()).hexdigest() for f in files[split]}
        assert len(digests[split]) == len(files[split]), f"two pictures of {split} are identical"
    for one, other in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not files[one] & files[other]
        assert not seeds[one] & seeds[other]
        assert not digests[one] & digests[other]


# ---------------------------------------------------------------------------------------------
# The sivqa items
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", list(food_vqa.SPLITS))
def test_items_follow_foodieqa_sivqa_schema(split):
    items = shipped(split)
    assert len(items) == food_vqa.SPLITS[split] * len(FOOD_DISHES) * len(food_vqa.QUESTION_TYPES)
    for item in items:
        assert set(item) == SIVQA_KEYS and set(item["food_meta"]) == META_KEYS
        assert len(item["choices"]) == 4 == len(set(item["choices"])) == len(item["choices_en"])
        assert item["answer"] in {"0", "1", "2", "3"}
        assert all(isinstance(v, str) and v for v in item["choices"] + item["choices_en"])
        assert item["food_meta"]["food_name"] == item["food_name"]
        assert (ROOT / item["food_meta"]["food_file"]).is_file()
    assert len({item["question_id"] for item in items}) == len(items)


@pytest.mark.parametrize("split", list(food_vqa.SPLITS))
def test_every_dish_in_every_split_with_every_question_type_per_picture(split):
    items = shipped(split)
    assert {item["food_name"] for item in items} == {dish.zh for dish in FOOD_DISHES}
    per_picture: dict[str, list[str]] = {}
    for item in items:
        per_picture.setdefault(item["food_meta"]["food_file"], []).append(item["question_type"])
    assert all(sorted(types) == sorted(q.name for q in food_vqa.QUESTION_TYPES) for types in per_picture.values())


def test_answers_are_right_and_their_letters_balanced():
    for split in food_vqa.SPLITS:
        items = shipped(split)
        for qtype in food_vqa.QUESTION_TYPES:
            chosen = [item for item in items if item["question_type"] == qtype.name]
            letters = [int(item["answer"]) for item in chosen]
            assert [letters.count(i) for i in range(4)] == [len(chosen) // 4] * 4, (split, qtype.name)
            for item in chosen:
                dish = next(d for d in DISHES if d.zh == item["food_name"])
                assert item["choices"][int(item["answer"])] == qtype.answer(dish)
                if qtype.name == "main_ingredient":  # no other option is also in the dish
                    assert sum(c in dish.ingredients for c in item["choices"]) == 1


def test_llava_export_is_xtuners_format_shaped_like_the_tutorials():
    items = shipped("train")
    llava = json.loads((ROOT / "train_llava.json").read_text(encoding="utf-8"))
    assert len(llava) == len(items)
    for item, entry in zip(items, llava):
        assert set(entry) == {"id", "image", "conversations"}
        assert entry["image"] == item["food_meta"]["food_file"] and not Path(entry["image"]).is_absolute()
        human, gpt = entry["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        lines = human["value"].split("\n")
        assert lines[0] == item["question"] and lines[-1] == "<image>" and human["value"].count("<image>") == 1
        assert lines[1:5] == [f"{letter}. {choice}" for letter, choice in zip("ABCD", item["choices"])]
        assert gpt["value"] == f"{item['choices'][int(item['answer'])]}，图中的菜是{item['food_name']}"


# ---------------------------------------------------------------------------------------------
# Validation: every kind of fault, every item
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def faulty(tmp_path: Path) -> tuple[Path, Path]:
    """A sivqa file and a LLaVA file in which each item (but the first) has one kind of fault."""
    images = tmp_path / "set" / "images"
    images.mkdir(parents=True)
    draw_dish("饺子", 1, 64).save(images / "good.jpg")
    draw_dish("饺子", 2, 64).save(images / "other.jpg")
    (images / "broken.jpg").write_bytes((images / "good.jpg").read_bytes()[:200])  # cut off
    (images / "text.jpg").write_text("not a picture")
    draw_dish("饺子", 3, 64).save(tmp_path / "outside.jpg")

    def item(n: int, **changes):
        base = {"question": f"问题{n}：图中的菜是什么？", "choices": ["饺子", "虾饺", "叉烧", "蛋炒饭"], "answer": "0",
                "question_type": "dish", "food_name": "饺子", "question_id": f"q{n}",
                "food_meta": {"food_file": "images/good.jpg", "food_name": "饺子"}}
        meta = changes.pop("food_meta", {})
        base.update(changes)
        base["food_meta"] = {**base["food_meta"], **meta}
        return base

    sivqa = [
        item(0),
        {k: v for k, v in item(1).items() if k != "question"},                       # 1 schema
        item(2, answer="7"),                                                         # 2 schema
        item(3, answer=""),                                                          # 3 empty answer
        item(4, choices=["", "虾饺", "叉烧", "蛋炒饭"]),                                # 4 empty answer
        item(5, question_id="q0", food_meta={"food_file": "images/other.jpg"}),     # 5 duplicate id
        item(6, choices=["饺子", "饺子", "叉烧", "蛋炒饭"], food_meta={"food_file": "images/other.jpg"}),  # 6
        item(7, food_meta={"food_file": "images/missing.jpg"}),                      # 7 missing
        item(8, food_meta={"food_file": "images/broken.jpg"}),                       # 8 unreadable
        item(9, food_meta={"food_file": "images/text.jpg"}),                         # 9 unreadable
        item(10, food_meta={"food_file": "../outside.jpg"}),                         # 10 escapes
        item(11, food_meta={"food_file": str(tmp_path / "outside.jpg")}),            # 11 escapes
        item(12, question="问题0：图中的菜是什么？"),                                  # 12 same as item 0
        "not an item",                                                               # 13 schema
    ]
    sivqa_path = tmp_path / "set" / "sivqa.json"
    sivqa_path.write_text(json.dumps(sivqa, ensure_ascii=False), encoding="utf-8")

    def turns(question: str = "<image>\n图中的菜是什么？", answer: str = "饺子"):
        return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]

    llava = [
        {"id": "a", "image": "images/good.jpg", "conversations": turns()},
        {"id": "b", "image": "images/good.jpg", "conversations": turns("图中的菜是什么？")},              # 1
        {"id": "c", "image": "images/good.jpg", "conversations": turns("<image><image>\n哪道菜？")},     # 2
        {"id": "d", "image": "images/good.jpg", "conversations": turns("<image>\n什么菜？", "  ")},       # 3
        {"id": "a", "image": "images/other.jpg", "conversations": turns()},                           # 4
        {"id": "f", "image": "images/missing.jpg", "conversations": turns()},                         # 5
        {"id": "g", "image": "../outside.jpg", "conversations": turns()},                             # 6
        {"id": "h", "image": "images/good.jpg", "conversations": list(reversed(turns("<image>\n这是？")))},  # 7
        {"id": "i", "image": "images/good.jpg", "conversations": turns()},                            # 8 same as 0
        {"id": "j", "conversations": turns()},                                                        # 9
    ]
    llava_path = tmp_path / "set" / "llava.json"
    llava_path.write_text(json.dumps(llava, ensure_ascii=False), encoding="utf-8")
    return sivqa_path, llava_path


def _kinds(problems) -> dict[int | None, set[ProblemKind]]:
    found: dict[int | None, set[ProblemKind]] = {}
    for problem in problems:
        found.setdefault(problem.item, set()).add(problem.kind)
    return found


def test_validation_lists_every_sivqa_problem_with_its_item(faulty):
    sivqa_path, _ = faulty
    K = ProblemKind
    assert _kinds(check_file(sivqa_path)) == {
        1: {K.SCHEMA}, 2: {K.SCHEMA}, 3: {K.EMPTY_ANSWER}, 4: {K.EMPTY_ANSWER}, 5: {K.DUPLICATE},
        6: {K.DUPLICATE}, 7: {K.MISSING_IMAGE}, 8: {K.UNREADABLE_IMAGE}, 9: {K.UNREADABLE_IMAGE},
        10: {K.PATH_ESCAPES}, 11: {K.PATH_ESCAPES}, 12: {K.DUPLICATE}, 13: {K.SCHEMA},
    }
    with pytest.raises(DatasetError) as caught:
        load_checked(sivqa_path)
    message = str(caught.value)
    assert f"{len(caught.value.problems)} problem(s)" in message
    for index in range(1, 14):
        assert f"item {index}" in message
    assert "\n  [path_escapes] item 10 (q10): '../outside.jpg' leads outside" in message
    assert '"question" must be a non-empty string' in message


def test_validation_lists_every_llava_problem_with_its_item(faulty):
    _, llava_path = faulty
    K = ProblemKind
    assert _kinds(check_file(llava_path)) == {
        1: {K.SCHEMA}, 2: {K.SCHEMA}, 3: {K.EMPTY_ANSWER}, 4: {K.DUPLICATE}, 5: {K.MISSING_IMAGE},
        6: {K.PATH_ESCAPES}, 7: {K.SCHEMA}, 8: {K.DUPLICATE}, 9: {K.SCHEMA},
    }


def test_validation_of_broken_files(tmp_path):
    (tmp_path / "a.json").write_text("[{,")
    (tmp_path / "b.json").write_text('{"image": "x.jpg"}')
    (tmp_path / "c.jsonl").write_text('{"image": null, "conversations": [{"from": "human", "value": "hi"}, '
                                      '{"from": "gpt", "value": "hello"}]}\n{oops\n')
    assert [p.kind for p in check_file(tmp_path / "a.json")] == [ProblemKind.NOT_JSON]
    assert [p.kind for p in check_file(tmp_path / "b.json")] == [ProblemKind.SCHEMA]
    problems = check_file(tmp_path / "c.jsonl")
    assert [(p.kind, p.item) for p in problems] == [(ProblemKind.NOT_JSON, 1)]


def test_validation_finds_pictures_shared_between_splits(tmp_path):
    draw_dish("饺子", 1, 64).save(tmp_path / "a.jpg")
    (tmp_path / "copy.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    draw_dish("饺子", 2, 64).save(tmp_path / "b.jpg")
    splits = {"train": [{"image": "a.jpg"}, {"image": "b.jpg"}], "test": [{"image": "a.jpg"}, {"image": "copy.jpg"}]}
    problems = check_splits(splits, tmp_path)
    assert [p.kind for p in problems] == [ProblemKind.SPLIT_OVERLAP] * 2
    assert "'a.jpg' is in both train and test" in problems[0].message
    assert "'copy.jpg' has the same bytes as 'a.jpg' of train" in problems[1].message


# ---------------------------------------------------------------------------------------------
# FoodieQA: evaluation always, training only with an acknowledgement
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def foodie_copy(tmp_path: Path) -> Path:
    """A two-item stand-in for a local FoodieQA copy (made-up items in its sivqa schema)."""
    (tmp_path / "FoodieQA" / "images").mkdir(parents=True)
    items = []
    for n, (name, cuisine) in enumerate((("宫保鸡丁", "川菜"), ("叉烧", "粤菜"))):
        draw_dish(name, n, 64).save(tmp_path / "FoodieQA" / "images" / f"{n}.jpg")
        items.append({"question": "图片中的食物通常属于哪个菜系？", "choices": ["鲁菜", cuisine, "苏菜", "浙菜"],
                      "answer": "1", "question_type": "cuisine_type", "food_name": name, "question_id": n,
                      "food_meta": {"main_ingredient": ["猪肉"], "id": n, "food_name": name, "food_type": cuisine,
                                    "food_location": "", "food_file": f"images/{n}.jpg"},
                      "question_en": "Which cuisine?", "choices_en": ["a", "b", "c", "d"]})
    path = tmp_path / "FoodieQA" / "sivqa_tidy.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def test_foodieqa_evaluation_export_needs_no_flag_and_prints_the_terms(foodie_copy, tmp_path):
    said: list[str] = []
    result = foodieqa.export_sivqa(foodie_copy, tmp_path / "eval.json", echo=said.append)
    assert isinstance(result, foodieqa.FoodieQAExport)
    assert "CC BY-NC-ND 4.0" in said[0] and "evaluation" in said[0]
    assert result.written == 2 and result.image_folder == foodie_copy.parent
    llava = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert llava[0]["image"] == "images/0.jpg"
    assert llava[0]["conversations"][1]["value"] == "川菜，图中的菜是宫保鸡丁"
    assert check_file(tmp_path / "eval.json", foodie_copy.parent) == []
    assert len(foodieqa.load_foodieqa(foodie_copy)) == 2


def test_foodieqa_training_export_needs_the_acknowledgement(foodie_copy, tmp_path, capsys):
    out = tmp_path / "train.json"
    with pytest.raises(foodieqa.LicenceNotAcknowledged, match="evaluation only"):
        foodieqa.export_sivqa(foodie_copy, out, purpose="training", echo=lambda _: None)
    assert not out.exists()
    assert foodieqa.main([str(foodie_copy), "--out", str(out), "--for-training"]) == 2
    captured = capsys.readouterr()
    assert "CC BY-NC-ND 4.0" in captured.out and "--acknowledge-licence" in captured.err
    assert not out.exists()
    assert foodieqa.main([str(foodie_copy), "--out", str(out), "--for-training", "--acknowledge-licence"]) == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 2


def test_foodieqa_problems_stop_the_conversion_or_drop_their_items(foodie_copy, tmp_path):
    (foodie_copy.parent / "images" / "1.jpg").unlink()
    with pytest.raises(DatasetError, match=r"\[missing_image\].*item 1 \(1\)"):
        foodieqa.export_sivqa(foodie_copy, tmp_path / "x.json", echo=lambda _: None)
    result = foodieqa.export_sivqa(foodie_copy, tmp_path / "x.json", drop_invalid=True, echo=lambda _: None)
    assert result.written == 1 and [p.item for p in result.dropped] == [1]
    assert [entry["image"] for entry in json.loads((tmp_path / "x.json").read_text())] == ["images/0.jpg"]
