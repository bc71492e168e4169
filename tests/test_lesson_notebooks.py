"""Lessons 0-4 run headless with their smoke parameters and publish the numbers the lessons teach.

They run once per session, in the nbval tier's run (``smoke_run``, tests/conftest.py), which also
runs 05 (test_food_notebook.py), 06 and 07 (test_finetune_notebooks.py).
"""

from __future__ import annotations

import pytest
import torch

from internvl_course.course import plan
from internvl_course.model import preprocess

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.mark.runs_notebooks("00")
def test_00_check_your_setup(smoke_run):
    published = smoke_run.lesson("00")
    assert published["doctor_problems"] == 0
    assert published["notebooks_ready"] == len(plan.present())
    assert published["matmul_gflops"] > 0


@pytest.mark.runs_notebooks("01")
def test_01_design_patterns(smoke_run):
    published = smoke_run.lesson("01", figures=4)
    assert published["alignment_gap_after"] > published["alignment_gap_before"] + 0.3
    assert published["retrieval_before"] < 0.15 and published["retrieval_after"] > 0.6
    assert published["attention_share_on_red"] > 0.8
    assert published["hierarchy_colours_found"] == 3
    assert published["joint_colour_accuracy"] > 0.9 and published["joint_shape_accuracy"] > 0.35
    assert published["early_fusion_accuracy"] > 0.85 and published["intermediate_fusion_accuracy"] > 0.6
    assert published["late_fusion_accuracy"] < 0.65


@pytest.mark.runs_notebooks("02")
def test_02_architecture(smoke_run):
    published = smoke_run.lesson("02", figures=4)
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


@pytest.mark.runs_notebooks("03")
def test_03_dynamic_resolution(smoke_run):
    published = smoke_run.lesson("03", figures=4)
    smoke = plan.SMOKE_PARAMS["03"]
    sizes = {"portrait": (700, 1400), "panorama": (3000, 500), "tiny": (64, 48),
             "huge": (smoke["huge_width"], smoke["huge_width"] * 2 // 3)}
    for name, size in sizes.items():
        assert published[f"tiles_{name}"] == preprocess.num_tiles(*size, max_num=smoke["max_num"]), name
    # the reference examples (docs/design.md, "InternVL2"), always with max_num=12
    assert (published["tiles_800x600"], published["tiles_1920x1080"], published["tiles_1000x1000"],
            published["tiles_448x448"]) == (13, 9, 10, 1)
    assert published["patches_per_tile"] == 1024 and published["tokens_per_tile"] == 256
    assert published["v1_is_transpose_of_v2"] is True


@pytest.mark.runs_notebooks("04")
def test_04_chat(smoke_run):
    from internvl_course.serve.demo import example_pictures

    published = smoke_run.lesson("04", figures=1)  # the dish it asks about
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


@pytest.mark.runs_notebooks(*plan.SMOKE_PARAMS)
def test_every_smoke_value_reaches_its_notebook(smoke_run):
    """The cell after each parameters cell applied every smoke value, and each one changed the
    notebook's own default: a smoke run that silently ran the full defaults fails here."""
    from internvl_course.course.notebook import PARAMS_ENV
    from internvl_course.course.outputs import PARAMS_CELL_ID

    assert sorted(plan.SMOKE_PARAMS) == [nb.number for nb in plan.COURSE]  # smoke values for every notebook
    for number, params in plan.SMOKE_PARAMS.items():
        smoke_run.lesson(number)
        cell = next(c for c in smoke_run.executed[number].cells if c.get("id") == PARAMS_CELL_ID)
        printed = "".join(output.get("text", "") for output in cell.outputs).splitlines()
        for name, value in params.items():
            prefix = f"{PARAMS_ENV}=smoke: {name} = {value!r} (was "
            [line] = [line for line in printed if line.startswith(prefix)]
            assert line != f"{prefix}{value!r})", f"notebook {number}: the smoke value of {name} is its default"
