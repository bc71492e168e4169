"""Nothing lost, no code out of data files (issue 23).

The kit replaces or deletes only what it wrote itself (the ``fileio.MARKER`` it leaves in each
folder it writes lists the files it put there), never writes an output onto, into or around one of
its inputs, and reads checkpoints without running code from them. Each case is reproduced as a
user meets it: through the ``internvl-course`` command or the Python API a notebook calls.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from internvl_course import cli
from internvl_course.data import food_vqa, foodieqa
from internvl_course.data.drawing import Piece, Scene, render
from internvl_course.fileio import MARKER, atomic_directory
from internvl_course.finetune import convert as C

PACKAGE = Path(C.__file__).resolve().parent.parent
ONE_PER_DISH = {"train": 1, "validation": 1, "test": 1}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes: equal snapshots, nothing lost."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def small_checkpoint(base: Path, path: Path) -> Path:
    """An XTuner-shaped LoRA checkpoint of ``base`` (one adapted layer and the projector): what
    convert reads, in a second instead of an XTuner run."""
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        mlp1 = {f"model.{name}": f.get_tensor(name) for name in f.keys() if name.startswith("mlp1.")}
        rows, columns = f.get_slice("language_model.model.layers.0.attention.wqkv.weight").get_shape()
    prefix = "model.language_model.base_model.model.model.layers.0.attention.wqkv"
    generator = torch.Generator().manual_seed(0)
    state = {f"{prefix}.lora_A.default.weight": torch.randn(2, columns, generator=generator) * 0.01,
             f"{prefix}.lora_B.default.weight": torch.randn(rows, 2, generator=generator) * 0.01, **mlp1}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {"cfg": "lora=dict(type='LoraConfig', r=2, lora_alpha=4)"}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tmp_path_factory) -> Path:
    return small_checkpoint(tiny_model, tmp_path_factory.mktemp("checkpoint") / "iter_4.pth")


# ---------------------------------------------------------------------------------------------
# convert: the output is not, does not contain and is not inside an input
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_convert_never_destroys_the_folder_that_holds_its_inputs(tiny_model, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(tiny_model, project / "model")
    small_checkpoint(tiny_model, project / "ck" / "iter_1260.pth")
    (project / "notes.txt").write_text("what I tried last week")
    before = snapshot(project)
    code = cli.main(["convert", str(project / "model"), str(project / "ck" / "iter_1260.pth"), str(project),
                     "--overwrite"])
    assert code == 1
    assert snapshot(project) == before
    err = capsys.readouterr().err
    assert f"out_dir {project} contains the base model {project / 'model'}" in err and "Choose" in err


@pytest.mark.slow
def test_convert_writes_beside_the_checkpoint_and_names_the_input_it_would_overlap(tiny_model, checkpoint, tmp_path):
    work = tmp_path / "work"
    ck = work / "iter_4.pth"
    shutil.copytree(checkpoint.parent, work)
    result = C.convert(tiny_model, ck, work / "hf")  # beside XTuner's iter_N.pth: a folder of its own
    assert (result.out_dir / "config.json").is_file()
    before = snapshot(tiny_model)
    for out, words in [(tiny_model, "is the base model"), (tiny_model / "merged", "lies inside the base model"),
                       (ck, "is the checkpoint"), (work, "contains the checkpoint"),
                       (tiny_model.parent, "contains the base model")]:
        with pytest.raises(ValueError, match=f"out_dir {out} {words}"):
            C.convert(tiny_model, ck, out, overwrite=True)
    assert snapshot(tiny_model) == before and ck.read_bytes() == checkpoint.read_bytes()


@pytest.mark.slow
def test_convert_replaces_only_its_own_output(tiny_model, checkpoint, tmp_path, capsys):
    out = C.convert(tiny_model, checkpoint, tmp_path / "merged").out_dir
    written = json.loads((out / MARKER).read_text())["files"]
    assert "model.safetensors" in written and "config.json" in written
    C.convert(tiny_model, checkpoint, out, overwrite=True)  # the kit's own folder: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files the kit did not write there \(notes\.txt\)"):
        C.convert(tiny_model, checkpoint, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    assert cli.main(["convert", str(tiny_model), str(checkpoint), str(mine), "--overwrite"]) == 1
    assert snapshot(mine) == {"config.json": b"{}"}
    err = capsys.readouterr().err
    assert f"{mine} already exists and the kit did not write it (it holds no {MARKER})" in err
    assert "remove it yourself" in err


@pytest.mark.slow
def test_lesson_07s_output_converted_by_an_older_kit_is_still_replaced_there_only(tiny_model, checkpoint, tmp_path,
                                                                                   monkeypatch):
    """work_dirs/models/ is the kit's own place; an older kit's conversions there carry no marker."""
    monkeypatch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path / "work_dirs"))
    kit_place, elsewhere = tmp_path / "work_dirs" / "models" / "internvl2-finetuned-cpu-tiny", tmp_path / "mine"
    for out in (kit_place, elsewhere):
        C.convert(tiny_model, checkpoint, out)
        (out / MARKER).unlink()
    C.convert(tiny_model, checkpoint, kit_place, overwrite=True)
    assert (kit_place / MARKER).is_file()
    before = snapshot(elsewhere)
    with pytest.raises(FileExistsError, match="the kit did not write it"):
        C.convert(tiny_model, checkpoint, elsewhere, overwrite=True)
    assert snapshot(elsewhere) == before


# ---------------------------------------------------------------------------------------------
# Checkpoints are data: read without running code from them
# ---------------------------------------------------------------------------------------------


class _RunsCode:
    """Pickles as a call of os.system: what a booby-trapped .pth file holds."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.proof))}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tiny_model, tmp_path, capsys):
    proof = tmp_path / "it-ran"
    evil = tmp_path / "work" / "iter_4.pth"
    evil.parent.mkdir()
    torch.save({"state_dict": {}, "meta": {"cfg": _RunsCode(proof)}}, evil)
    before = evil.read_bytes()
    assert cli.main(["convert", str(tiny_model), str(evil), str(tmp_path / "out")]) == 1
    assert not proof.exists()
    assert not (tmp_path / "out").exists() and evil.read_bytes() == before
    err = capsys.readouterr().err
    assert f"{evil} wants the global {os.system.__module__}.system" in err and "never runs code" in err


