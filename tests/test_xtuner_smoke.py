"""XTuner really trains the embedded tiny InternVL2 in the train env, and its exit status is real."""

from __future__ import annotations

import pytest
import torch

from internvl_course import finetune, trainenv

pytestmark = pytest.mark.slow


def test_one_iteration_of_xtuner_train_exits_0(tmp_path, tiny_model, tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    config = finetune.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=image_folder, max_iters=1, save_steps=1)
    result = trainenv.run_in_train_env(["-m", "internvl_course.xtuner_launch", str(config),
                                        "--work-dir", str(tmp_path / "work")], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Iter(train) [1/1]" in result.stdout + result.stderr
    checkpoint = torch.load(tmp_path / "work" / "iter_1.pth", map_location="cpu", weights_only=False)
    names = list(checkpoint["state_dict"])
    # XTuner keeps only what it trains: the LoRA adapters of the LLM and the mlp1 projector.
    assert any("lora_A" in n for n in names) and any("mlp1" in n for n in names)
    assert all("lora_" in n or "mlp1" in n for n in names)


def test_a_failing_run_returns_a_non_zero_status(tmp_path, tiny_model, tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    config = finetune.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=tmp_path / "no-images-here", max_iters=1)
    result = trainenv.run_in_train_env(["-m", "internvl_course.xtuner_launch", str(config),
                                        "--work-dir", str(tmp_path / "work")], timeout=900)
    # XTuner crashes while loading the first picture; the status must say so (`xtuner train` says 0).
    assert result.returncode != 0
    assert "Traceback" in result.stderr
