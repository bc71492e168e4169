"""Several GPUs: the launch commands and checks that the CPU can verify (issue 10).

The runs themselves need a machine with two or more GPUs; these tests pin what every launch
carries (torchrun's per-node processes, the multi-node variables, multicast off) and that asking
for more GPUs than there are fails before anything starts, naming the setting and the fix.
"""

from __future__ import annotations

import pytest

from internvl_course import device
from internvl_course.finetune import presets, training


@pytest.fixture
def config(tmp_path, tiny_model, tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    return presets.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                 image_folder=image_folder, gpus=2)


@pytest.fixture
def one_node(monkeypatch):
    for name in [*training.NODE_VARIABLES, "NPROC_PER_NODE"]:
        monkeypatch.delenv(name, raising=False)


def test_gpus_is_a_setting_read_back_from_the_config(config, tiny_model, tiny_llava_data, one_node):
    assert presets.read_settings(config)["gpus"] == 2
    assert training.default_gpus(config) == 2
    data_path, image_folder = tiny_llava_data
    table = presets.settings_table("tutorial", model_path=tiny_model, data_path=data_path, image_folder=image_folder, gpus=2)
    assert any(line.split()[:2] == ["gpus", "2"] and "batch_size x accumulative_counts x gpus" in line
               for line in table.splitlines())


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_a_bad_gpus_value_is_named(tiny_model, tiny_llava_data, bad):
    data_path, image_folder = tiny_llava_data
    with pytest.raises(ValueError, match=f"gpus must be .*got {bad!r}"):
        presets.settings_for("tutorial", model_path=tiny_model, data_path=data_path, image_folder=image_folder, gpus=bad)


def test_nproc_per_node_is_the_fallback(tmp_path, tiny_model, tiny_llava_data, monkeypatch, one_node):
    data_path, image_folder = tiny_llava_data
    plain = presets.write_config(tmp_path / "plain.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                  image_folder=image_folder)
    monkeypatch.setenv("NPROC_PER_NODE", "4")
    assert training.default_gpus(plain) == 4
    monkeypatch.delenv("NPROC_PER_NODE")
    monkeypatch.setattr(training, "_uses_gpu", lambda: False)
    assert training.default_gpus(plain) == 0


def test_two_gpus_on_one_node_run_torchrun_with_deepspeed(config, tmp_path, one_node):
    command = training.train_command(config, tmp_path / "work")
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert command[-4:] == ["--launcher", "pytorch", "--deepspeed", "deepspeed_zero2"]
    assert not any(arg.startswith(("--nnodes", "--node_rank", "--master_addr")) for arg in command)


def test_several_nodes_take_xtuners_variables(config, tmp_path, monkeypatch, one_node):
    for name, value in {"NNODES": "2", "NODE_RANK": "1", "ADDR": "10.0.0.1", "PORT": "29501"}.items():
        monkeypatch.setenv(name, value)
    command = training.train_command(config, tmp_path / "work")
    assert command[3:8] == ["--nproc_per_node=2", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                            "--master_port=29501"]


def test_every_launch_keeps_nvlink_multicast_off(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    env = training._child_env()
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"


@pytest.mark.skipif(device.torch.cuda.device_count() >= 2, reason="this machine has the GPUs")
def test_more_gpus_than_there_are_fail_before_anything_starts(config, tmp_path, one_node):
    work = tmp_path / "work"
    with pytest.raises(ValueError, match=r"gpus=2 asks for 2 GPUs, but torch sees [01] here"):
        training.train(config, work)
    assert not work.exists(), "nothing may be written before the check"
    with pytest.raises(ValueError, match=r"tp=2 asks for 2 GPUs"):
        device.check_gpu_count(2, "tp")