def test_files_that_are_not_checkpoints_are_named(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save(torch.zeros(2), tmp_path / "tensor.pth")
    torch.save({"state_dict": {"w": torch.zeros(64)}}, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:300])  # a copy still in progress
    for name, words in [("text.pth", "is not a PyTorch checkpoint"), ("empty.pth", "is not a PyTorch checkpoint"),
                        ("cut.pth", "is not a PyTorch checkpoint torch.load can read"),
                        ("tensor.pth", "holds a Tensor, not the dict")]:
        with pytest.raises(ValueError, match=f"{tmp_path / name} {words}"):
            C.load_adapter(tmp_path / name)


@pytest.mark.slow
def test_a_real_xtuner_checkpoint_needs_nothing_beyond_its_training_log(xtuner_run):
    """XTuner 0.2.0's iter_N.pth names numpy and mmengine objects only in its training log;
    convert reads them as inert placeholders and the weights and config as they are."""
    checkpoint = xtuner_run[2].checkpoint
    wanted = set(torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint))
    assert "mmengine.logging.history_buffer.HistoryBuffer" in wanted
    assert wanted <= set(C.XTUNER_LOG_GLOBALS)
    saved = C.read_checkpoint(checkpoint)
    assert "r=32" in saved["meta"]["cfg"]
    assert all(isinstance(t, torch.Tensor) for t in saved["state_dict"].values())
    assert C.load_adapter(checkpoint).scale == 2.0


# ---------------------------------------------------------------------------------------------
# data build and foodieqa
# ---------------------------------------------------------------------------------------------


