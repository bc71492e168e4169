"""The road a GPU student walks, on a CPU: every entry point pointed at a folder laid out as a hub download.

Each tiny stand-in (InternVL2-2B, InternVL2-1B with its Qwen2 LLM, InternVL2.5-2B) is built once
per session and copied with ``tiny.lay_out_as_download``, so its config, tokenizer files and
weights are what a download holds, and its ``*.py`` files are tripwires: importing one records
its name and raises. The kit promises to run its own code on such a folder (``model.load``) or
to hand tools a prepared folder holding its code (``model.prepare``), never the folder's.

- the gradio demo started on a download answers as the kit-built folder does;
- evaluation (lessons 05 and 07) scores a download exactly as the kit-built folder;
- lessons 02 and 04 run headless with ``model_path`` set to a download;
- LMDeploy's InternVL prompt for the prepared folder is the prompt the kit's ``chat()`` builds;
- XTuner fine-tunes a download (through its prepared folder; the session's shared run,
  ``xtuner_run``, trains one), convert merges the checkpoint into the download's weights, and the
  result chats; a Qwen2 download is refused before training.

After every test the tripwire log must be empty: a tripwire that fired and whose error was
swallowed somewhere still fails the test.

Nothing here imports gradio, papermill or LMDeploy at module level: the ``train_env`` test runs
in the train env too (``make test``), which has none of them.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

import pytest

FAMILIES = ("internvl2-2b", "internvl2-1b", "internvl2_5-2b")
#: Replies this long keep the CPU time of the file to seconds.
SHORT = 16
QUESTION = "盘子里有什么？What is on the plate?"
#: What the tripwire files of the download layouts do besides raising: leave their name in a log.
RECORDING_TRIPWIRE = ("with open({log!r}, 'a', encoding='utf-8') as _log:\n"
                      "    _log.write({name!r} + ' imported from ' + __file__ + '\\n')\n")


# ---------------------------------------------------------------------------------------------
# Fixtures: the kit-built folders and their download layouts, once per session
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tripwire_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file every tripwire of this file's download layouts writes to before it raises."""
    log = tmp_path_factory.mktemp("tripwires") / "fired.log"
    log.write_text("", encoding="utf-8")
    return log


class _BuiltOnFirstUse(dict):
    """family -> folder, each made the first time a test asks for it (the train env's one test
    needs only one of the three)."""

    def __init__(self, make: Callable[[str], Path]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, family: str) -> Path:
        if family not in FAMILIES:
            raise KeyError(family)
        self[family] = folder = self.make(family)
        return folder


@pytest.fixture(scope="session")
def kit_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's tiny stand-in as the kit writes it (its code files are the kit's)."""
    from internvl_course.tiny.build import build_tiny_model

    root = tmp_path_factory.mktemp("kit-models")
    return _BuiltOnFirstUse(lambda family: build_tiny_model(root / family, family=family))


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory, kit_folders: dict[str, Path],
              tripwire_log: Path) -> dict[str, Path]:
    """Each kit folder laid out as a hub download whose *.py files record and raise when imported."""
    from internvl_course.tiny.build import TRIPWIRE, lay_out_as_download

    root = tmp_path_factory.mktemp("downloads")

    def lay_out(family: str) -> Path:
        kit = kit_folders[family]
        code = root / f"{family}-tripwires"
        code.mkdir()
        for file in kit.glob("*.py"):
            (code / file.name).write_text(RECORDING_TRIPWIRE.format(log=str(tripwire_log), name=file.name)
                                          + TRIPWIRE.format(name=file.name), encoding="utf-8")
        # A download is named like the hub repository, not like the kit's folder.
        return lay_out_as_download(kit, root / f"OpenGVLab--{family}", code_dir=code)

    return _BuiltOnFirstUse(lay_out)


@pytest.fixture(scope="module", autouse=True)
def own_work_dirs(tmp_path_factory: pytest.TempPathFactory):
    """Prepared folders (and anything else generated) go to a temporary work_dirs, not the checkout's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path_factory.mktemp("work_dirs")))
        yield


@pytest.fixture(autouse=True)
def no_tripwire_fired(tripwire_log: Path):
    """Fails any test during which a download's own Python file was imported, caught or not."""
    before = tripwire_log.read_text(encoding="utf-8")
    yield
    fired = tripwire_log.read_text(encoding="utf-8")[len(before):]
    assert not fired, f"a downloaded folder's own code was imported:\n{fired}"


