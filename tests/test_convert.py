"""convert.py: a real XTuner checkpoint becomes an official-format model that loads and chats."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import MODEL_FILES
from internvl_course.fileio import MARKER
from internvl_course.finetune import convert as C
from internvl_course.tiny.internlm2_tokenizer import XTUNER_SYSTEM_MESSAGE

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def converted(converted_model):
    return converted_model


def test_writes_an_official_directory_that_loads_and_chats(converted):
    from transformers import AutoModel, AutoTokenizer

    from internvl_course.model.preprocess import load_image
    from internvl_course.data.drawing import Piece, Scene, render

    result, _ = converted
    assert {p.name for p in result.out_dir.iterdir()} == MODEL_FILES | {MARKER}
    model = AutoModel.from_pretrained(result.out_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir, trust_remote_code=True)
    reply = model.chat(tokenizer, load_image(render(Scene(pieces=(Piece("circle", "red", 2),)), seed=2)),
                       "盘子里有几个圆形？", dict(max_new_tokens=8, do_sample=False))
    assert isinstance(reply, str) and reply
    # Served as trained: XTuner's system message, in the config (chat()) and the template (LMDeploy).
    assert model.system_message == XTUNER_SYSTEM_MESSAGE
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith(f"<|im_start|>system\n{XTUNER_SYSTEM_MESSAGE}<|im_end|>")
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["img_context_token_id"] == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_merged_weights_are_base_plus_scaled_lora(converted, tiny_model):
    result, checkpoint = converted
    saved = C.read_checkpoint(checkpoint)
    meta = saved["meta"]["cfg"]
    assert "r=32" in meta and "lora_alpha=64" in meta  # cpu-tiny: scale 2
    prefix = "model.language_model.base_model.model.model.layers.1.attention.wqkv"
    a = saved["state_dict"][f"{prefix}.lora_A.default.weight"].float()
    b = saved["state_dict"][f"{prefix}.lora_B.default.weight"].float()
    assert b.abs().max() > 0  # training moved the adapter
    base = load_file(str(tiny_model / "model.safetensors"))
    merged = load_file(str(result.out_dir / "model.safetensors"))
    name = "language_model.model.layers.1.attention.wqkv.weight"
    torch.testing.assert_close(merged[name], base[name] + 2.0 * b @ a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged["mlp1.1.weight"], saved["state_dict"]["model.mlp1.1.weight"].float())
    frozen = "vision_model.embeddings.patch_embedding.weight"
    assert torch.equal(merged[frozen], base[frozen])


def test_logit_check_is_tight_and_would_catch_a_wrong_merge(converted, tiny_model):
    from transformers import AutoTokenizer

    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    result, checkpoint = converted
    assert result.dtype == "float32"  # the tiny base is stored in float32: the strict check applies
    assert result.merge_max_abs_diff < 1e-3 and result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0
    assert result.tolerance.startswith("max |logit difference| <=")
    # Without the adapter the logits are far outside the tolerance: the check measures something.
    model = InternVLChatModel.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True)
    model.system_message = XTUNER_SYSTEM_MESSAGE
    inputs = C.sample_inputs(model, tokenizer)
    plain = C._logits(model, inputs)
    with C.adapter_attached(model, C.load_adapter(checkpoint)):
        adapted = C._logits(model, inputs)
    assert (adapted - plain).abs().max().item() > 100 * C.EXACT.bound(adapted)
    torch.testing.assert_close(C._logits(model, inputs), plain)  # the hooks were removed


def test_refuses_an_output_that_is_holds_or_lies_inside_an_input(tiny_model, xtuner_run):
    _, work, run = xtuner_run
    before = {p.name for p in tiny_model.iterdir()}
    with pytest.raises(ValueError, match="lies inside the base model"):
        C.convert(tiny_model, run.checkpoint, tiny_model / "merged")
    with pytest.raises(ValueError, match="is the base model"):
        C.convert(tiny_model, run.checkpoint, tiny_model)
    with pytest.raises(ValueError, match="contains the checkpoint"):
        C.convert(tiny_model, run.checkpoint, work, overwrite=True)
    with pytest.raises(ValueError, match="is the checkpoint"):
        C.convert(tiny_model, run.checkpoint, run.checkpoint, overwrite=True)
    assert {p.name for p in tiny_model.iterdir()} == before and run.checkpoint.is_file()


def test_never_overwrites_an_existing_output(tmp_path, tiny_model, xtuner_run):
    _, _, run = xtuner_run
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not overwrite"):
        C.convert(tiny_model, run.checkpoint, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_failed_check_leaves_nothing_behind(tmp_path, tiny_model, xtuner_run, monkeypatch):
    _, _, run = xtuner_run
    monkeypatch.setattr(C, "EXACT", C.Tolerance(-1.0, 0.0))
    with pytest.raises(RuntimeError, match="(?i)logits differ.*nothing was written"):
        C.convert(tiny_model, run.checkpoint, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, tiny_model):
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        C.convert(tiny_model, runs / "nope.pth", out)
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, runs / "other.pth")
    with pytest.raises(ValueError, match="neither LLM LoRA nor mlp1"):
        C.convert(tiny_model, runs / "other.pth", out)
    with pytest.raises(ValueError, match="holds no config.json"):
        C.convert(runs, runs / "other.pth", out)
    lora_only = {"state_dict": {"model.language_model.base_model.model.model.layers.0.attention.wo.lora_A.weight":
                                torch.zeros(8, 128)}}
    torch.save(lora_only, runs / "half.pth")
    with pytest.raises(ValueError, match="no complete LoRA pairs"):
        C.convert(tiny_model, runs / "half.pth", out)
    assert not out.exists()


def test_rank_and_alpha_come_from_the_checkpoint_or_the_caller(xtuner_run, tmp_path):
    _, _, run = xtuner_run
    assert C.load_adapter(run.checkpoint).scale == 2.0
    assert C.load_adapter(run.checkpoint, lora_r=8, lora_alpha=8).scale == 1.0
    torch.save({"state_dict": C.read_checkpoint(run.checkpoint)["state_dict"]}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="pass lora_r=... and lora_alpha="):
        C.load_adapter(tmp_path / "bare.pth")


def test_generation_config_and_tokenizer_files_come_along(converted, tiny_model):
    result, _ = converted
    assert json.loads((result.out_dir / "generation_config.json").read_text()) == \
        json.loads((tiny_model / "generation_config.json").read_text())
    assert (result.out_dir / "tokenizer.model").read_bytes() == (tiny_model / "tokenizer.model").read_bytes()


def test_sixteen_bit_storage_is_checked_bit_for_bit(tmp_path, tiny_model, xtuner_run):
    from safetensors import safe_open

    _, _, run = xtuner_run
    result = C.convert(tiny_model, run.checkpoint, tmp_path / "bf16", store_dtype="bfloat16")
    assert result.dtype == "bfloat16" and "bit for bit" in result.tolerance
    assert result.merge_max_abs_diff < 1e-3  # the merge itself is exact; only storage rounds
    with safe_open(str(result.out_dir / "model.safetensors"), "pt") as f:
        assert f.get_slice("language_model.model.tok_embeddings.weight").get_dtype() == "BF16"
    merged32 = load_file(str(C.convert(tiny_model, run.checkpoint, tmp_path / "f32").out_dir / "model.safetensors"))
    merged16 = load_file(str(result.out_dir / "model.safetensors"))
    assert all(torch.equal(merged16[k], merged32[k].to(torch.bfloat16)) for k in merged32)
