"""Processes the kit starts end with their owner, one trainer per work folder, a doctor that never
crashes, and a demo whose turns are bounded.

Training is driven through the real code path (``training.train`` -> the train env's Python ->
``internvl_course.finetune.launch``) with a stand-in for XTuner: a module named
``xtuner.tools.train`` that forks a helper, as XTuner's data loader does, says where both are,
and trains forever. The parent that calls ``train`` is a process of its own, like a notebook
kernel, so that the test can kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import COURSE_PYTHON
from internvl_course.finetune import training
from test_demo import GRADIO_QUEUE_NOISE, SHORT, chat_pipe, client, launch, pictures, reply_text, upload  # noqa: F401

#: A ceiling for things that take a second or two; never what decides a result.
PATIENCE_S = 120

FAKE_XTUNER = '''\
import os, subprocess, sys, time
from pathlib import Path

helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
marker = Path(os.environ["FAKE_TRAINER_MARKER"])
marker.with_suffix(".tmp").write_text(f"{os.getpid()} {helper.pid}", encoding="utf-8")
marker.with_suffix(".tmp").rename(marker)
print("Iter(train) [1/1000]  lr: 1.0e-04  loss: 1.0000", flush=True)
time.sleep(3600)
'''

KERNEL = '''\
import sys
from internvl_course.finetune import training

training.train(sys.argv[1], sys.argv[2], gpus=0, progress=False)
'''


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def wait_until(condition, what: str, timeout: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def fake_training(tmp_path: Path):
    """A function that starts a "kernel" training with the stand-in XTuner and returns (kernel,
    config, work_dir, pids), pids being XTuner's process, its helper and the train env's first
    process (torchrun, where it sits between)."""
    fake = tmp_path / "fake"
    (fake / "xtuner" / "tools").mkdir(parents=True)
    (fake / "xtuner" / "__init__.py").write_text("")
    (fake / "xtuner" / "tools" / "__init__.py").write_text("")
    (fake / "xtuner" / "tools" / "train.py").write_text(FAKE_XTUNER)
    started: list[subprocess.Popen] = []
    trainers: list[int] = []

    def start(torchrun: bool = False) -> tuple[subprocess.Popen, Path, Path, list[int]]:
        # The train env's Python, as INTERNVL_COURSE_TRAIN_PYTHON may name it: the course env's,
        # under torchrun (one process a node, as on a GPU machine) when asked.
        stand_in = tmp_path / "train-python"
        runner = f"{COURSE_PYTHON} -m torch.distributed.run --nproc_per_node=1" if torchrun else str(COURSE_PYTHON)
        stand_in.write_text(f'#!/bin/sh\nexec {runner} "$@"\n')
        stand_in.chmod(0o755)
        config, work, marker = tmp_path / "cfg.py", tmp_path / "work", tmp_path / "trainer.pids"
        config.write_text("# read by the stand-in XTuner only\n")
        (tmp_path / "kernel.py").write_text(KERNEL)
        env = {**os.environ, "INTERNVL_COURSE_TRAIN_PYTHON": str(stand_in), "FAKE_TRAINER_MARKER": str(marker),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))}
        kernel = subprocess.Popen([str(COURSE_PYTHON), str(tmp_path / "kernel.py"), str(config), str(work)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(kernel)
        wait_until(lambda: marker.exists() or kernel.poll() is not None, "the stand-in XTuner to start")
        assert marker.exists(), f"the kernel stopped with status {kernel.returncode}:\n{kernel.stderr.read()}"
        owner, first = map(int, training.lock_file(work).read_text().split())
        assert owner == kernel.pid
        trainers.extend([*map(int, marker.read_text().split()), first])
        return kernel, config, work, trainers[-3:]

    yield start
    for kernel in started:
        if kernel.poll() is None:
            kernel.kill()
        kernel.wait()
    for pid in filter(running, trainers):  # what a failed test left going
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("torchrun", [False, True], ids=["cpu", "under-torchrun"])
def test_a_killed_kernel_takes_its_training_with_it(fake_training, torchrun: bool) -> None:
    kernel, _, work, pids = fake_training(torchrun)
    assert all(map(running, pids))
    kernel.send_signal(signal.SIGKILL)  # what a crashed or killed Jupyter kernel does: no goodbye
    kernel.wait()
    wait_until(lambda: not any(map(running, pids)), f"processes {pids} to stop after their kernel died")
    lock = training.lock_work_dir(work)  # free again: the next train() goes ahead
    lock.close()


def test_interrupting_train_stops_every_process_it_started(fake_training) -> None:
    kernel, _, _, pids = fake_training()
    kernel.send_signal(signal.SIGINT)  # the notebook's stop button
    assert kernel.wait(timeout=PATIENCE_S) != 0
    assert "Training stopped." in kernel.stderr.read()
    wait_until(lambda: not any(map(running, pids)), f"processes {pids} to stop after an interrupt")


def test_a_second_trainer_on_a_folder_in_use_is_refused(fake_training, capsys) -> None:
    kernel, config, work, pids = fake_training()
    trainer = pids[-1]
    before = sorted(p.name for p in work.rglob("*"))
    with pytest.raises(training.WorkFolderInUse) as refused:  # a fresh start would move the folder away
        training.train(config, work, resume=False, gpus=0, progress=False)
    message = str(refused.value)
    assert f"XTuner process {trainer}, started by process {kernel.pid}" in message
    assert f"`kill {trainer}`" in message and "interrupt the notebook cell" in message
    assert training.main([str(config), str(work), "--gpus", "0"]) == 1
    assert f"{work} is in use by another training run" in capsys.readouterr().err
    assert sorted(p.name for p in work.rglob("*")) == before, "the refused runs wrote nothing"
    assert all(map(running, pids)), "the first run trains on"


def test_each_node_of_several_locks_the_shared_work_folder_for_itself(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NNODES", "2")
    locks = []
    for rank in ("0", "1"):  # every node runs train() on the one work_dir its nodes share
        monkeypatch.setenv("NODE_RANK", rank)
        locks.append(training.lock_work_dir(tmp_path))
        assert training.lock_file(tmp_path).name == f"train.node{rank}.lock"
    with pytest.raises(training.WorkFolderInUse, match=f"process {os.getpid()};"):
        training.lock_work_dir(tmp_path)  # node 1 twice
    for lock in locks:
        lock.close()


def doctor_rows(capsys) -> tuple[int, dict[str, dict]]:
    """``internvl-course doctor --json`` as a user runs it: (exit status, rows by name)."""
    import json

    from internvl_course import cli

    status = cli.main(["doctor", "--json"])
    return status, {row["name"]: row for row in json.loads(capsys.readouterr().out)}


@pytest.mark.parametrize("train_python", ["not-executable", "not-a-program", "a-folder"])
def test_doctor_reports_a_train_python_it_cannot_start(tmp_path, monkeypatch, capsys, train_python: str) -> None:
    python = tmp_path / "python"
    if train_python == "a-folder":
        python.mkdir()
    else:
        python.write_text("#!/bin/sh\nexit 0\n" if train_python == "not-executable" else "not a program\n")
        python.chmod(0o644 if train_python == "not-executable" else 0o755)
    monkeypatch.setenv("INTERNVL_COURSE_TRAIN_PYTHON", str(python))
    status, rows = doctor_rows(capsys)
    assert status == 1
    row = rows["train env (.venv-train)"]
    assert row["status"] == "MISSING" and row["detail"].startswith(str(python))
    assert {"not-executable": "is not executable", "not-a-program": "cannot be started: Exec format error",
            "a-folder": "is a folder"}[train_python] in row["detail"]
    assert f"point INTERNVL_COURSE_TRAIN_PYTHON (now {python}) at the train env's bin/python" in row["fix"]
    if train_python == "not-executable":
        assert row["fix"].startswith(f"make it executable (`chmod +x {python}`)")
    assert rows["free disk"]["status"] == "ok", "the other checks still ran"


def test_doctor_reports_an_unreadable_kernel_spec(tmp_path, monkeypatch, capsys) -> None:
    spec = tmp_path / "kernels" / "internvl-course"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text("{", encoding="utf-8")  # cut short, say by a full disk
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))  # searched before the user's own kernels
    status, rows = doctor_rows(capsys)
    assert status == 1
    row = rows["jupyter kernel"]
    assert row["detail"].startswith(f"the kernel spec {spec}/kernel.json cannot be read")
    assert row["fix"] == f"delete or repair {spec}/kernel.json, then run `make setup` to register the kernel again"


def test_a_check_that_fails_unexpectedly_is_a_row(monkeypatch, capsys) -> None:
    from internvl_course.course import doctor

    def broken() -> None:
        raise RuntimeError("CUDA driver initialization failed")  # as torch says on a half-installed driver

    monkeypatch.setattr(doctor, "check_torch", broken)
    status, rows = doctor_rows(capsys)
    assert status == 1
    assert rows["torch"]["detail"] == "could not be checked: RuntimeError: CUDA driver initialization failed"
    assert "run `internvl-course doctor` again" in rows["torch"]["fix"]
    assert rows["chat: transformers"]["status"] == "ok", "the checks after it still ran"


# -- the demo ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_url(chat_pipe):
    from internvl_course.serve.demo import build_demo

    demo = build_demo(chat_pipe)
    yield launch(demo)
    demo.close()


def user_questions(chat: list[dict]) -> list[str]:
    return [reply_text([message]) for message in chat if message["role"] == "user"]


def test_the_question_box_takes_at_most_the_limit(chat_pipe) -> None:
    from internvl_course.serve.demo import MAX_QUESTION_CHARS, build_demo

    demo = build_demo(chat_pipe)
    box = next(c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "question")
    assert box["props"]["max_length"] == MAX_QUESTION_CHARS == 2000


@GRADIO_QUEUE_NOISE
def test_a_question_over_the_limit_is_refused_before_the_model_runs(demo_url, chat_pipe, pictures,
                                                                     monkeypatch) -> None:
    from gradio_client.exceptions import AppError

    from internvl_course.serve.demo import MAX_QUESTION_CHARS

    asked: list = []
    real_stream = chat_pipe.stream_chat

    def counted(prompt, *args, **kwargs):
        asked.append(prompt)
        return real_stream(prompt, *args, **kwargs)

    monkeypatch.setattr(chat_pipe, "stream_chat", counted)
    c = client(demo_url)
    upload(c, pictures["dish"])
    with pytest.raises(AppError, match="20,000 characters long; this demo takes at most 2,000 .*Shorten it"):
        c.predict("盘" * 20_000, 0.0, 1.0, SHORT, api_name="/chat")
    assert asked == [], "the model never saw it"
    longest = "盘子里有什么？" * (MAX_QUESTION_CHARS // 7) + "盘" * (MAX_QUESTION_CHARS % 7)
    chat, _, status = c.predict(longest, 0.0, 1.0, SHORT, api_name="/chat")
    assert len(longest) == MAX_QUESTION_CHARS and user_questions(chat) == [longest] and "Turn 1" in status


@GRADIO_QUEUE_NOISE
def test_a_long_answer_holds_up_only_the_turns_queued_before_others(demo_url, chat_pipe, pictures,
                                                                    monkeypatch) -> None:
    """While one tab's answer is held mid-way, another tab's start over, upload and clear are
    answered, and its question is answered right after that answer, before the busy tab's next."""
    import threading

    real_stream = chat_pipe.stream_chat
    order: list[str] = []
    mid_answer, release = threading.Event(), threading.Event()

    def held_stream(prompt, *args, **kwargs):
        order.append(prompt if isinstance(prompt, str) else prompt[0])
        pieces = real_stream(prompt, *args, **kwargs)
        yield next(pieces)
        if order[-1] == "first, long":
            mid_answer.set()
            assert release.wait(timeout=PATIENCE_S), "the test never released the long answer"
        yield from pieces

    monkeypatch.setattr(chat_pipe, "stream_chat", held_stream)
    busy, other = client(demo_url), client(demo_url)
    long_turn = busy.submit("first, long", 0.0, 1.0, SHORT, api_name="/chat")
    assert mid_answer.wait(timeout=PATIENCE_S), "the long answer never started"
    # Nothing here waits for the model: these return while the long answer is still held.
    assert other.predict(api_name="/restart")[1] == []
    _, chat, status = upload(other, pictures["dish"])
    assert chat == [] and "dish.jpg" in status
    assert other.predict(api_name="/clear")[0] == []
    assert not long_turn.done()
    # Turns wait in gradio's queue, in the order they came, while the model is busy.
    others_turn = other.submit("second, from another tab", 0.0, 1.0, SHORT, api_name="/chat")
    wait_until(lambda: others_turn.status().code.name == "IN_QUEUE", "the other tab's turn to queue")
    busy_again = busy.submit("third, the busy tab again", 0.0, 1.0, SHORT, api_name="/chat")
    wait_until(lambda: busy_again.status().code.name == "IN_QUEUE", "the busy tab's next turn to queue")
    release.set()
    for job in (long_turn, others_turn, busy_again):
        job.result(timeout=PATIENCE_S)
    assert order == ["first, long", "second, from another tab", "third, the busy tab again"]
    assert user_questions(others_turn.result()[0]) == ["second, from another tab"]