def test_data_build_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mydata"
    (mine / "photos").mkdir(parents=True)
    (mine / "train.json").write_text("[]")
    (mine / "notes.txt").write_text("which photos are mine")
    (mine / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    before = snapshot(mine)
    assert cli.main(["data", "build", "--out", str(mine)]) == 1
    assert snapshot(mine) == before
    assert f"{mine} already exists and the kit did not write it" in capsys.readouterr().err


def test_data_build_replaces_its_own_build_but_not_what_was_added_to_it(tmp_path):
    out = food_vqa.build(tmp_path / "food", per_dish=ONE_PER_DISH, size=64, progress=False)
    assert "train.json" in json.loads((out / MARKER).read_text())["files"]
    food_vqa.build(out, per_dish=ONE_PER_DISH, size=64, progress=False)  # its own: rebuilt
    (out / "images" / "train" / "my_photo.jpg").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="images/train/my_photo.jpg"):
        food_vqa.build(out, per_dish=ONE_PER_DISH, size=64, progress=False)
    assert (out / "images" / "train" / "my_photo.jpg").read_bytes() == b"mine"


def test_data_food_built_by_an_older_kit_is_rebuilt_but_no_such_folder_elsewhere(tmp_path, monkeypatch):
    """data/food is the kit's own path (shipped in the repository); an older kit left no marker there."""
    monkeypatch.setenv("INTERNVL_COURSE_ROOT", str(tmp_path / "repo"))
    for folder in (tmp_path / "repo" / "data" / "food", tmp_path / "elsewhere"):
        food_vqa.build(folder, per_dish=ONE_PER_DISH, size=64, progress=False)
        (folder / MARKER).unlink()
    assert food_vqa.build(per_dish=ONE_PER_DISH, size=64, progress=False) == tmp_path / "repo" / "data" / "food"
    assert (tmp_path / "repo" / "data" / "food" / MARKER).is_file()
    with pytest.raises(FileExistsError, match="the kit did not write it"):
        food_vqa.build(tmp_path / "elsewhere", per_dish=ONE_PER_DISH, size=64, progress=False)
    (tmp_path / "repo" / "data" / "food" / MARKER).unlink()
    (tmp_path / "repo" / "data" / "food" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="the kit did not write it"):
        food_vqa.build(per_dish=ONE_PER_DISH, size=64, progress=False)
    assert (tmp_path / "repo" / "data" / "food" / "notes.txt").read_text() == "mine"


@pytest.fixture()
def sivqa(tmp_path: Path) -> Path:
    """A one-item stand-in for a local FoodieQA copy."""
    (tmp_path / "FoodieQA" / "images").mkdir(parents=True)
    render(Scene(pieces=(Piece("circle", "red", 1),)), seed=0).save(tmp_path / "FoodieQA" / "images" / "0.jpg")
    item = {"question": "图中的菜属于哪个菜系？", "choices": ["鲁菜", "川菜", "苏菜", "浙菜"], "answer": "1",
            "question_type": "cuisine_type", "food_name": "宫保鸡丁", "question_id": 0,
            "food_meta": {"main_ingredient": ["鸡肉"], "id": 0, "food_name": "宫保鸡丁", "food_type": "川菜",
                          "food_location": "", "food_file": "images/0.jpg"},
            "question_en": "Which cuisine?", "choices_en": ["a", "b", "c", "d"]}
    path = tmp_path / "FoodieQA" / "sivqa_tidy.json"
    path.write_text(json.dumps([item], ensure_ascii=False), encoding="utf-8")
    return path


def test_foodieqa_never_writes_over_its_input(sivqa, capsys):
    before = snapshot(sivqa.parent)
    for out in (sivqa, sivqa.parent / "images" / "0.jpg"):
        assert cli.main(["foodieqa", str(sivqa), "--out", str(out), "--overwrite"]) == 1
        assert f"--out {out} is the" in capsys.readouterr().err
    assert snapshot(sivqa.parent) == before


