"""The kit's own InternVL2 code (internvl_course/modelcode): layout, numerics, generation, loading.

Runs in both envs (transformers 4.48 in .venv-train, 5.x in .venv): model directories written
by the kit are loaded by XTuner under 4.48 and by the notebooks under 5.x. Every model here is
a tiny random one built in the test; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

from internvl_course.modelcode import modeling_internlm2
from internvl_course.modelcode.configuration_intern_vit import InternVisionConfig
from internvl_course.modelcode.configuration_internlm2 import InternLM2Config
from internvl_course.modelcode.configuration_internvl_chat import AUTO_MAP, MODEL_CODE_FILES, InternVLChatConfig
from internvl_course.modelcode.conversation import INTERNVL_SYSTEM_MESSAGE, get_conv_template
from internvl_course.modelcode.modeling_intern_vit import InternVisionModel
from internvl_course.modelcode.modeling_internlm2 import InternLM2ForCausalLM
from internvl_course.modelcode.modeling_internvl_chat import IMG_CONTEXT_TOKEN, InternVLChatModel, pixel_shuffle
from internvl_course.modelcode.official_configs import INTERNVL2_2B_CONFIG

pytestmark = pytest.mark.train_env

MODELCODE_DIR = Path(modeling_internlm2.__file__).parent
MANIFEST = Path(__file__).parent / "data" / "internvl2_2b_params.json"


def tiny_llm_config(**overrides) -> InternLM2Config:
    """4 query heads sharing 2 KV heads, so grouped-query attention is really exercised."""
    values = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bias=False,
        rope_theta=10000,
        attn_implementation="eager",
        pad_token_id=1,
    )
    return InternLM2Config(**(values | overrides))


def tiny_chat_config(**llm_overrides) -> InternVLChatConfig:
    """Real InternVL2 geometry (448 px tiles, patch 14, pixel shuffle 0.5: 256 tokens a tile) at tiny widths."""
    vision = dict(
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_hidden_layers=2,
        image_size=448,
        patch_size=14,
        qkv_bias=True,
        norm_type="layer_norm",
        qk_normalization=False,
        initializer_factor=1.0,
    )
    return InternVLChatConfig(
        vision_config=vision,
        llm_config=tiny_llm_config(**llm_overrides).to_dict(),
        force_image_size=448,
        downsample_ratio=0.5,
        ps_version="v2",
        select_layer=-1,
        template="internlm2-chat",
    )


def tiny_chat_model(seed: int = 0, **llm_overrides) -> InternVLChatModel:
    torch.manual_seed(seed)
    return InternVLChatModel(tiny_chat_config(**llm_overrides)).eval()


def tiny_llm(seed: int = 0, **overrides) -> InternLM2ForCausalLM:
    torch.manual_seed(seed)
    return InternLM2ForCausalLM(tiny_llm_config(**overrides)).eval()


# --- InternLM2 --------------------------------------------------------------------------------


def test_eager_and_sdpa_attention_agree() -> None:
    eager = tiny_llm()
    sdpa = tiny_llm(attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.model.attn_implementation == "sdpa"
    ids = torch.randint(3, 96, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    with torch.no_grad():
        for attention_mask in (None, mask):
            a = eager(input_ids=ids, attention_mask=attention_mask).logits
            b = sdpa(input_ids=ids, attention_mask=attention_mask).logits
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _reference_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate each (x[i], x[i + d/2]) pair by angle position * base^(-2i/d), written out plainly."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(d // 2):
        angle = positions.float() * base ** (-2 * i / d)
        a, b = x[..., i], x[..., i + d // 2]
        out[..., i] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., i + d // 2] = b * torch.cos(angle) + a * torch.sin(angle)
    return out


def test_packed_wqkv_gqa_matches_reference_from_split_weights() -> None:
    """Cut wqkv by the documented layout (per KV group: its query heads, its key, its value) and
    compute causal grouped-query attention head by head; the module must agree."""
    config = tiny_llm_config()
    layer = tiny_llm().model.layers[0].attention
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    d = config.hidden_size // heads
    groups = heads // kv_heads
    weight = layer.wqkv.weight.detach()  # [(heads + 2 * kv_heads) * d, hidden]
    wq, wk, wv = {}, {}, {}
    row = 0
    for h in range(kv_heads):
        for g in range(groups):
            wq[h * groups + g] = weight[row : row + d]
            row += d
        wk[h], wv[h] = weight[row : row + d], weight[row + d : row + 2 * d]
        row += 2 * d
    assert row == weight.shape[0]

    torch.manual_seed(1)
    x = torch.randn(1, 7, 32)
    positions = torch.arange(7)
    causal = torch.ones(7, 7).tril().bool()
    outputs = []
    for head in range(heads):
        kv = head // groups
        q = _reference_rope(x[0] @ wq[head].T, positions, config.rope_theta)
        k = _reference_rope(x[0] @ wk[kv].T, positions, config.rope_theta)
        v = x[0] @ wv[kv].T
        scores = (q @ k.T / math.sqrt(d)).masked_fill(~causal, float("-inf"))
        outputs.append(scores.softmax(-1) @ v)
    expected = torch.cat(outputs, dim=-1) @ layer.wo.weight.detach().T

    rotary = modeling_internlm2.InternLM2RotaryEmbedding(config)
    cos, sin = rotary(positions[None], x.dtype)
    mask = modeling_internlm2.build_attention_mask(None, 7, 0, x.dtype, x.device)
    with torch.no_grad():
        got, _ = layer(x, cos, sin, mask, None, False)
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)


def test_rope_scaling_linear_and_dynamic() -> None:
    positions = torch.arange(12)[None]
    plain = modeling_internlm2.InternLM2RotaryEmbedding(tiny_llm_config())
    linear = modeling_internlm2.InternLM2RotaryEmbedding(
        tiny_llm_config(rope_scaling={"type": "linear", "factor": 2.0})
    )
    # linear: position p looks like p / factor
    torch.testing.assert_close(linear(positions * 2, torch.float32), plain(positions, torch.float32))

    dynamic = modeling_internlm2.InternLM2RotaryEmbedding(
        tiny_llm_config(rope_scaling={"type": "dynamic", "factor": 2.0}, max_position_embeddings=8)
    )
    short = torch.arange(8)[None]
    torch.testing.assert_close(dynamic(short, torch.float32), plain(short, torch.float32))  # within max: unscaled
    d, length = 8, 12  # head_dim, sequence length past max_position_embeddings
    base = 10000 * (2.0 * length / 8 - 1.0) ** (d / (d - 2))
    cos, _ = dynamic(positions, torch.float32)
    expected = torch.cos(11 * base ** (-torch.arange(0, d, 2).float() / d))
    torch.testing.assert_close(cos[0, 11, : d // 2], expected)


def test_kv_cache_generation_equals_no_cache_and_plain_greedy() -> None:
    model = tiny_llm()
    ids = torch.randint(3, 96, (2, 6))
    with torch.no_grad():
        cached = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=False)
        greedy = ids
        for _ in range(8):  # what greedy decoding means, without generate() or a cache
            next_ids = model(input_ids=greedy, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, next_ids], dim=1)
    assert torch.equal(cached, uncached)
    # generate stops a row at eos (2) and pads it; compare up to there
    for row in range(2):
        n = cached.shape[1]
        stop = (cached[row, 6:] == 2).nonzero()
        n = 6 + int(stop[0]) + 1 if len(stop) else n
        assert torch.equal(cached[row, :n], greedy[row, :n])


def test_flash_attention_2_without_flash_attn_falls_back_to_sdpa(monkeypatch, caplog) -> None:
    real_find_spec = modeling_internlm2.importlib.util.find_spec
    monkeypatch.setattr(
        modeling_internlm2.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "flash_attn" else real_find_spec(name, *args),
    )
    sdpa = tiny_llm(attn_implementation="sdpa")
    with caplog.at_level("WARNING"):
        flash = tiny_llm(attn_implementation="flash_attention_2")
    warnings = [r for r in caplog.records if "flash_attn" in r.getMessage()]
    assert len(warnings) == 1
    assert flash.config.attn_implementation == "flash_attention_2"  # the config keeps what was asked
    assert {layer.attention.attn_implementation for layer in flash.model.layers} == {"sdpa"}
    ids = torch.randint(3, 96, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(flash(input_ids=ids).logits, sdpa(input_ids=ids).logits)


def test_inputs_embeds_forward_and_embedding_accessors() -> None:
    model = tiny_llm()
    ids = torch.randint(3, 96, (2, 5))
    assert model.get_input_embeddings() is model.model.tok_embeddings
    assert model.get_output_embeddings() is model.output
    with torch.no_grad():
        by_ids = model(input_ids=ids).logits
        by_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert by_embeds.shape == (2, 5, 96)
    torch.testing.assert_close(by_ids, by_embeds)


def test_peft_lora_with_gradient_checkpointing_trains() -> None:
    """What XTuner does to the LLM: input grads, gradient checkpointing, LoRA on every linear layer."""
    peft = pytest.importorskip("peft")
    model = tiny_llm(attn_implementation="flash_attention_2").train()
    model.enable_input_require_grads()
    model.gradient_checkpointing_enable()
    assert model.model.gradient_checkpointing
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["wqkv", "wo", "w1", "w2", "w3", "output"])
    model = peft.get_peft_model(model, lora)
    ids = torch.randint(3, 96, (2, 7))
    embeds = model.get_input_embeddings()(ids)
    out = model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert any(g.abs().sum() > 0 for g in lora_grads)


# --- InternViT, pixel shuffle, InternVLChatModel ------------------------------------------------


def test_pixel_shuffle_v1_is_the_transpose_of_v2() -> None:
    x = torch.randn(2, 32, 32, 8)
    v1, v2 = pixel_shuffle(x, 0.5, "v1"), pixel_shuffle(x, 0.5, "v2")
    assert v2.shape == (2, 16, 16, 32)
    assert torch.equal(v1, v2.transpose(1, 2))
    # v2: output (i, j) holds the input's 2x2 block at rows 2i..2i+1, columns 2j..2j+1, in row-major order
    block = torch.cat([x[:, 2 * 3 + a, 2 * 5 + b] for a in range(2) for b in range(2)], dim=-1)
    assert torch.equal(v2[:, 3, 5], block)


def test_extract_feature_gives_256_tokens_a_tile() -> None:
    model = tiny_chat_model()
    assert model.num_image_token == 256
    grid = torch.randn(1, 32, 32, 32)
    assert torch.equal(model.pixel_shuffle(grid), pixel_shuffle(grid, 0.5, "v2"))  # ps_version "v2"
    with torch.no_grad():
        features = model.extract_feature(torch.randn(7, 3, 448, 448))
    assert features.shape == (7, 256, 32)


def test_patch_embedding_is_the_convolution_it_stores() -> None:
    """embed_patches computes patch_embedding (a Conv2d, the official weight) as one matrix product:
    same result, for any picture size, with the edge beyond the last whole patch dropped."""
    config = InternVisionConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=1)
    torch.manual_seed(0)
    embeddings = InternVisionModel(config).embeddings
    torch.nn.init.normal_(embeddings.patch_embedding.bias)
    for height, width in ((448, 448), (224, 448), (450, 463)):
        pixels = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = embeddings.patch_embedding(pixels)  # [2, 32, h, w]
            patches, h, w = embeddings.embed_patches(pixels)
        assert (h, w) == (height // 14, width // 14) == tuple(expected.shape[2:])
        torch.testing.assert_close(patches, expected.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    assert embeddings.state_dict()["patch_embedding.weight"].shape == (32, 3, 14, 14)  # the official name and shape


def test_vision_options_rms_norm_qk_norm_drop_path_and_other_sizes() -> None:
    config = InternVisionConfig(
        hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2,
        image_size=448, patch_size=14, norm_type="rms_norm", qk_normalization=True, drop_path_rate=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    vit = InternVisionModel(config)
    names = dict(vit.named_parameters())
    assert "encoder.layers.0.attn.q_norm.weight" in names and "encoder.layers.0.attn.k_norm.weight" in names
    assert "encoder.layers.0.norm1.bias" not in names  # RMSNorm has no bias
    assert torch.equal(names["encoder.layers.1.ls1"], torch.full((32,), 0.1))  # initializer_factor
    pixels = torch.randn(2, 3, 448, 448)
    vit.eval()
    with torch.no_grad():
        assert torch.equal(vit(pixels).last_hidden_state, vit(pixels).last_hidden_state)
        # other image sizes: the learned 32x32 position grid is resized (bicubic) to 16x16
        assert vit(torch.randn(1, 3, 224, 224)).last_hidden_state.shape == (1, 1 + 16 * 16, 32)
        assert torch.equal(vit.embeddings.position_embedding_for(32, 32), vit.embeddings.position_embedding)
        vit.train()  # drop path is random only while training (the last layer drops with p = 0.5)
        torch.manual_seed(1)
        runs = {vit(pixels[:1]).last_hidden_state.sum().item() for _ in range(6)}
    assert len(runs) > 1


def test_training_forward_puts_image_features_at_img_context_tokens() -> None:
    model = tiny_chat_model().train()
    context_id = 5
    model.img_context_token_id = context_id
    ids = torch.randint(6, 96, (2, 300))
    ids[0, 10:266] = context_id  # one tile in the first sample
    pixel_values = torch.randn(2, 3, 448, 448)
    image_flags = torch.tensor([[1], [0]])  # the second sample's tile is a text-only dummy
    labels = ids.clone()
    out = model(pixel_values=pixel_values, input_ids=ids, image_flags=image_flags, labels=labels, use_cache=False)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.mlp1[1].weight.grad is not None and model.mlp1[1].weight.grad.abs().sum() > 0

    with torch.no_grad():  # the placeholders' embeddings are exactly the first tile's features
        embeds = model.merge_image_features(
            model.language_model.get_input_embeddings()(ids), ids, model.extract_feature(pixel_values[:1])
        )
        torch.testing.assert_close(embeds[0, 10:266], model.extract_feature(pixel_values[:1])[0])
    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        model.merge_image_features(embeds, ids, model.extract_feature(pixel_values))  # 512 features, 256 slots


class ToyTokenizer:
    """Just enough of a tokenizer for chat(): special tokens whole, every other character one id."""

    SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", IMG_CONTEXT_TOKEN, "<img>", "</img>"]

    def __init__(self) -> None:
        self.padding_side = "right"
        self.vocab = {token: i for i, token in enumerate(self.SPECIALS)}
        self.split = re.compile("(" + "|".join(re.escape(t) for t in self.SPECIALS) + ")")

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab[token]

    def encode(self, text: str) -> list[int]:
        ids = [self.vocab["<s>"]]
        for piece in self.split.split(text):
            for token in [piece] if piece in self.SPECIALS else piece:
                ids.append(self.vocab.setdefault(token, len(self.vocab)))
        return ids

    def __call__(self, texts, return_tensors: str = "pt", padding: bool = False) -> dict:
        rows = [self.encode(t) for t in ([texts] if isinstance(texts, str) else texts)]
        width = max(map(len, rows))
        pad = [self.vocab["</s>"]]
        ids, mask = [], []
        for row in rows:
            fill = width - len(row)
            ids.append(pad * fill + row if self.padding_side == "left" else row + pad * fill)
            mask.append([0] * fill + [1] * len(row) if self.padding_side == "left" else [1] * len(row) + [0] * fill)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        tokens = {i: t for t, i in self.vocab.items()}
        return "".join(
            tokens.get(int(i), "?") for i in ids if not (skip_special_tokens and tokens.get(int(i)) in self.SPECIALS)
        )

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]


@pytest.fixture()
def chat_setup(monkeypatch):
    """A tiny model whose vocabulary covers the toy tokenizer, and a record of every prompt it gets."""
    model = tiny_chat_model(vocab_size=512)
    tokenizer = ToyTokenizer()
    prompts = []
    generate = model.generate

    def recording_generate(**kwargs):
        prompts.append([tokenizer.decode(row) for row in kwargs["input_ids"]])
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    return model, tokenizer, prompts


def test_chat_builds_internlm2_chat_prompts_over_two_turns(chat_setup) -> None:
    model, tokenizer, prompts = chat_setup
    pixel_values = torch.randn(2, 3, 448, 448)  # two tiles of one image
    image = "<img>" + IMG_CONTEXT_TOKEN * 512 + "</img>"
    config = dict(max_new_tokens=4, do_sample=False)

    answer, history = model.chat(tokenizer, pixel_values, "What is on the plate?", config, return_history=True)
    assert isinstance(answer, str) and history == [("<image>\nWhat is on the plate?", answer)]
    system = f"<|im_start|>system\n{INTERNVL_SYSTEM_MESSAGE}<|im_end|>"
    first_turn = f"<|im_start|>user\n{image}\nWhat is on the plate?<|im_end|><|im_start|>assistant\n"
    assert prompts[0] == ["<s>" + system + first_turn]

    _, history = model.chat(tokenizer, pixel_values, "And the colour?", config, history=history, return_history=True)
    assert len(history) == 2 and history[1][0] == "And the colour?"  # no second <image> prefix
    second_turn = "<|im_start|>user\nAnd the colour?<|im_end|><|im_start|>assistant\n"
    assert prompts[1] == ["<s>" + system + first_turn + answer + "<|im_end|>" + second_turn]


def test_batch_chat_matches_one_by_one_chat(chat_setup) -> None:
    model, tokenizer, prompts = chat_setup
    pixel_values = torch.randn(3, 3, 448, 448)
    questions = ["Describe it.", "How many plates are there on the table?"]
    config = dict(max_new_tokens=5, do_sample=False)
    together = model.batch_chat(tokenizer, pixel_values, questions, config, num_patches_list=[1, 2])
    alone = [
        model.chat(tokenizer, pixel_values[:1], questions[0], config),
        model.chat(tokenizer, pixel_values[1:], questions[1], config),
    ]
    assert together == alone
    assert prompts[0][0].startswith("</s>") and not prompts[0][1].startswith("</s>")  # left-padded batch
    assert tokenizer.padding_side == "right"  # restored


def test_batch_chat_with_no_questions_returns_no_replies(chat_setup) -> None:
    model, tokenizer, prompts = chat_setup
    assert model.batch_chat(tokenizer, None, [], dict(max_new_tokens=4)) == []
    assert prompts == []  # nothing was generated


def test_img_context_token_id_is_read_from_and_written_to_the_config(tmp_path: Path) -> None:
    """The id lives in config.json; XTuner's ``model.img_context_token_id = ...`` lands there too."""
    config = tiny_chat_config()
    config.img_context_token_id = 7
    model = InternVLChatModel(config).eval()
    assert model.img_context_token_id == 7
    model.img_context_token_id = 5  # what XTuner does after loading
    assert model.config.img_context_token_id == 5
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))["img_context_token_id"] == 5
    assert InternVLChatModel.from_pretrained(tmp_path).img_context_token_id == 5
    # An official config names none: forward then says how to give it.
    with pytest.raises(ValueError, match="config.img_context_token_id is None.*load_model"):
        tiny_chat_model().merge_image_features(torch.zeros(1, 3, 32), torch.zeros(1, 3, dtype=torch.long),
                                               torch.zeros(0, 32))


