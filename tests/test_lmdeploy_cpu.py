"""What LMDeploy does with the embedded model on a CPU: recognise it, and build chat()'s prompt.

LMDeploy's engines need a CUDA GPU, but its architecture detection, chat-template resolution and
VLM prompt building run anywhere; the GPU half of this check lives in benchmarks/ and the issue
notes (greedy tokens equal to ours on the GPU machine).
"""

from __future__ import annotations

import pytest

from conftest import chat_prompt, lmdeploy_prompt

lmdeploy = pytest.importorskip("lmdeploy")

from internvl_course.data.drawing import Piece, Scene, render  # noqa: E402


def test_lmdeploy_sees_an_internvl2(tiny_model):
    from lmdeploy.archs import get_model_arch

    arch, config = get_model_arch(str(tiny_model))
    assert arch == "InternVLChatModel"
    llm = config.llm_config  # a plain dict: LMDeploy reads config.json without the model's code
    assert (llm["architectures"] if isinstance(llm, dict) else llm.architectures) == ["InternLM2ForCausalLM"]


def test_lmdeploy_uses_the_tokenizers_template_not_a_bare_fallback(tiny_model):
    from lmdeploy.model import get_chat_template
    from transformers import AutoTokenizer

    template = get_chat_template(str(tiny_model), trust_remote_code=True)
    assert type(template).__name__ == "HFChatTemplate"
    messages = [{"role": "user", "content": "你好"}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True)
    assert template.messages2prompt(messages) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("question", ["盘子里有几个圆形？", "What colour is the plate?"])
def test_lmdeploy_prompt_ids_equal_chat_prompt_ids(tiny_model, question):
    from transformers import AutoTokenizer

    image = render(Scene(pieces=(Piece("circle", "red", 2),)), seed=1)
    lmdeploy_ids, pixel_values = lmdeploy_prompt(tiny_model, image, question)
    assert lmdeploy_ids == chat_prompt(tiny_model, pixel_values, question)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True)
    assert lmdeploy_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 256 * pixel_values.shape[0]
