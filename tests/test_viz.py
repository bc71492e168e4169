"""The course figures draw what they say: grids, budgets, pixel shuffle, the shape trace, counts."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported (by the figure modules): no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from internvl_course.lessons import architecture, charts, pattern_figures, patterns, tiling_figures  # noqa: E402
from internvl_course.model import preprocess  # noqa: E402
from internvl_course.modelcode.configuration_internvl_chat import InternVLChatConfig  # noqa: E402
from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel  # noqa: E402
from internvl_course.modelcode.official_configs import INTERNVL2_2B_CONFIG  # noqa: E402
from internvl_course.course.notebook import is_interactive  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def renders(fig) -> bool:
    """Draw the figure to PNG bytes, as the notebook's inline backend does."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue().startswith(b"\x89PNG")


def test_human_and_is_interactive(monkeypatch):
    assert charts.human(2_205_754_368) == "2.21 B" and charts.human(12_595_200) == "12.6 M" and charts.human(512) == "512"
    assert is_interactive() is False  # plain Python: no kernel at all

    class Kernel:
        _allow_stdin = True

    class Shell:
        kernel = Kernel()

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    assert is_interactive() is True
    Kernel._allow_stdin = False  # what papermill / nbclient send
    assert is_interactive() is False


def test_pixel_shuffle_mapping_v2_keeps_blocks_in_place_and_v1_transposes():
    ids = tiling_figures.shuffled_patch_ids(4, "v2")
    assert ids[0, 0].tolist() == [0, 1, 4, 5] and ids[0, 1].tolist() == [2, 3, 6, 7]
    v2, v1 = tiling_figures.shuffle_destinations(8, "v2"), tiling_figures.shuffle_destinations(8, "v1")
    blocks = np.arange(16).reshape(4, 4).repeat(2, 0).repeat(2, 1)  # token of each patch, block by block
    assert np.array_equal(v2, blocks)
    assert np.array_equal(v1, v1[::2, ::2].repeat(2, 0).repeat(2, 1))  # v1 also keeps whole 2x2 blocks ...
    assert np.array_equal(v1[::2, ::2], v2[::2, ::2].T)  # ... but numbers them column by column


def test_plot_pixel_shuffle_labels_every_patch_and_token():
    fig = tiling_figures.plot_pixel_shuffle(8, "v2")
    left, right = fig.axes
    assert len(left.texts) == 64 and len(right.texts) == 16
    assert right.texts[0].get_text() == "0,1\n8,9"
    assert renders(fig)


def test_plot_shuffle_versions_shows_v1_as_the_transpose():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8))
    fig = tiling_figures.plot_shuffle_versions(picture)
    v2_image, v1_image = (ax.get_images()[0].get_array() for ax in fig.axes[1:])
    assert v2_image.shape == (16, 16, 3)
    np.testing.assert_allclose(np.asarray(v1_image), np.asarray(v2_image).transpose(1, 0, 2))


@pytest.mark.parametrize("size, max_num", [((800, 600), 12), ((3000, 500), 12), ((64, 48), 6), ((448, 448), 12)])
def test_plot_tile_grid_draws_the_chosen_grid(size, max_num):
    cols, rows = preprocess.choose_grid(*size, max_num=max_num)
    fig = tiling_figures.plot_tile_grid(Image.new("RGB", size, "white"), max_num=max_num, name="test")
    ax = fig.axes[0]
    assert len(ax.lines) == (cols - 1) + (rows - 1)
    assert [t.get_text() for t in ax.texts] == [str(k + 1) for k in range(cols * rows)]
    tokens = preprocess.num_image_tokens(*size, max_num=max_num)
    assert f"{cols}x{rows}" in ax.get_title() and f"{tokens} tokens" in ax.get_title()


def test_gallery_tiles_and_budget_figures():
    pictures = {"wide": Image.new("RGB", (900, 300)), "tall": Image.new("RGB", (300, 600))}
    assert len(tiling_figures.plot_tiling_gallery(pictures).axes) == 2
    tiles = preprocess.dynamic_preprocess(pictures["wide"], use_thumbnail=True)
    fig = tiling_figures.plot_tiles(tiles, preprocess.choose_grid(900, 300))
    assert sum(1 for ax in fig.axes if ax.get_images()) == len(tiles) == 4  # 3x1 + thumbnail
    fig = tiling_figures.plot_token_budget(max_nums=(1, 12))
    curve = fig.axes[0]
    assert {line.get_label() for line in curve.get_lines()} == {"max_num=1", "max_num=12"}
    assert max(curve.get_lines()[0].get_ydata()) == 10 * 256  # a big square: 3x3 + thumbnail
    assert renders(fig)


def test_demo_pictures_have_their_shapes():
    assert tiling_figures.demo_picture("portrait").size == (700, 1400)
    assert tiling_figures.demo_picture("panorama").size == (3000, 500)
    assert tiling_figures.demo_picture("tiny").size == (64, 48)
    assert tiling_figures.demo_picture("huge", huge_width=900).size == (900, 600)
    assert tiling_figures.demo_picture("square").size == (1000, 1000)
    with pytest.raises(ValueError, match="unknown kind"):
        tiling_figures.demo_picture("round")


def test_token_table():
    lines = tiling_figures.token_table([(800, 600), (448, 448)], max_nums=(6, 12)).splitlines()
    assert len(lines) == 1 + 4
    assert lines[2].split() == ["800x600", "12", "4x3", "13", "3328"]
    assert lines[3].split() == ["448x448", "6", "1x1", "1", "256"]