@GRADIO_QUEUE_NOISE
def test_eight_tabs_at_once_are_all_answered_and_kept_apart(demo_url, pictures) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tabs = [client(demo_url) for _ in range(8)]
    for tab in tabs[::2]:  # half of them talk about a picture
        upload(tab, pictures["dish"])

    def conversation(index: int) -> list[tuple]:
        tab = tabs[index]
        return [tab.predict(f"question {turn} of tab {index}", 0.0, 1.0, SHORT, api_name="/chat")
                for turn in (1, 2)]

    with ThreadPoolExecutor(len(tabs)) as pool:
        results = list(pool.map(conversation, range(len(tabs))))
    for index, turns in enumerate(results):
        (first, _, first_status), (second, _, second_status) = turns
        assert user_questions(first) == [f"question 1 of tab {index}"] and "Turn 1" in first_status
        assert user_questions(second) == [f"question {t} of tab {index}" for t in (1, 2)]
        assert "Turn 2" in second_status and reply_text(second).strip()
        assert ("dish.jpg" in second_status) == (index % 2 == 0), "each tab kept its own picture"


@GRADIO_QUEUE_NOISE
def test_a_turn_that_does_not_fit_the_context_gets_a_message(demo_url, chat_pipe, pictures, monkeypatch) -> None:
    from internvl_course.serve.demo import MAX_QUESTION_CHARS

    monkeypatch.setattr(chat_pipe, "session_len", 600)  # a picture's 256 tokens and a long question fill it
    c = client(demo_url)
    upload(c, pictures["dish"])
    long_question = "盘子里有什么？" * (MAX_QUESTION_CHARS // 7)
    chat, box, status = c.predict(long_question, 0.0, 1.0, SHORT, api_name="/chat")
    assert chat == [] and box == long_question, "nothing was added, and the question stays to be shortened"
    assert "does not fit the model's context: the prompt is" in status and "Clear chat" in status
    chat, _, status = c.predict("盘子里有什么？", 0.0, 1.0, SHORT, api_name="/chat")
    assert user_questions(chat) == ["盘子里有什么？"] and "Turn 1" in status and "dish.jpg" in status


def test_a_train_python_that_cannot_run_is_named_before_anything_starts(tmp_path, monkeypatch):
    from internvl_course.finetune import trainenv

    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o644)
    monkeypatch.setenv("INTERNVL_COURSE_TRAIN_PYTHON", str(python))
    with pytest.raises(PermissionError, match=r"is not executable: make it executable \(chmod \+x"):
        trainenv.train_python()
