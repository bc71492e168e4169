"""Real checkpoints through the kit's own code: recognising a folder, refusing bad ones, loading,
and the prepared folders LMDeploy and XTuner read (internvl_course.model)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from internvl_course.serve.chat import GenerationConfig, pipeline
from internvl_course.model.folder import ModelFolderError, inspect_folder
from internvl_course.model.load import load_model, load_tokenizer
from internvl_course.model.prepare import MANIFEST, prepared_folder
from internvl_course.tiny.build import TINY_FAMILIES, build_tiny_model, lay_out_as_download

REPO = Path(__file__).resolve().parent.parent
PICTURE = REPO / "data" / "food" / "images" / "test" / "kung_pao_chicken_00.jpg"
GREEDY = GenerationConfig(max_new_tokens=12)


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each family's stand-in as the kit writes it, and the same laid out as a hub download."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in TINY_FAMILIES:
        kit = build_tiny_model(root / family, family=family)
        out[family] = (kit, lay_out_as_download(kit, root / f"{family}-download"))
    return out


@pytest.fixture
def work_dirs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INTERNVL_COURSE_WORK_DIRS", str(tmp_path / "work_dirs"))
    return tmp_path / "work_dirs"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- what a folder is ---------------------------------------------------------------------------

@pytest.mark.parametrize("family, llm, template", [
    ("internvl2-2b", "InternLM2ForCausalLM", "internlm2-chat"),
    ("internvl2-1b", "Qwen2ForCausalLM", "Hermes-2"),
    ("internvl2_5-2b", "InternLM2ForCausalLM", "internvl2_5"),
])
def test_each_family_is_recognised_with_its_template(families, family, llm, template):
    kit, download = families[family]
    for path, kit_written in ((kit, True), (download, False)):
        folder = inspect_folder(path)
        assert (folder.llm_architecture, folder.template, folder.kit_written) == (llm, template, kit_written)
    assert inspect_folder(download).family.startswith("InternVL2.5" if "2_5" in family else "InternVL2 ")


# --- the same answers, none of the folder's code ------------------------------------------------

@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_a_download_answers_exactly_as_the_kits_own_folder(families, family):
    replies = []
    for path in families[family]:  # the download's *.py files raise if anything imports them
        pipe = pipeline(path, backend="transformers", quiet=True)
        session = pipe.chat(("图中的菜是什么？", PICTURE), gen_config=GREEDY)
        session = pipe.chat("它的主要食材是什么？", session=session, gen_config=GREEDY)
        text_only = pipe.chat("Hello, who are you?", gen_config=GREEDY)
        replies.append([answer for _, answer in session.history] + [text_only.response.text])
    assert replies[0] == replies[1]
    assert all(replies[1])


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_spaced_text_never_becomes_unk(families, family):
    tokenizer = load_tokenizer(families[family][1])
    text = "Hello, who are you? What is on the plate, and how many pieces are there?"
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_the_internvl2_5_template_stops_at_im_end_without_its_newline(families):
    model, tokenizer = load_model(families["internvl2_5-2b"][1])
    from internvl_course.modelcode.conversation import get_conv_template

    conv = get_conv_template(model.template)
    assert conv.sep == "<|im_end|>\n" and conv.stop_token == "<|im_end|>"
    assert "书生·万象" in model.system_message


def test_trust_remote_code_runs_the_folders_own_code_and_says_so(families):
    download = families["internvl2-2b"][1]
    with pytest.warns(UserWarning, match="running .*own Python code"), \
            pytest.raises(RuntimeError, match="was imported: the kit promised"):
        load_model(download, trust_remote_code=True)


# --- bad input: one clear error before any long work -------------------------------------------

def test_a_plain_llm_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}))
    with pytest.raises(ModelFolderError, match=r"config.json: architectures \['Qwen2ForCausalLM'\].*plain language "
                                               "model.*InternVL2 or InternVL2.5 download"):
        inspect_folder(tmp_path)


def test_an_unknown_llm_architecture_is_named(families, tmp_path):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    _edit_json(folder / "config.json", lambda c: c["llm_config"].update(architectures=["Qwen3ForCausalLM"]))
    with pytest.raises(ModelFolderError, match=r"llm_config.architectures\[0\] is 'Qwen3ForCausalLM'.*"
                                               "trust_remote_code=True"):
        pipeline(folder, backend="transformers", quiet=True)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(architectures=["InternVLForConditionalGeneration"], model_type="internvl"),
     r"InternVLForConditionalGeneration.*newer InternVL or a converted format"),
    (lambda c: c.update(template="internvl3_5_gpt_oss"), r"template 'internvl3_5_gpt_oss' is not a chat template"),
])
def test_a_config_from_a_newer_internvl_is_refused(families, tmp_path, edit, match):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    _edit_json(folder / "config.json", edit)
    with pytest.raises(ModelFolderError, match=match):
        inspect_folder(folder)


@pytest.mark.parametrize("family, missing", [("internvl2-2b", "tokenizer.model"), ("internvl2-1b", "merges.txt"),
                                             ("internvl2-2b", "tokenizer_config.json")])
def test_missing_tokenizer_files_are_named(families, tmp_path, family, missing):
    folder = _copy(families[family][1], tmp_path / "m")
    (folder / missing).unlink()
    if family == "internvl2-1b":
        (folder / "tokenizer.json").unlink()  # with tokenizer.json alone the vocabulary is still there
    with pytest.raises(ModelFolderError, match=f"lacks the tokenizer file.*{missing}"):
        inspect_folder(folder)


def test_missing_weights_are_refused_with_the_download_command(families, tmp_path):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="no model weights.*pytorch_model.bin.*huggingface-cli download"):
        inspect_folder(folder)


def test_a_missing_shard_is_named(families, tmp_path):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelFolderError, match="model-00002-of-00002.safetensors is missing"):
        inspect_folder(folder)


def test_a_half_downloaded_safetensors_file_is_found_from_its_header(families, tmp_path):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    weights.write_bytes(data[: 8 + header_len + 1000])
    with pytest.raises(ModelFolderError, match="model.safetensors is incomplete: .* GB of .* GB.*Download it again"):
        pipeline(folder, backend="transformers", quiet=True)


def test_a_damaged_config_names_the_file_and_line(families, tmp_path):
    folder = _copy(families["internvl2-2b"][1], tmp_path / "m")
    (folder / "config.json").write_text('{"architectures": ["InternVLChatModel"],\n oops}')
    with pytest.raises(ModelFolderError, match=r"config.json is not valid JSON \(.*line 2"):
        inspect_folder(folder)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelFolderError, match="holds no config.json"):
        pipeline(tmp_path, backend="transformers", quiet=True)
    with pytest.raises(ModelFolderError, match="is not a folder"):
        inspect_folder(tmp_path / "nowhere")


# --- prepared folders for LMDeploy and XTuner ---------------------------------------------------

def test_a_kit_folder_is_handed_to_tools_as_it_is(families, work_dirs):
    kit = families["internvl2-2b"][0]
    assert prepared_folder(kit, "LMDeploy", quiet=True) == kit
    assert not work_dirs.exists()


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_a_download_is_prepared_with_the_kits_code_and_linked_weights(families, work_dirs, family, capsys):
    kit, download = families[family]
    before = _digest(download)
    out = prepared_folder(download, "LMDeploy")
    assert capsys.readouterr().out.count("\n") == 1  # announced in one line
    assert out.parent == work_dirs / "prepared"
    assert (out / "model.safetensors").is_symlink()
    assert (out / "model.safetensors").resolve() == (download / "model.safetensors").resolve()
    for name in (p.name for p in kit.glob("*.py")):  # the kit's code, not the folder's
        assert (out / name).read_bytes() == (kit / name).read_bytes()
    assert inspect_folder(out).kit_written
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_internvl_chat.InternVLChatModel"
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == json.loads((kit / "tokenizer_config.json").read_text())["chat_template"]
    assert _digest(download) == before  # the source is never changed
    assert oct(os.stat(download / "model.safetensors").st_mode) == oct(os.stat(kit / "model.safetensors").st_mode)


def test_a_prepared_folder_is_reused_and_rebuilt_when_the_source_changes(families, work_dirs, tmp_path, capsys):
    download = _copy(families["internvl2-2b"][1], tmp_path / "m")
    first = prepared_folder(download, "XTuner")
    assert prepared_folder(download, "XTuner") == first
    assert "still up to date" in capsys.readouterr().out
    _edit_json(download / "config.json", lambda c: c.update(max_dynamic_patch=6))
    second = prepared_folder(download, "XTuner")
    assert second != first and json.loads((second / "config.json").read_text())["max_dynamic_patch"] == 6
    assert not first.exists()  # the stale one (links and the kit's files only) is gone
    assert (download / "model.safetensors").is_file()
    assert json.loads((second / MANIFEST).read_text())["source"] == str(download.resolve())


def test_the_prepared_folder_loads_through_transformers_auto_classes(families, work_dirs):
    """What LMDeploy and XTuner do with it: AutoConfig/AutoModel/AutoTokenizer, trust_remote_code."""
    from transformers import AutoConfig, AutoTokenizer

    out = prepared_folder(families["internvl2-2b"][1], "XTuner", quiet=True)
    assert type(AutoConfig.from_pretrained(out, trust_remote_code=True)).__name__ == "InternVLChatConfig"
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)  # the fast slot is empty: slow class
    assert type(tokenizer).__name__ == "InternLM2Tokenizer"


def test_doctor_describes_a_model_folder_and_the_fix_for_a_bad_one(families, tmp_path):
    from internvl_course.course.doctor import MISSING, check_model

    rows = {row.name: row for row in check_model(families["internvl2-1b"][1])}
    assert "Qwen2" in rows["model family"].detail and "Hermes-2" in rows["model family"].detail
    assert "not the folder's" in rows["model what runs"].detail
    (bad,) = check_model(tmp_path)
    assert bad.status == MISSING and "holds no config.json" in bad.fix
