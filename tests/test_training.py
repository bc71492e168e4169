"""training.py: XTuner runs with kept logs, real failures, resume after a kill, and curves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from internvl_course.finetune import presets, training

pytestmark = pytest.mark.slow

LINE = ("11/24 23:17:19 - mmengine - INFO - Iter(train) [ 12/480]  lr: 1.7071e-04  eta: 0:03:10  time: 0.4355  "
        "data_time: 0.0601  memory: 9876  grad_norm: 29.2498  loss: 2.3115")


def test_parses_mmengines_iteration_line():
    record = training._parse_line(LINE)
    assert record == {"iter": 12, "total": 480, "lr": 1.7071e-04, "time": 0.4355, "data_time": 0.0601,
                      "memory": 9876.0, "grad_norm": 29.2498, "loss": 2.3115}
    assert training._parse_line("11/24 23:17:16 - mmengine - INFO - Checkpoints will be saved to /x") is None


def test_a_run_keeps_its_log_and_reports_its_checkpoint(xtuner_run):
    _, work, run = xtuner_run
    assert run.returncode == 0 and run.resumed_from is None
    assert run.checkpoint == work / "iter_4.pth"
    assert run.log_file.parent == work / "logs" and "Iter(train) [4/4]" in run.log_file.read_text()
    records = training.parse_logs(work)
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    assert all("loss" in r and "lr" in r for r in records)
    assert records[0]["lr"] < records[1]["lr"]  # warm-up


def test_curves_plot_loss_and_learning_rate(xtuner_run):
    _, work, _ = xtuner_run
    loss, lr = training.plot_training(training.parse_logs(work))
    assert (loss.axes[0].get_ylabel(), lr.axes[0].get_ylabel()) == ("loss", "learning rate")
    assert list(loss.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="no training records"):
        training.plot_training([])


def test_a_failure_raises_with_the_log_tail(tmp_path, tiny_model, tiny_llava_data):
    data_path, _ = tiny_llava_data
    config = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=tmp_path / "no-images-here", max_iters=2)
    with pytest.raises(training.TrainingFailed, match=r"(?s)exited with status [1-9].*Traceback.*Full log: "):
        training.train(config, tmp_path / "work", progress=False)
    assert list((tmp_path / "work" / "logs").glob("train-*.log"))  # the log stays for reading


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.py does not exist; write one with presets.write_config"):
        training.train(tmp_path / "cfg.py", tmp_path / "work", progress=False)


def test_killed_midway_then_resumed_from_the_last_checkpoint(tmp_path, tiny_model, tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    config = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=image_folder, max_iters=14, save_steps=2, save_total_limit=-1)
    work = tmp_path / "work"
    # The command a student would run, in its own process group so that killing it also kills XTuner.
    child = subprocess.Popen([sys.executable, "-m", "internvl_course.finetune.training", str(config), str(work)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while training.last_checkpoint(work) is None and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    stopped_at = training.last_checkpoint(work)
    assert stopped_at is not None and stopped_at.name != "iter_14.pth", "the run ended before it could be killed"
    done_before = int(stopped_at.stem.split("_")[1])

    run = training.train(config, work, progress=False)
    assert run.resumed_from == stopped_at
    assert run.checkpoint == work / "iter_14.pth"
    resumed_log = run.log_file.read_text()
    assert f"--resume {stopped_at}" in resumed_log.splitlines()[0]
    first_iter = min(r["iter"] for r in map(training._parse_line, resumed_log.splitlines()) if r)
    assert first_iter == done_before + 1  # it went on from the checkpoint, not from the start
    assert [r["iter"] for r in training.parse_logs(work)] == list(range(1, 15))


def test_a_run_with_other_settings_is_set_aside_not_resumed(tmp_path, tiny_model, tiny_llava_data, xtuner_run):
    import shutil

    _, done, _ = xtuner_run
    work = tmp_path / "work"
    shutil.copytree(done, work)  # a finished run of the 4-iteration config
    data_path, image_folder = tiny_llava_data
    other = presets.write_config(tmp_path / "other.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                  image_folder=image_folder, max_iters=2, save_steps=2, lr=1e-4)
    run = training.train(other, work, progress=False)
    assert run.resumed_from is None and run.checkpoint == work / "iter_2.pth"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("work.")]
    assert len(aside) == 1 and (aside[0] / "iter_4.pth").is_file()  # the old run is kept, renamed
    # Asking for a fresh start sets even a matching run aside.
    again = training.train(other, work, resume=False, progress=False)
    assert again.resumed_from is None
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("work.")]) == 2