def test_foodieqa_overwrites_an_existing_file_only_when_asked(sivqa, tmp_path, capsys):
    out = tmp_path / "llava.json"
    out.write_text("my own file")
    assert cli.main(["foodieqa", str(sivqa), "--out", str(out)]) == 1
    assert out.read_text() == "my own file"
    assert f"{out} already exists" in capsys.readouterr().err
    assert cli.main(["foodieqa", str(sivqa), "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))[0]["image"] == "images/0.jpg"
    (tmp_path / "folder").mkdir()
    assert cli.main(["foodieqa", str(sivqa), "--out", str(tmp_path / "folder"), "--overwrite"]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_foodieqa_names_a_llava_file_given_in_place_of_sivqa(sivqa, tmp_path, capsys):
    llava = tmp_path / "llava.json"
    assert cli.main(["foodieqa", str(sivqa), "--out", str(llava)]) == 0
    assert cli.main(["foodieqa", str(llava), "--out", str(tmp_path / "again.json")]) == 1
    assert f"{llava} holds LLaVA items" in capsys.readouterr().err
    assert not (tmp_path / "again.json").exists()


def test_foodieqa_refuses_before_it_reads_the_data(tmp_path):
    out = tmp_path / "taken.json"
    out.write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        foodieqa.export_sivqa(tmp_path / "missing.json", out, echo=lambda _: None)


# ---------------------------------------------------------------------------------------------
# atomic_directory: the kit's marker, and only the kit's folders replaced
# ---------------------------------------------------------------------------------------------


def test_every_folder_the_kit_writes_lists_its_files(tmp_path):
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "config.json").write_text("{}")
        (staging / "images" / "train").mkdir(parents=True)
        (staging / "images" / "train" / "a.jpg").write_bytes(b"x")
        os.symlink(tmp_path, staging / "link")
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker["files"] == ["config.json", "images/train/a.jpg", "link"]


def test_overwrite_replaces_only_a_folder_the_kit_wrote(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=f"{user} already exists and the kit did not write it .*"
                                              "Choose another folder, or remove it yourself"):
        with atomic_directory(user, overwrite=True) as staging:
            (staging / "new").write_text("x")
    assert snapshot(user) == {"photo.jpg": b"mine"}
    with atomic_directory(tmp_path / "kit") as staging:
        (staging / "a").write_text("old")
    with atomic_directory(tmp_path / "kit", overwrite=True) as staging:
        (staging / "a").write_text("new")
    assert (tmp_path / "kit" / "a").read_text() == "new"
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty", overwrite=True) as staging:  # nothing in it to lose
        (staging / "a").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "kit", "user"]  # no staging or old copy left


def test_files_added_while_the_kit_writes_are_not_lost(tmp_path):
    with atomic_directory(tmp_path / "kit") as staging:
        (staging / "a").write_text("old")
    with pytest.raises(FileExistsError, match=r"did not write there \(notes.txt\)"):
        with atomic_directory(tmp_path / "kit", overwrite=True) as staging:
            (staging / "a").write_text("new")
            (tmp_path / "kit" / "notes.txt").write_text("written meanwhile")
    assert snapshot(tmp_path / "kit") == {"a": b"old", MARKER: (tmp_path / "kit" / MARKER).read_bytes(),
                                          "notes.txt": b"written meanwhile"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit"]


def test_a_link_or_a_file_where_the_folder_goes_is_left_alone(tmp_path):
    with atomic_directory(tmp_path / "kit") as staging:
        (staging / "a").write_text("kit")
    os.symlink(tmp_path / "kit", tmp_path / "link")
    (tmp_path / "file").write_text("mine")
    for out, what in ((tmp_path / "link", "a link"), (tmp_path / "file", "a file")):
        with pytest.raises(FileExistsError, match=f"{out} already exists and is {what}"):
            with atomic_directory(out, overwrite=True):
                pass
    assert (tmp_path / "kit" / "a").read_text() == "kit" and (tmp_path / "file").read_text() == "mine"


@pytest.mark.slow
def test_build_force_replaces_an_older_kits_tiny_model_but_nothing_added_to_it(tiny_model, tmp_path, monkeypatch,
                                                                                 capsys):
    """work_dirs/models/internvl2-tiny is the kit's own path; an older kit left no marker in it."""
    monkeypatch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path / "work_dirs"))
    target = tmp_path / "work_dirs" / "models" / "internvl2-tiny"
    shutil.copytree(tiny_model, target)
    (target / MARKER).unlink()
    (target / "notes.txt").write_text("mine")
    assert cli.main(["build", "--force"]) == 1
    assert (target / "notes.txt").read_text() == "mine" and not (target / MARKER).exists()
    assert "notes.txt" in capsys.readouterr().err
    (target / "notes.txt").unlink()
    assert cli.main(["build", "--force"]) == 0
    assert snapshot(target) == snapshot(tiny_model)


