"""Rendering XTuner configs: presets, overrides, and clear errors for bad settings."""

from __future__ import annotations

import json

import pytest

from internvl_course.finetune import presets

pytestmark = pytest.mark.train_env


def _llava_file(folder, samples: int, name: str = "data.json"):
    """``samples`` LLaVA items (settings_for checks the file and its pictures), one picture for all."""
    from internvl_course.data.drawing import Piece, Scene, render

    render(Scene(pieces=(Piece("circle", "red", 2),)), seed=1).save(folder / "0.jpg")
    path = folder / name
    path.write_text(json.dumps([{"image": "0.jpg", "conversations": [
        {"from": "human", "value": f"<image>\nquestion {i}"}, {"from": "gpt", "value": "两个红色的圆形。"}]}
        for i in range(samples)], ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path, tiny_model):
    return {"model_path": tiny_model, "data_path": _llava_file(tmp_path, 10), "image_folder": tmp_path}


def test_tutorial_preset_is_the_tutorials_run(data):
    s = presets.settings_for("tutorial", **data)
    assert (s["batch_size"], s["max_epochs"], s["lr"], s["save_steps"], s["save_total_limit"]) == (4, 10, 3e-5, 64, -1)
    assert (s["lora_r"], s["lora_alpha"], s["lora_dropout"], s["accumulative_counts"]) == (128, 256, 0.05, 2)
    assert s["max_iters"] == 10 * 3  # 10 epochs x ceil(10 samples / batch 4)
    # On a GPU the model is XTuner's own: checkpointed activations, DeepSpeed's float32 master weights.
    assert s["activation_checkpointing"] is True and s["trainable_fp32"] is False


def test_the_tutorials_256_samples_end_at_iter_640(tmp_path, tiny_model):
    path = _llava_file(tmp_path, 256, "sivqa_llava.json")
    s = presets.settings_for("tutorial", model_path=tiny_model, data_path=path, image_folder=tmp_path)
    assert s["max_iters"] == 640  # iter_640.pth is the end of epoch 10 (docs/design.md, "The original tutorial")


def test_cpu_preset_uses_what_a_cpu_needs(data):
    s = presets.settings_for("cpu-tiny", **data)
    assert s["amp"] is False and s["dist_backend"] == "gloo" and s["dataloader_num_workers"] == 0
    assert s["lora_dropout"] == 0.0  # its random masks cost a quarter of a CPU step
    # mlp1 in float32 (no DeepSpeed master copy on a CPU) and no recomputed activations.
    assert s["trainable_fp32"] is True and s["activation_checkpointing"] is False
    assert s["group_by_length"] is False
    # The frozen ViT computes each picture once; the peak lr is held, then decays over the last fifth.
    assert s["cache_vision_features"] is True and s["freeze_visual_encoder"] is True
    assert (s["betas"], s["decay_ratio"]) == ((0.9, 0.99), 0.2)
    # 3.5 passes over 10 samples in batches of 8: 2 batches an epoch, 7 iterations (a whole number).
    assert (s["max_epochs"], s["max_iters"]) == (3.5, 7)


def _lr_curve(config_path, max_iters):
    """The learning rate of each iteration, stepping mmengine's own schedulers as the rendered
    config builds them (train env only)."""
    import torch
    from mmengine.config import Config
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

    config = Config.fromfile(str(config_path))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.settings["lr"])
    kinds = {"LinearLR": LinearLR, "CosineAnnealingLR": CosineAnnealingLR}
    schedulers = [kinds[s.pop("type").__name__](optimizer, **s) for s in map(dict, config.param_scheduler)]
    lrs = []
    for _ in range(max_iters):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return config.settings["lr"], lrs


@pytest.mark.parametrize("decay_ratio", [None, 0.2])
@pytest.mark.parametrize("max_iters", [4, 10, 640])
def test_learning_rate_reaches_its_peak_after_warmup(data, tmp_path, max_iters, decay_ratio):
    pytest.importorskip("mmengine")
    path = presets.write_config(tmp_path / "cfg.py", "tutorial", max_iters=max_iters, decay_ratio=decay_ratio, **data)
    peak, lrs = _lr_curve(path, max_iters)
    assert lrs[0] < 1e-3 * peak  # warm-up starts near zero
    assert max(lrs) == pytest.approx(peak, rel=1e-6)  # and climbs all the way
    assert lrs[-1] < max(lrs)  # then decays


def test_warmup_stable_decay_holds_the_peak_then_falls_linearly(data, tmp_path):
    pytest.importorskip("mmengine")
    path = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", max_iters=900, decay_ratio=0.2, **data)
    peak, lrs = _lr_curve(path, 900)
    warmup = 27  # 3 % of 900
    assert lrs[warmup] == pytest.approx(peak, rel=1e-6) and lrs[719] == pytest.approx(peak, rel=1e-6)
    assert lrs[720] == pytest.approx(peak, rel=1e-6)  # the decay starts from the peak
    falls = [a - b for a, b in zip(lrs[720:], lrs[721:])]
    assert min(falls) > 0 and max(falls) == pytest.approx(min(falls), rel=1e-3)  # a straight line down
    assert lrs[-1] < 0.01 * peak
    # XTuner's cosine (decay_ratio=None) already falls in the middle of the run.
    cosine = presets.write_config(tmp_path / "cos.py", "cpu-tiny", max_iters=900, decay_ratio=None, **data)
    assert _lr_curve(cosine, 900)[1][450] < 0.6 * peak


