"""Lessons 06 and 07 run headless: XTuner trains, convert merges, the evaluator compares."""

from __future__ import annotations

import pytest

from internvl_course.course import plan, runner

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

LESSON = {nb.number: nb for nb in plan.COURSE}


def _run(number, params, out):
    result = runner.run_notebook(LESSON[number], params, out)
    assert result.status == "ok", result.error
    return result


def test_lessons_06_and_07_smoke(tiny_model, tmp_path):
    work = tmp_path / "finetune" / "cpu-tiny"
    six = _run("06", {**plan.SMOKE_PARAMS["06"], "model_path": str(tiny_model), "work_dir": str(work)},
               tmp_path / "06")
    p = six.published
    assert (p["preset"], p["max_iters"], p["logged_steps"], p["checkpoint"]) == ("cpu-tiny", 6, 6, "iter_6.pth")
    assert p["lora_layers"] == 16  # 5 linear layers x 3 blocks + the output head
    assert p["loss_first10"] > 0 and p["loss_last10"] > 0
    assert len(six.figures) >= 2  # loss and learning rate

    seven = _run("07", {**plan.SMOKE_PARAMS["07"], "model_path": str(tiny_model), "backend": "transformers",
                        "checkpoint": str(work / "iter_6.pth"), "out_dir": str(tmp_path / "merged")},
                 tmp_path / "07")
    p = seven.published
    assert p["merge_top1_agreement"] == 1.0 and p["lora_layers_merged"] == 16 and p["merge_max_abs_diff"] < 1e-3
    assert p["evaluated_questions"] == 4 * plan.SMOKE_PARAMS["07"]["max_images"]
    for name in ("dish_accuracy_before", "dish_accuracy_after", "mc_accuracy_before", "mc_accuracy_after"):
        assert 0 <= p[name] <= 1, name
    assert (tmp_path / "merged" / "config.json").is_file()
    assert len(seven.figures) >= 4  # the picture, before/after bars, confusion, wrong answers