def test_the_download_layouts_are_downloads_with_tripwires(kit_folders, downloads):
    from internvl_course.model.folder import inspect_folder

    for family in FAMILIES:
        kit, download = inspect_folder(kit_folders[family]), inspect_folder(downloads[family])
        assert kit.kit_written and not download.kit_written, family
        assert download.code_files == kit.code_files and download.family == kit.family
        assert all("raise RuntimeError" in (download.path / name).read_text(encoding="utf-8")
                   for name in download.code_files)
    assert "Qwen2" in inspect_folder(downloads["internvl2-1b"]).family
    assert inspect_folder(downloads["internvl2_5-2b"]).template == "internvl2_5"


def test_a_tripwire_records_itself_and_raises(downloads, tripwire_log):
    """The check after every test is live: importing a download's code leaves a line in the log."""
    import runpy

    before = tripwire_log.read_text(encoding="utf-8")
    with pytest.raises(RuntimeError, match="kit promised never to run"):
        runpy.run_path(str(downloads["internvl2-1b"] / "modeling_internvl_chat.py"))
    fired = tripwire_log.read_text(encoding="utf-8")
    tripwire_log.write_text(before, encoding="utf-8")  # this test fired it on purpose
    assert fired[len(before):].startswith("modeling_internvl_chat.py imported from ")