@pytest.mark.parametrize(("preset", "overrides", "sampler"), [
    ("tutorial", {}, "LengthGroupedSampler"),  # XTuner's recipe: batches of similar length
    ("cpu-tiny", {}, "DefaultSampler"),  # equal lengths: grouping would only sort by question type
    ("cpu-tiny", {"group_by_length": True}, "LengthGroupedSampler"),
])
def test_the_config_picks_the_sampler_the_settings_ask_for(data, tmp_path, preset, overrides, sampler):
    pytest.importorskip("xtuner")  # the config imports XTuner's sampler: the train env only
    from mmengine.config import Config

    config = Config.fromfile(str(presets.write_config(tmp_path / "cfg.py", preset, **overrides, **data)))
    chosen = config.train_dataloader.sampler
    assert chosen.type.__name__ == sampler
    if sampler == "DefaultSampler":
        assert chosen.shuffle is True


def test_overrides_and_rendering(data):
    text = presets.render_config("cpu-tiny", max_iters=7, lr=1e-3, **data)
    compile(text, "cfg.py", "exec")
    assert "'max_iters': 7" in text and "'lr': 0.001" in text


@pytest.mark.parametrize("bad, message", [
    ({"preset": "huge"}, "unknown preset 'huge'; choose one of tutorial, 24gb, cpu-tiny"),
    ({"learning_rate": 1}, "unknown setting(s) learning_rate"),
    ({"max_iters": 0}, "max_iters must be at least 1"),
    ({"decay_ratio": 0}, "decay_ratio must be None (cosine decay) or a share of the steps in (0, 1], got 0"),
    ({"decay_ratio": 1.5}, "decay_ratio must be None"),
])
def test_bad_settings_are_named(data, bad, message):
    preset = bad.pop("preset", "cpu-tiny")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        presets.settings_for(preset, **data, **bad)


def test_missing_and_broken_data_files(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="nowhere.json does not exist"):
        presets.settings_for("cpu-tiny", **{**data, "data_path": tmp_path / "nowhere.json"})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json: 1 problem\(s\)[\s\S]*not JSON"):
        presets.settings_for("cpu-tiny", **{**data, "data_path": broken})
    with pytest.raises(ValueError, match="model_path is required"):
        presets.settings_for("cpu-tiny", **{**data, "model_path": None})


def test_24gb_preset_trades_batch_for_accumulation_and_caps_tiles(data):
    s = presets.settings_for("24gb", **data)
    tutorial = presets.settings_for("tutorial", **data)
    assert (s["batch_size"], s["max_dynamic_patch"]) == (1, 6)
    # The same effective batch (samples per optimizer update) as the tutorial's 4 x 2.
    assert s["batch_size"] * s["accumulative_counts"] == tutorial["batch_size"] * tutorial["accumulative_counts"]
    assert "max_dynamic_patch=settings[\"max_dynamic_patch\"]" in presets.render_config("24gb", **data)


def test_every_setting_is_explained_in_the_table(data):
    table = presets.settings_table("24gb", **data)
    assert all(name in table for name in presets.EXPLAIN)
    lines = table.splitlines()
    assert any(line.split()[:2] == ["max_dynamic_patch", "6"] for line in lines)
    assert "(XTuner's recipe: 4)" in table  # batch_size departs
    # Every value starts in the value column, after the longest name too.
    column = lines[0].index("value")
    assert all(line[column - 1] == " " and line[column] != " " for line in lines[1:]), table


def test_the_dataset_wrapper_caps_the_tiles_xtuner_loads(tiny_model, tmp_path):
    """XTuner's own dataset, through internvl_dataset, on a wide picture (the train env only, as the
    config's sampler above)."""
    pytest.importorskip("xtuner")
    from xtuner.utils import PROMPT_TEMPLATE

    from internvl_course.data.drawing import Piece, Scene, render
    from internvl_course.finetune.launch import internvl_dataset

    render(Scene(pieces=(Piece("circle", "red", 2),)), seed=1).resize((1792, 896)).save(tmp_path / "wide.jpg")
    (tmp_path / "data.json").write_text(json.dumps([{"image": "wide.jpg", "conversations": [
        {"from": "human", "value": "<image>\n盘子里有什么？"}, {"from": "gpt", "value": "两个红色的圆形。"}]}]))
    tiles = [internvl_dataset(max_dynamic_patch=m, model_path=str(tiny_model), data_paths=str(tmp_path / "data.json"),
                              image_folders=str(tmp_path), template=PROMPT_TEMPLATE.internlm2_chat)[0]["pixel_values"]
             .shape[0] for m in (None, 2)]
    assert tiles == [9, 3]  # 4 x 2 tiles + thumbnail; capped: 2 + thumbnail
