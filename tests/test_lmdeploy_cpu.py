"""What LMDeploy does with the embedded model on a CPU: recognise it, and build chat()'s prompt.

LMDeploy's engines need a CUDA GPU, but its architecture detection, chat-template resolution and
VLM prompt building run anywhere; the GPU half of this check lives in benchmarks/ and the issue
notes (greedy tokens equal to ours on the GPU machine).
"""

from __future__ import annotations

import pytest
import torch

lmdeploy = pytest.importorskip("lmdeploy")

from internvl_course.scenes import Piece, Scene, render  # noqa: E402


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
    from lmdeploy.model import get_chat_template
    from lmdeploy.tokenizer import Tokenizer
    from lmdeploy.vl.model.internvl import InternVLVisionModel
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    image = render(Scene(pieces=(Piece("circle", "red", 2),)), seed=1)
    path = str(tiny_model)
    vision = InternVLVisionModel(path, hf_config=AutoConfig.from_pretrained(path, trust_remote_code=True),
                                 trust_remote_code=True)
    vision.build_preprocessor()
    # Image first, as InternVL's chat() puts it (pipe.chat((image, text)) does the same).
    messages = vision.preprocess([{"role": "user", "content": [{"type": "image", "data": image},
                                                                {"type": "text", "text": question}]}])
    lmdeploy_ids = vision.to_pytorch(messages, get_chat_template(path, trust_remote_code=True),
                                     Tokenizer(path, trust_remote_code=True))["input_ids"]

    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    seen = {}

    def record(pixel_values=None, input_ids=None, **kwargs):
        seen["ids"] = input_ids[0].tolist()
        return torch.tensor([[tokenizer.eos_token_id]])

    model.generate = record
    pixel_values = messages[-1]["content"][0]["pixel_values"].float()
    model.chat(tokenizer, pixel_values, question, dict(max_new_tokens=1, do_sample=False))
    assert lmdeploy_ids == seen["ids"]
    assert lmdeploy_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 256 * pixel_values.shape[0]
