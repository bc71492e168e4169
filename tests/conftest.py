"""Shared test setup: the ``gpu`` marker skips itself, with a reason, where there is no CUDA; the
course notebooks run once per session (``smoke_run``), beside the other tests, for every test that
asserts on them."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
COURSE_PYTHON = REPO / ".venv" / "bin" / "python"
TRAIN_PYTHON = REPO / ".venv-train" / "bin" / "python"

# What OpenGVLab/InternVL2-2B carries besides its README and examples, plus the fast tokenizer.
MODEL_FILES = {
    "config.json", "generation_config.json", "model.safetensors",
    "configuration_intern_vit.py", "configuration_internlm2.py", "configuration_internvl_chat.py",
    "modeling_intern_vit.py", "modeling_internlm2.py", "modeling_internvl_chat.py", "conversation.py",
    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "tokenization_internlm2.py", "tokenization_internlm2_fast.py",
    "written_by_internvl_course.json",  # the kit's ownership marker (fileio.atomic_directory)
}


def pytest_configure(config: pytest.Config) -> None:
    # torch's OpenMP threads spin while they wait for work. Where two processes share the two cores
    # (the notebooks of smoke_run beside the tests, XTuner beside its parent, a busy machine) the
    # spinning threads starve the working ones: a small-matrix loop ran 30 times slower (measured).
    # Passive waiting gives the core back and changes no result. Set before anything imports torch,
    # so this process and every process it starts (kernels, XTuner, the CLI) wait passively.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config.addinivalue_line("markers", "runs_notebooks(*numbers): asserts on these notebooks of ``smoke_run``, "
                            "which then executes them (and only them, when no selected test needs the others)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The tests that read the shared notebook run go last: it runs beside all the others first.
    items.sort(key=lambda item: item.get_closest_marker("runs_notebooks") is not None)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU, and torch sees none here (run it on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class _Started:
    """The shared notebook run, started in the background when collection ended."""

    process: subprocess.Popen
    folder: Path  # what tests/nbval_record.py writes, and nbval's report (nbval.log)


STARTED = pytest.StashKey[_Started]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start ``smoke_run``'s notebooks now, in a process of their own, if a selected test reads them.

    The notebooks take minutes of mostly single-threaded work; on two cores the rest of the suite
    runs meanwhile instead of before or after them.
    """
    wanted = {n for item in session.items for marker in item.iter_markers("runs_notebooks") for n in marker.args}
    if not wanted or session.config.option.collectonly or importlib.util.find_spec("nbval") is None:
        return
    from internvl_course.course.notebook import PARAMS_ENV

    if "07" in wanted:
        wanted.add("06")  # 07 merges what 06 trained
    notebooks = [path for path in sorted((REPO / "notebooks").glob("*.ipynb")) if path.name[:2] in wanted]
    folder = Path(tempfile.mkdtemp(prefix="internvl-smoke-run-"))
    with open(folder / "nbval.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [str(COURSE_PYTHON), "-m", "pytest", "--nbval-lax", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
             "-p", "tests.nbval_history", "-p", "tests.nbval_record", "--record-executed", str(folder),
             "-p", "no:cacheprovider", "-q", *(str(p.relative_to(REPO)) for p in notebooks)],
            cwd=REPO, env={**os.environ, PARAMS_ENV: "smoke"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    session.config.stash[STARTED] = _Started(process, folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop a notebook run that no test waited for (``-x``, Ctrl-C) as Ctrl-C would (SIGTERM, which
    tests/nbval_record.py turns into KeyboardInterrupt): nbval then shuts its kernel down and the
    fresh work_dirs is removed. One that does not stop in 30 s is killed, and its work_dirs removed
    here. Then what it wrote is removed."""
    started = config.stash.get(STARTED, None)
    if started is None:
        return
    if started.process.poll() is None:
        started.process.terminate()
        try:
            started.process.wait(timeout=30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C does not wait either
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait()
            fresh = started.folder / "fresh_work_dirs.txt"
            if fresh.exists():
                shutil.rmtree(fresh.read_text(encoding="utf-8").strip(), ignore_errors=True)
    shutil.rmtree(started.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded tiny InternVL2 per test session, built from scratch (seed 0)."""
    from internvl_course.tiny.build import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "internvl2-tiny")


@pytest.fixture(scope="session")
def tiny_llava_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four pictures and a LLaVA-format JSON about them: (data_path, image_folder)."""
    import json

    from internvl_course.data.drawing import Piece, Scene, render

    root = tmp_path_factory.mktemp("llava")
    (root / "images").mkdir()
    items = []
    for i in range(4):
        render(Scene(pieces=(Piece("circle", "red", count=i + 1),)), seed=i).save(root / "images" / f"{i}.jpg")
        items.append({"image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\n盘子里有几个圆形？"},
            {"from": "gpt", "value": f"盘子里有{i + 1}个红色的圆形。"}]})
    (root / "data.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return root / "data.json", root / "images"


@pytest.fixture(scope="session")
def in_course_env() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


def lmdeploy_prompt(model_dir: Path, image, question: str) -> tuple[list[int], torch.Tensor]:
    """The token ids LMDeploy's InternVL path builds for a text+image turn, and its pixel_values."""
    from lmdeploy.model import get_chat_template
    from lmdeploy.tokenizer import Tokenizer
    from lmdeploy.vl.model.internvl import InternVLVisionModel
    from transformers import AutoConfig

    path = str(model_dir)
    vision = InternVLVisionModel(path, hf_config=AutoConfig.from_pretrained(path, trust_remote_code=True),
                                 trust_remote_code=True)
    vision.build_preprocessor()
    # Image first, as InternVL's chat() puts it (pipe.chat((image, text)) does the same).
    messages = vision.preprocess([{"role": "user", "content": [{"type": "image", "data": image},
                                                                {"type": "text", "text": question}]}])
    ids = vision.to_pytorch(messages, get_chat_template(path, trust_remote_code=True),
                            Tokenizer(path, trust_remote_code=True))["input_ids"]
    return ids, messages[-1]["content"][0]["pixel_values"].float()


def chat_prompt(model_dir: Path, pixel_values: torch.Tensor, question: str) -> list[int]:
    """The token ids ``model.chat()`` hands to generate() for ``question`` about ``pixel_values``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    seen: dict[str, list[int]] = {}

    def record(pixel_values=None, input_ids=None, **kwargs):
        seen["ids"] = input_ids[0].tolist()
        return torch.tensor([[tokenizer.eos_token_id]])

    model.generate = record
    model.chat(tokenizer, pixel_values, question, dict(max_new_tokens=1, do_sample=False))
    return seen["ids"]


@pytest.fixture(scope="session")
def tiny_download(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model laid out as a hub download of InternVL2-2B (``tiny.lay_out_as_download``):
    the same weights, and *.py files that raise if anything imports them."""
    from internvl_course.tiny.build import lay_out_as_download

    return lay_out_as_download(tiny_model, tmp_path_factory.mktemp("download") / "OpenGVLab--InternVL2-2B")


@pytest.fixture(scope="session")
def xtuner_run(tmp_path_factory: pytest.TempPathFactory, tiny_download: Path, tiny_llava_data: tuple[Path, Path]):
    """Four real XTuner iterations (cpu-tiny, a high learning rate so the adapter matters) on the
    tiny model as a GPU student trains InternVL2-2B: from a download (``tiny_download``), which
    XTuner opens through the folder the kit prepares for it. Killed and resumed as a student may:
    the command a student runs (``python -m internvl_course.finetune.training``) is killed once it
    has saved and logged iteration 2, where a hook holds it still so that the kill never races the
    run, and ``training.train`` resumes it to the end. Another hook writes XTuner's first training
    sample to ``first_sample.json`` beside the config (tests/xtuner_hooks.py). The prepared folder
    lives in ``work_dirs`` beside the config. (config, work_dir, the resumed TrainRun)."""
    from internvl_course.finetune import presets, training

    data_path, image_folder = tiny_llava_data
    root = tmp_path_factory.mktemp("xtuner")
    work, paused = root / "work", root / "paused"

    def held_after_iteration_2() -> bool:
        return paused.exists() and any("Iter(train) [2/4]" in log.read_text(encoding="utf-8", errors="replace")
                                       for log in (work / "logs").glob("train-*.log"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTERNVL_COURSE_WORK_DIRS", str(root / "work_dirs"))  # not the checkout's
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
        config = presets.write_config(root / "cfg.py", "cpu-tiny", model_path=tiny_download, data_path=data_path,
                                       image_folder=image_folder, max_iters=4, save_steps=2, lr=2e-3)
        with open(config, "a", encoding="utf-8") as text:
            text.write("\nfrom xtuner_hooks import PauseAfterCheckpoint, RecordFirstSample\n"
                       f"custom_hooks = [dict(type=PauseAfterCheckpoint, iteration=2, marker={str(paused)!r}),\n"
                       f"                dict(type=RecordFirstSample, path={str(root / 'first_sample.json')!r})]\n")
        # In its own process group, so that killing it also kills XTuner.
        child = subprocess.Popen([sys.executable, "-m", "internvl_course.finetune.training", str(config), str(work)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 600  # a safety net only: the run holds still until it is killed
            while not held_after_iteration_2() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):  # a command that died early took its group along
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        assert held_after_iteration_2(), f"the training command stopped before iteration 2 was saved: {work / 'logs'}"
        return config, work, training.train(config, work, progress=False)


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, xtuner_run):
    """The ``xtuner_run`` checkpoint merged by convert.py: (Conversion, checkpoint path)."""
    from internvl_course.finetune.convert import convert

    run = xtuner_run[2]
    return convert(tiny_model, run.checkpoint, tmp_path_factory.mktemp("converted") / "tiny-finetuned"), run.checkpoint


@dataclass(frozen=True)
class SmokeRun:
    """The course env's one execution of the committed notebooks (``smoke_run``)."""

    returncode: int  # nbval's: 0 when every marked cell still shows its committed output
    log: str  # the end of nbval's report, for failure messages
    executed: dict[str, Any]  # notebook number -> the notebook as it ran (tests/nbval_record.py)
    work_files: frozenset[str]  # what the run left in its fresh work_dirs, relative to it

    def lesson(self, number: str, figures: int = 0) -> dict[str, Any]:
        """What notebook ``number`` published, once it is checked that every code cell ran without
        an error and that it drew at least ``figures`` figures, each a real PNG."""
        assert number in self.executed, f"notebook {number} did not run:\n{self.log}"
        code = [cell for cell in self.executed[number].cells if cell.cell_type == "code"]
        errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, cell in enumerate(code)
                  for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"notebook {number} failed in " + "; ".join(errors)
        assert all(cell.execution_count for cell in code), f"notebook {number} stopped early:\n{self.log}"
        pngs = [base64.b64decode(o.data["image/png"]) for cell in code for o in cell.outputs
                if "image/png" in o.get("data", {})]
        assert len(pngs) >= figures, f"notebook {number}: expected {figures} real figures, got {len(pngs)}"
        assert all(png.startswith(b"\x89PNG") for png in pngs), f"notebook {number} drew a broken figure"
        from internvl_course.course.publish import read_published

        return read_published(self.executed[number])


@pytest.fixture(scope="session")
def smoke_run(request: pytest.FixtureRequest) -> SmokeRun:
    """The committed notebooks run once per session, as the nbval tier runs them: ``pytest
    --nbval-lax`` with ``INTERNVL_COURSE_PARAMS=smoke`` in a fresh work_dirs (lesson 06 trains and
    07 merges there, never in the student's own), each notebook recorded as it ran
    (tests/nbval_record.py). Every test that asserts on a lesson's published numbers, figures or
    files reads this one run, so each notebook executes once. Only the notebooks that the selected
    tests name with ``runs_notebooks`` run; ``pytest_collection_finish`` starts them."""
    pytest.importorskip("nbval")
    import nbformat

    started = request.config.stash.get(STARTED, None)
    assert started is not None, f"{request.node.nodeid} uses smoke_run: mark it runs_notebooks(...)"
    returncode = started.process.wait(timeout=3600)
    log = (started.folder / "nbval.log").read_text(encoding="utf-8", errors="replace")
    listing = started.folder / "work_dirs.txt"
    work_files = frozenset(listing.read_text(encoding="utf-8").splitlines()) if listing.exists() else frozenset()
    executed = {path.name[:2]: nbformat.read(path, as_version=4) for path in started.folder.glob("*.ipynb")}
    return SmokeRun(returncode, log[-8000:], executed, work_files)
