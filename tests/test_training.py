"""training.py: XTuner runs with kept logs, real failures, resume after a kill, and curves."""

from __future__ import annotations

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
    assert run.returncode == 0
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
    import shutil

    data_path, image_folder = tiny_llava_data
    pictures = shutil.copytree(image_folder, tmp_path / "pictures")
    config = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=pictures, max_iters=2)
    shutil.rmtree(pictures)  # gone after the settings were checked: XTuner finds no picture to load
    # XTuner crashes while loading the first picture: the launcher's status must say so (`xtuner
    # train` says 0), and the error carries the log's tail with the traceback.
    with pytest.raises(training.TrainingFailed, match=r"(?s)exited with status [1-9].*Traceback.*Full log: "):
        training.train(config, tmp_path / "work", progress=False)
    assert list((tmp_path / "work" / "logs").glob("train-*.log"))  # the log stays for reading


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.py does not exist; write one with presets.write_config"):
        training.train(tmp_path / "cfg.py", tmp_path / "work", progress=False)


def test_killed_midway_then_resumed_from_the_last_checkpoint(xtuner_run):
    """The shared run: its command was killed once iteration 2 was saved, then train() resumed it."""
    _, work, run = xtuner_run
    assert run.resumed_from == work / "iter_2.pth"
    assert run.checkpoint == work / "iter_4.pth"
    resumed_log = run.log_file.read_text()
    assert f"--resume {run.resumed_from}" in resumed_log.splitlines()[0]
    first_iter = min(r["iter"] for r in map(training._parse_line, resumed_log.splitlines()) if r)
    assert first_iter == 3  # it went on from the checkpoint, not from the start
    assert [r["iter"] for r in training.parse_logs(work)] == [1, 2, 3, 4]  # both attempts' logs, joined
    assert len(list((work / "logs").glob("train-*.log"))) == 2  # the killed attempt's log is kept


def test_a_run_with_other_settings_is_set_aside_not_resumed(tmp_path, tiny_model, tiny_llava_data, xtuner_run,
                                                            monkeypatch):
    """train()'s choice, made before it launches: a stand-in for the train env's Python records each
    launch (the shared run and test_downloaded_checkpoints.py show what XTuner then does)."""
    import shutil

    stand_in = tmp_path / "train-python"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\n', encoding="utf-8")
    stand_in.chmod(0o755)
    monkeypatch.setenv("INTERNVL_COURSE_TRAIN_PYTHON", str(stand_in))

    def launched() -> list[str]:
        return (tmp_path / "train-python.args").read_text().splitlines()

    _, done, _ = xtuner_run
    work = tmp_path / "work"
    shutil.copytree(done, work)  # a finished run of the 4-iteration config
    data_path, image_folder = tiny_llava_data
    other = presets.write_config(tmp_path / "other.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                  image_folder=image_folder, max_iters=2, save_steps=2, lr=1e-4)
    run = training.train(other, work, progress=False)
    assert run.resumed_from is None and run.checkpoint is None  # from the start, in an emptied folder
    assert launched()[launched().index("--work-dir") + 1] == str(work) and "--resume" not in launched()
    assert (work / "run_config.py").read_text() == other.read_text()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("work.")]
    assert len(aside) == 1 and (aside[0] / "iter_4.pth").is_file()  # the old run is kept, renamed
    # Asking for a fresh start sets even a matching run aside.
    (tmp_path / "train-python.args").unlink()
    again = training.train(other, work, resume=False, progress=False)
    assert again.resumed_from is None and "--resume" not in launched()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("work.")]
    assert len(aside) == 2 and sum((p / "run_config.py").read_text() == other.read_text() for p in aside) == 1
