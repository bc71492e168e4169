"""Lessons 06 and 07 run headless: XTuner trains, convert merges, the evaluator compares.

Both run once per session in a fresh work_dirs (``smoke_run``, tests/conftest.py): 06 trains
in its default place there, work_dirs/finetune/cpu-tiny, and 07 finds that run by itself.
"""

from __future__ import annotations

import pytest

from internvl_course.course import plan

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.mark.runs_notebooks("06", "07")
def test_lessons_06_and_07_smoke(smoke_run):
    p = smoke_run.lesson("06", figures=2)  # loss and learning rate
    assert (p["preset"], p["max_iters"], p["logged_steps"], p["checkpoint"]) == ("cpu-tiny", 6, 6, "iter_6.pth")
    assert p["lora_layers"] == 16  # 5 linear layers x 3 blocks + the output head
    assert p["loss_first10"] > 0 and p["loss_last10"] > 0
    assert "finetune/cpu-tiny/iter_6.pth" in smoke_run.work_files

    p = smoke_run.lesson("07", figures=4)  # the picture, before/after bars, confusion, wrong answers
    assert p["merge_top1_agreement"] == 1.0 and p["lora_layers_merged"] == 16 and p["merge_max_abs_diff"] < 1e-3
    assert p["evaluated_questions"] == 4 * plan.SMOKE_PARAMS["07"]["max_images"]
    for name in ("dish_accuracy_before", "dish_accuracy_after", "mc_accuracy_before", "mc_accuracy_after"):
        assert 0 <= p[name] <= 1, name
    assert "models/internvl2-finetuned-cpu-tiny/config.json" in smoke_run.work_files  # 07's out_dir