def test_chat_takes_the_id_from_the_tokenizer_only_when_the_config_has_none(chat_setup) -> None:
    model, tokenizer, _ = chat_setup
    assert model.img_context_token_id is None
    pixel_values = torch.randn(1, 3, 448, 448)
    model.chat(tokenizer, pixel_values, "Hi?", dict(max_new_tokens=1))
    assert model.config.img_context_token_id == tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    model.img_context_token_id = 99  # a config that disagrees with the tokenizer is named, not guessed
    with pytest.raises(ValueError, match="img_context_token_id is 99, but the tokenizer gives <IMG_CONTEXT> the id 5"):
        model.chat(tokenizer, pixel_values, "Hi?", dict(max_new_tokens=1))


def test_a_picture_without_an_image_marker_is_refused(chat_setup) -> None:
    model, tokenizer, _ = chat_setup
    with pytest.raises(ValueError, match="2 picture.*1 <image> marker"):
        model.chat(tokenizer, torch.randn(2, 3, 448, 448), "<image> Which is bigger?", dict(max_new_tokens=1),
                   num_patches_list=[1, 1])


def test_generate_with_image_cache_equals_no_cache() -> None:
    model = tiny_chat_model()
    model.img_context_token_id = 5
    ids = torch.cat([torch.tensor([[1, 6]]), torch.full((1, 256), 5), torch.tensor([[7, 8, 9]])], dim=1)
    pixel_values = torch.randn(1, 3, 448, 448)
    cached = model.generate(pixel_values=pixel_values, input_ids=ids, max_new_tokens=6, do_sample=False)
    uncached = model.generate(
        pixel_values=pixel_values, input_ids=ids, max_new_tokens=6, do_sample=False, use_cache=False
    )
    assert cached.shape[0] == 1 and 1 <= cached.shape[1] <= 6  # only the new tokens come back
    assert torch.equal(cached, uncached)