def test_a_prepared_folder_of_an_older_kit_is_still_rebuilt(tiny_model, tmp_path, monkeypatch):
    from internvl_course.model.prepare import MANIFEST, prepared_folder
    from internvl_course.tiny.build import lay_out_as_download

    monkeypatch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path / "work_dirs"))
    download = lay_out_as_download(tiny_model, tmp_path / "download")
    first = prepared_folder(download, "LMDeploy", quiet=True)
    (first / MARKER).unlink()  # as an older kit left it: its manifest only
    (download / "config.json").write_text((download / "config.json").read_text() + "\n")  # a new digest
    second = prepared_folder(download, "LMDeploy", quiet=True)
    assert second != first and not first.exists() and (second / MANIFEST).is_file() and (second / MARKER).is_file()


# ---------------------------------------------------------------------------------------------
# No code out of data files, anywhere in the package
# ---------------------------------------------------------------------------------------------

#: Where the package may pass trust_remote_code=True, and why that is safe there.
TRUSTED_REMOTE_CODE = {
    ("model/load.py", "load_model"): "only inside `if trust_remote_code:`, the caller's own opt-in",
    ("serve/chat.py", "_load_lmdeploy"): "LMDeploy gets a prepared folder running the kit's code, or the opt-in",
}


def _calls(tree: ast.AST):
    """(enclosing function name, call) for every call in a module."""
    def walk(node: ast.AST, function: str):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                yield name, child
            yield from walk(child, name)
    yield from walk(tree, "<module>")


def _dotted(node: ast.expr) -> str:
    return f"{_dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "?")


def test_the_package_never_runs_code_out_of_a_data_file():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for function, call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            name = _dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            constant = {k: v.value for k, v in keywords.items() if isinstance(v, ast.Constant)}
            line = f"{where}:{call.lineno} {name}"
            if name.endswith("torch.load") and constant.get("weights_only") is not True:
                found.append(f"{line} without weights_only=True")
            if constant.get("shell") is True:
                found.append(f"{line} with shell=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "pickle.load", "pickle.loads",
                        "eval", "exec", "marshal.loads"):
                found.append(line)
            if constant.get("allow_pickle") is True:
                found.append(f"{line} with allow_pickle=True")
            if constant.get("trust_remote_code") is True and (where, function) not in TRUSTED_REMOTE_CODE:
                found.append(f"{line} with trust_remote_code=True outside {sorted(TRUSTED_REMOTE_CODE)}")
    assert found == []


def test_base_training_refuses_to_replace_files_it_did_not_ship_before_training(tmp_path, capsys):
    """`internvl-course base --out notes/weights.safetensors` would have replaced the file and the
    tokenizer.model beside it after minutes of training; now it stops at once."""
    from internvl_course.tiny import pretrain

    out = tmp_path / "weights.safetensors"
    out.write_bytes(b"my own weights")
    (tmp_path / "tokenizer.model").write_bytes(b"my own tokenizer")
    assert pretrain.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err
    assert out.read_bytes() == b"my own weights"
    assert (tmp_path / "tokenizer.model").read_bytes() == b"my own tokenizer"
    pretrain.check_base_output(pretrain.BASE_WEIGHTS)  # the shipped place is the kit's own: no error


def test_write_config_replaces_only_a_config_the_kit_wrote(tmp_path, tiny_model, tiny_llava_data):
    from internvl_course.finetune import presets

    data_path, image_folder = tiny_llava_data
    settings = dict(model_path=tiny_model, data_path=data_path, image_folder=image_folder)
    mine = tmp_path / "my_config.py"
    mine.write_text("# my own XTuner config\nlr = 1e-4\n")
    with pytest.raises(FileExistsError, match="was not written by the kit"):
        presets.write_config(mine, "cpu-tiny", **settings)
    assert mine.read_text() == "# my own XTuner config\nlr = 1e-4\n"
    ours = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", **settings)
    presets.write_config(ours, "cpu-tiny", **settings, lr=1e-4)  # its own file: replaced
    assert presets.read_settings(ours)["lr"] == 1e-4
