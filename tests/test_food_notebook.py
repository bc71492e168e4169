"""Lesson 05 runs headless with its smoke parameters and publishes the numbers it promises
(in the session's one run of the notebooks, ``smoke_run``)."""

from __future__ import annotations

import pytest

from internvl_course.data import food_vqa
from internvl_course.course import plan
from internvl_course.data.dishes import FOOD_DISHES

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.mark.runs_notebooks("05")
def test_lesson_05_runs_and_publishes_its_numbers(smoke_run):
    params = plan.SMOKE_PARAMS["05"]
    # two picture grids, two confusion matrices, the wrong answers
    published = smoke_run.lesson("05", figures=5)
    per_dish = sum(food_vqa.SPLITS.values())
    assert published["dishes"] == len(FOOD_DISHES) >= 12
    assert published["dataset_pictures"] == per_dish * len(FOOD_DISHES)
    assert published["dataset_questions"] == 4 * per_dish * len(FOOD_DISHES)
    assert 0 < published["dataset_megabytes"] < 20  # small enough to ship in the repo (30 training pictures a dish)
    assert published["validation_problems"] == 0
    assert published["evaluated_questions"] == 4 * params["max_images"]
    assert published["open_questions"] == params["max_images"]
    for name in ("mc_accuracy", "dish_accuracy", "cuisine_accuracy", "main_ingredient_accuracy",
                 "flavour_accuracy", "open_dish_accuracy", "unparsed_share"):
        assert 0 <= published[name] <= 1, name
    assert published["chance"] == 0.25
    assert isinstance(published["dish_within_chance_plus_10"], bool)