def test_real_2b_parameter_counts_on_the_meta_device():
    with torch.device("meta"):
        model = InternVLChatModel(InternVLChatConfig(**INTERNVL2_2B_CONFIG))
    parts = architecture.internvl_parameter_counts(model)
    detail = architecture.internvl_parameter_counts(model, detail=True)
    assert parts["mlp1"] == 4096 * 2 + 4096 * 2048 + 2048 + 2048 * 2048 + 2048  # 12.6 M (docs/design.md, "InternVL2")
    assert 2.15e9 < sum(parts.values()) < 2.25e9 and sum(detail.values()) == sum(parts.values())
    assert detail["InternLM2: token embeddings"] == detail["InternLM2: output head"] == 92553 * 2048
    model.requires_grad_(False)
    model.mlp1.requires_grad_(True)
    trainable = architecture.internvl_parameter_counts(model, trainable_only=True)
    assert trainable == {"InternViT": 0, "mlp1": parts["mlp1"], "InternLM2": 0}
    fig = charts.plot_parameter_counts({"2B": detail, "half": {k: v // 2 for k, v in detail.items()}})
    assert len(fig.axes[0].patches) == 12
    fig = architecture.plot_trainable({"stage 1": {k: (trainable[k], parts[k]) for k in parts}})
    assert "0.6%" in fig.axes[0].get_title()
    assert renders(fig)


def test_family_table_and_plot():
    table = architecture.family_table()
    header, rule, *rows = table.splitlines()
    assert len(rows) == len(architecture.INTERNVL2_FAMILY) and set(rule) == {"-"}
    assert all(len(row) == len(header) for row in rows)  # every value ends under its column's name
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["InternVL2-2B"][1] == "2.2B" and cells["InternVL2-2B"][-3:] == ["73.2", "784", "86.9"]
    assert cells["InternVL2-26B"][-3:] == ["-", "-", "-"] and "None" not in table  # not published: a dash

    fig = architecture.plot_family()
    assert renders(fig)
    sizes, scores = fig.axes
    widths = {label.get_text(): bar.get_width() for label, bar in zip(sizes.get_yticklabels(), sizes.patches)}
    assert (widths["1B"], widths["2B"], widths["Llama3-76B"]) == (0.9, 2.2, 76.3)
    colours = [bar.get_facecolor() for bar in sizes.patches]  # InternViT-300M (1B to 8B), then InternViT-6B
    assert colours[:4] == [colours[0]] * 4 and colours[4:] == [colours[4]] * 3 and colours[0] != colours[4]
    points = {line.get_label(): dict(zip(line.get_xdata(), line.get_ydata())) for line in scores.get_lines()}
    assert points["MMBench-EN"][2.2] == 73.2 and 25.5 not in points["MMBench-EN"]  # 26B published none
    assert points["OCRBench / 10"][2.2] == pytest.approx(78.4) and 8.1 not in points["OCRBench / 10"]


def test_lesson_1_figures():
    data = patterns.captioned_pictures(48, seed=0)
    assert len(pattern_figures.plot_pictures(data.images[:10], data.captions[:10], columns=5).axes) == 10
    model = patterns.TinyCLIP()
    points = patterns.embeddings_2d(model, data)
    assert renders(pattern_figures.plot_shared_space({"a": points, "b": points}, data))
    captions, _ = patterns.class_captions()
    similarity = patterns.class_similarity(model, data)
    assert renders(pattern_figures.plot_similarity({"a": similarity}, captions))
    scene = patterns.picture([("red", "circle")], size=32)
    weights, _ = patterns.attention_demo(scene, ["red", "blue"])
    assert len(pattern_figures.plot_attention(scene, weights, ["red", "blue"]).axes) == 3
    levels = patterns.TinyHierarchy()(patterns.picture([("red", "circle")], size=64)[None])
    assert renders(pattern_figures.plot_hierarchy(patterns.picture([("red", "circle")], size=64), levels))
    fig = charts.plot_curves({"a": ([1, 2], [0.5, 0.9])}, "accuracy", chance=0.5)
    assert len(fig.axes[0].get_lines()) == 2


@pytest.fixture(scope="module")
def loaded_tiny(tiny_model):
    from transformers import AutoTokenizer

    model = InternVLChatModel.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True, use_fast=False)
    return model, tokenizer


def test_shape_trace_of_the_tiny_model(loaded_tiny):
    model, tokenizer = loaded_tiny
    picture = Image.new("RGB", (900, 300), "orange")  # 3x1 + thumbnail
    trace = architecture.trace_shapes(model, tokenizer, picture, question="What colour?", max_num=6)
    assert (trace.grid, trace.tiles, trace.patches_per_tile, trace.tokens_per_tile) == ((3, 1), 4, 1024, 256)
    assert trace.image_tokens == 4 * 256 and trace.max_diff_to_extract_feature < 1e-5
    shapes = {step: shape for step, shape, _, _ in trace.steps}
    vit, llm = model.config.vision_config.hidden_size, model.config.llm_config.hidden_size
    assert shapes["tiles (dynamic tiling)"] == (4, 3, 448, 448)
    assert shapes["drop the class token"] == (4, 1024, vit)
    assert shapes["pixel shuffle (v2, x0.5)"] == (4, 16, 16, 4 * vit)
    assert shapes["mlp1 (LayerNorm, Linear, GELU, Linear)"] == (4, 256, llm)
    assert shapes["prompt token ids"] == (1, trace.prompt_tokens) == tuple(trace.input_ids.shape)
    assert int((trace.input_ids == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")).sum()) == 1024
    assert "<img><IMG_CONTEXT> x 1024</img>" in trace.prompt and "What colour?" in trace.prompt
    assert {part for *_, part in trace.steps} == {"input", "ViT", "MLP", "LLM"}
    assert "pixel shuffle" in str(trace)
    fig = architecture.plot_shape_trace(trace)
    assert renders(fig)