# ---------------------------------------------------------------------------------------------
# 1. The demo
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dish(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from internvl_course.data.drawing import Piece, Scene, render

    path = tmp_path_factory.mktemp("pictures") / "dish.jpg"
    render(Scene(pieces=(Piece("circle", "red", 3), Piece("leaf", "green", 2))), seed=3).save(path)
    return path


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's pandas noise, as in test_demo.py
@pytest.mark.parametrize("family", ["internvl2-1b", "internvl2_5-2b"])
def test_the_demo_on_a_download_answers_as_the_kit_folder_does(family, kit_folders, downloads, dish):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    import torch

    from internvl_course.serve.chat import GenerationConfig, pipeline
    from internvl_course.serve.demo import build_demo

    demo = build_demo(model_path=downloads[family])  # the road of `make demo MODEL=...`
    assert downloads[family].name in str(demo.config)  # the header names the model that answers
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, chat, status = client.predict(gradio_client.handle_file(str(dish)), api_name="/set_picture")
        assert chat == [] and "dish.jpg" in status
        chat, _, status = client.predict(QUESTION, 0.0, 1.0, SHORT, api_name="/chat")
    finally:
        demo.close()
    reply = "".join(part.get("text", "") for part in chat[-1]["content"])
    assert [m["role"] for m in chat] == ["user", "assistant"] and reply.strip()
    assert "Turn 1" in status and "greedy" in status
    if torch.cuda.is_available():
        return  # `auto` chose LMDeploy there: another engine, another precision
    reference = pipeline(kit_folders[family], backend="transformers", quiet=True)
    expected = reference.chat((QUESTION, str(dish)), gen_config=GenerationConfig(
        max_new_tokens=SHORT, temperature=0.0, top_p=1.0)).response.text
    assert reply == expected


# ---------------------------------------------------------------------------------------------
# 2. Evaluation (lessons 05 and 07)
# ---------------------------------------------------------------------------------------------


# Lesson 05 asks in FoodieQA's style, lesson 07 in the kit's training style: one each.
@pytest.mark.slow
@pytest.mark.parametrize("family, style", [("internvl2_5-2b", "foodieqa"), ("internvl2-1b", "kit")])
def test_evaluation_scores_a_download_exactly_as_the_kit_folder(family, style, kit_folders, downloads):
    from internvl_course.data import food_vqa
    from internvl_course.finetune import evaluate
    from internvl_course.serve.chat import pipeline
    from internvl_course.paths import food_data_dir

    items = food_vqa.load_split("test")  # as lessons 05 and 07 do
    results = {}
    for name, folder in (("download", downloads[family]), ("kit", kit_folders[family])):
        pipe = pipeline(folder, backend="transformers", quiet=True)
        results[name] = evaluate.evaluate(pipe, items, food_data_dir(), style=style, max_images=1,
                                          max_new_tokens=8, progress=False)
    got, expected = results["download"], results["kit"]
    assert len(got.answers) == 4 and len(got.open_answers) == 1  # four question types, one open question
    assert [(a.prompt, a.reply, a.predicted) for a in got.answers] == \
           [(a.prompt, a.reply, a.predicted) for a in expected.answers]
    assert [(a.image, a.reply, a.named) for a in got.open_answers] == \
           [(a.image, a.reply, a.named) for a in expected.open_answers]
    assert json.dumps(got.summary(), sort_keys=True) == json.dumps(expected.summary(), sort_keys=True)
    assert any(a.reply.strip() for a in got.answers + got.open_answers)


# ---------------------------------------------------------------------------------------------
# 3. Lessons 02 and 04, headless, on a download
# ---------------------------------------------------------------------------------------------


LESSON_FAMILIES = ("internvl2-1b", "internvl2_5-2b")


@pytest.fixture(scope="module")
def lesson_runs(tmp_path_factory: pytest.TempPathFactory, downloads) -> Path:
    """Lessons 02 and 04 with their smoke parameters and ``model_path`` set to each family's
    download, each (notebook, download) pair once: one ``internvl-course run`` a family, both at
    once (a headless notebook keeps about one core busy). The folder holds one run a family."""
    import subprocess

    from conftest import REPO
    from internvl_course.course import plan

    root = tmp_path_factory.mktemp("lessons-on-downloads")
    runs = []
    for family in LESSON_FAMILIES:
        params = root / f"{family}.json"
        params.write_text(json.dumps({number: {**plan.SMOKE_PARAMS[number], "model_path": str(downloads[family])}
                                      for number in ("02", "04")}), encoding="utf-8")
        with open(root / f"{family}.log", "w", encoding="utf-8") as log:
            runs.append(subprocess.Popen([str(REPO / ".venv" / "bin" / "internvl-course"), "run", "--only", "02",
                                          "--only", "04", "--params", str(params), "--out", str(root / family)],
                                         stdout=log, stderr=subprocess.STDOUT))
    for run in runs:
        run.wait(timeout=900)
    return root


@pytest.fixture
def lesson_on(lesson_runs: Path):
    """What lesson ``number`` published with ``family``'s download, and the text of the executed notebook."""
    from internvl_course.course import plan

    def result(number: str, family: str) -> tuple[dict, str]:
        notebook = next(nb for nb in plan.COURSE if nb.number == number)
        out = lesson_runs / family
        log = (lesson_runs / f"{family}.log").read_text(encoding="utf-8")
        assert (out / "summary.json").is_file(), log
        results = json.loads((out / "summary.json").read_text(encoding="utf-8"))["results"]
        [entry] = [e for e in results if e["notebook"] == notebook.filename]
        text = (out / notebook.filename).read_text(encoding="utf-8") if (out / notebook.filename).exists() else ""
        assert "the kit promised never to run" not in text, "a tripwire fired inside the notebook"
        assert entry["status"] == "ok", entry["error"]
        return entry["published"], text

    return result


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("family", LESSON_FAMILIES)
def test_lesson_02_traces_a_download(family, lesson_on):
    from internvl_course.course import plan
    from internvl_course.model import preprocess

    published, _ = lesson_on("02", family)
    tiles = preprocess.num_tiles(1000, 1000, max_num=plan.SMOKE_PARAMS["02"]["max_num"])  # "square"
    assert published["num_tiles"] == tiles
    assert published["image_tokens"] == 256 * tiles < published["prompt_tokens"]
    assert published["trace_max_diff"] < 1e-4
    assert published["stage1_only_mlp1_gets_gradients"] is True


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("family", LESSON_FAMILIES)
def test_lesson_04_chats_with_a_download(family, lesson_on, downloads):
    import torch

    from internvl_course.course import plan

    published, text = lesson_on("04", family)
    if not torch.cuda.is_available():
        assert published["backend"] == "transformers"
    assert f"model: {downloads[family]}" in text  # it chatted with the download, not the embedded model
    assert 1 <= published["first_reply_tokens"] <= plan.SMOKE_PARAMS["04"]["max_new_tokens"]
    assert published["turns"] == 3 and published["distinct_greedy_replies"] == 1
    assert published["same_seed_same_reply"] is True
    assert published["demo_launched"] is False


# ---------------------------------------------------------------------------------------------
# 4. LMDeploy on a CPU: its prompt for the prepared folder is the kit's chat() prompt
# ---------------------------------------------------------------------------------------------


def kit_chat_prompt(model_dir: Path, pixel_values, question: str) -> list[int]:
    """The token ids ``model.chat()`` hands to generate(), the model loaded as the kit's chat loads it
    (``load_model``: the kit's code, whatever folder)."""
    import torch

    from internvl_course.model.load import load_model

    model, tokenizer = load_model(model_dir)
    seen: dict[str, list[int]] = {}

    def record(pixel_values=None, input_ids=None, **kwargs):
        seen["ids"] = input_ids[0].tolist()
        return torch.tensor([[tokenizer.eos_token_id]])

    model.generate = record
    model.chat(tokenizer, pixel_values, question, dict(max_new_tokens=1, do_sample=False))
    return seen["ids"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("question", ["盘子里有几个圆形？", "What colour is the plate?"])
def test_lmdeploy_prompt_for_a_prepared_download_equals_the_kits_chat_prompt(family, question, downloads):
    pytest.importorskip("lmdeploy")
    from conftest import chat_prompt, lmdeploy_prompt
    from internvl_course.model.folder import inspect_folder
    from internvl_course.model.load import load_tokenizer
    from internvl_course.model.prepare import prepared_folder
    from internvl_course.data.drawing import Piece, Scene, render

    prepared = prepared_folder(downloads[family], "LMDeploy", quiet=True)
    assert prepared != downloads[family] and inspect_folder(prepared).kit_written
    image = render(Scene(pieces=(Piece("circle", "red", 2),)), seed=1)
    lmdeploy_ids, pixel_values = lmdeploy_prompt(prepared, image, question)
    # The kit's chat() on the download itself (what the transformers backend runs) ...
    assert lmdeploy_ids == kit_chat_prompt(downloads[family], pixel_values, question)
    # ... and the prepared folder's code as transformers' AutoModel runs it (what LMDeploy imports).
    assert lmdeploy_ids == chat_prompt(prepared, pixel_values, question)
    tokenizer = load_tokenizer(downloads[family])
    assert lmdeploy_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 256 * pixel_values.shape[0]
    assert question in tokenizer.decode(lmdeploy_ids)


# ---------------------------------------------------------------------------------------------
# 5. XTuner in the train env: fine-tune a download, convert, chat; a Qwen2 download is refused
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_xtuner_fine_tunes_a_download_and_convert_merges_it(tmp_path, xtuner_run, tiny_download, tiny_llava_data):
    """The session's shared XTuner run (``xtuner_run``, tests/conftest.py) trained ``tiny_download``,
    the tiny InternVL2-2B laid out as a download whose *.py files raise if imported."""
    from internvl_course.finetune import presets, training
    from internvl_course.serve.chat import GenerationConfig, pipeline
    from internvl_course.finetune.convert import convert
    from internvl_course.model.folder import inspect_folder

    _, image_folder = tiny_llava_data
    download = tiny_download
    config, _, run = xtuner_run
    # XTuner opened the prepared folder (the kit's code beside the download's linked weights).
    trained_from = Path(presets.read_settings(config)["model_path"])
    assert trained_from.parent.name == "prepared" and inspect_folder(trained_from).kit_written
    assert not inspect_folder(download).kit_written
    assert (trained_from / "model.safetensors").resolve() == (download / "model.safetensors").resolve()

    assert run.returncode == 0
    assert [record["iter"] for record in training.parse_logs(run.work_dir)] == [1, 2, 3, 4]
    assert run.checkpoint is not None and run.checkpoint.name == "iter_4.pth" and run.checkpoint.is_file()

    conversion = convert(download, run.checkpoint, tmp_path / "internvl2-2b-finetuned")
    assert conversion.lora_modules > 0 and conversion.top1_agreement == 1.0
    assert inspect_folder(conversion.out_dir).kit_written
    pipe = pipeline(conversion.out_dir, backend="transformers", quiet=True)
    reply = pipe.chat(("盘子里有几个圆形？", str(image_folder / "2.jpg")),
                      gen_config=GenerationConfig(max_new_tokens=SHORT)).response.text
    assert reply.strip()


@pytest.mark.train_env
def test_xtuner_refuses_a_qwen2_download_before_anything_trains(downloads, tiny_llava_data, tmp_path, monkeypatch):
    from internvl_course.finetune import presets
    from internvl_course.model.folder import ModelFolderError

    monkeypatch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path / "work_dirs"))
    data_path, image_folder = tiny_llava_data
    settings = dict(model_path=downloads["internvl2-1b"], data_path=data_path, image_folder=image_folder,
                    max_iters=4, save_steps=2, lr=2e-3)
    with pytest.raises(ModelFolderError) as refused:
        presets.settings_for("cpu-tiny", **settings)
    message = str(refused.value)
    assert "XTuner" in message and "Qwen2ForCausalLM" in message and str(downloads["internvl2-1b"]) in message
    assert "InternVL2-2B" in message  # the way out
    with pytest.raises(ModelFolderError):
        presets.write_config(tmp_path / "cfg.py", "cpu-tiny", **settings)
    # Refused before anything happened: no config written, no folder prepared for XTuner.
    assert not (tmp_path / "cfg.py").exists() and not (tmp_path / "work_dirs" / "prepared").exists()
