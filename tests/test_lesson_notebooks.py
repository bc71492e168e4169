"""Lessons 1-4 run headless with their smoke parameters and publish the numbers the lessons teach.

Lesson 00 runs in tests/test_runner.py (through the ``internvl-course run`` command), 05 in
test_food_notebook.py, 06 and 07 in test_finetune_notebooks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from internvl_course.course import plan
from internvl_course.model import preprocess
from internvl_course.course.runner import NotebookResult, run_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """Execute a lesson once per test session (in the ``internvl-course`` kernel) and keep the result."""
    out = tmp_path_factory.mktemp("lessons")
    results: dict[str, NotebookResult] = {}

    def execute(number: str, figures: int = 4) -> NotebookResult:
        if number not in results:
            notebook = next(nb for nb in plan.COURSE if nb.number == number)
            results[number] = run_notebook(notebook, plan.SMOKE_PARAMS[number], out)
        result = results[number]
        assert result.status == "ok", result.error
        assert len(result.figures) >= figures, f"{result.notebook}: expected real figures, got {result.figures}"
        for figure in result.figures:
            assert (out / figure).read_bytes().startswith(b"\x89PNG")
        return result

    return execute


def test_01_design_patterns(run):
    published = run("01").published
    assert published["alignment_gap_after"] > published["alignment_gap_before"] + 0.3
    assert published["retrieval_before"] < 0.15 and published["retrieval_after"] > 0.6
    assert published["attention_share_on_red"] > 0.8
    assert published["hierarchy_colours_found"] == 3
    assert published["joint_colour_accuracy"] > 0.9 and published["joint_shape_accuracy"] > 0.35
    assert published["early_fusion_accuracy"] > 0.85 and published["intermediate_fusion_accuracy"] > 0.6
    assert published["late_fusion_accuracy"] < 0.65


def test_02_architecture(run):
    published = run("02").published
    smoke = plan.SMOKE_PARAMS["02"]
    tiles = preprocess.num_tiles(1000, 1000, max_num=smoke["max_num"])  # the "square" demo picture
    assert published["num_tiles"] == tiles
    assert published["patches_per_tile"] == 1024 and published["tokens_per_tile"] == 256
    assert published["image_tokens"] == 256 * tiles < published["prompt_tokens"]
    assert published["trace_max_diff"] < 1e-4
    assert published["internvl2_2b_parameters"] == pytest.approx(2.2e9, rel=0.02)
    assert published["internvl2_2b_vit_parameters"] == pytest.approx(0.3e9, rel=0.03)
    assert published["internvl2_2b_mlp1_parameters"] == pytest.approx(12.6e6, rel=0.01)
    assert published["stage1_trainable_parameters"] == published["internvl2_2b_mlp1_parameters"]
    assert published["stage2_trainable_parameters"] == published["internvl2_2b_parameters"]
    assert published["stage1_only_mlp1_gets_gradients"] is True


def test_03_dynamic_resolution(run):
    published = run("03").published
    smoke = plan.SMOKE_PARAMS["03"]
    sizes = {"portrait": (700, 1400), "panorama": (3000, 500), "tiny": (64, 48),
             "huge": (smoke["huge_width"], smoke["huge_width"] * 2 // 3)}
    for name, size in sizes.items():
        assert published[f"tiles_{name}"] == preprocess.num_tiles(*size, max_num=smoke["max_num"]), name
    # the reference examples (FACTS.md section 4), always with max_num=12
    assert (published["tiles_800x600"], published["tiles_1920x1080"], published["tiles_1000x1000"],
            published["tiles_448x448"]) == (13, 9, 10, 1)
    assert published["patches_per_tile"] == 1024 and published["tokens_per_tile"] == 256
    assert published["v1_is_transpose_of_v2"] is True


def test_04_chat(run):
    from internvl_course.serve.demo import example_pictures

    published = run("04", figures=1).published  # the dish it asks about
    smoke = plan.SMOKE_PARAMS["04"]
    if not torch.cuda.is_available():
        assert published["backend"] == "transformers"
    assert 1 <= published["first_reply_tokens"] <= smoke["max_new_tokens"]
    assert published["turns"] == 3
    assert published["distinct_greedy_replies"] == 1  # greedy: the same reply every time
    assert 1 <= published["distinct_sampled_replies"] <= smoke["repeats"]
    assert published["same_seed_same_reply"] is True
    assert published["tutorial_config_samples"] is False  # the tutorial's config silently decodes greedily
    assert published["batch_size"] == len(example_pictures()) + 1 == len(published["batch_reply_tokens"])
    assert all(1 <= n <= smoke["max_new_tokens"] for n in published["batch_reply_tokens"])
    assert published["api_server_used"] is False and published["demo_launched"] is False  # headless


def test_smoke_parameters_cover_lessons_1_to_4():
    for number in ("01", "02", "03", "04"):
        assert plan.SMOKE_PARAMS[number], number
        assert Path(next(nb for nb in plan.COURSE if nb.number == number).path()).exists()