def test_conversation_templates() -> None:
    for name, end in [("internlm2-chat", "<|im_end|>"), ("Hermes-2", "<|im_end|>"), ("phi3-chat", "<|end|>")]:
        conv = get_conv_template(name)
        conv.append_message(conv.roles[0], "hi")
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        assert conv.stop_token == end and prompt.count(end) == 2 and prompt.endswith(conv.roles[1])
    assert get_conv_template("internlm2-chat").messages == []  # fresh copies
    with pytest.raises(KeyError):
        get_conv_template("llama-2")


# --- Loading, saving, the official layout -------------------------------------------------------


def test_save_pretrained_then_automodel_with_remote_code(tmp_path: Path) -> None:
    model = tiny_chat_model(rope_scaling={"type": "dynamic", "factor": 2.0}, rope_theta=1e6)
    model.save_pretrained(tmp_path)
    for name in MODEL_CODE_FILES:
        shutil.copy(MODELCODE_DIR / name, tmp_path / name)
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert saved["auto_map"] == AUTO_MAP
    assert saved["llm_config"]["rope_scaling"] == {"type": "dynamic", "factor": 2.0}

    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(loaded).__module__.startswith("transformers_modules.")  # the directory's copy, not ours
    assert config.llm_config.rope_scaling == {"type": "dynamic", "factor": 2.0}
    assert config.llm_config.rope_theta == 1e6
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ids = torch.randint(3, 96, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.language_model(input_ids=ids).logits, model.language_model(input_ids=ids).logits
        )


def test_official_internvl2_2b_config_gives_the_manifest_parameters() -> None:
    """Built from InternVL2-2B's published config on the meta device (no memory, no download), the
    model has exactly the names and shapes tests/data/make_internvl2_2b_manifest.py derives."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    with torch.device("meta"):
        model = InternVLChatModel(InternVLChatConfig(**INTERNVL2_2B_CONFIG))
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert shapes == manifest["parameters"]
    total = sum(p.numel() for p in model.parameters())
    assert total == manifest["total_parameters"]
    assert 2.15e9 < total < 2.25e9  # "2B": 2.2 B in the InternVL2 model card
    assert model.num_image_token == 256
