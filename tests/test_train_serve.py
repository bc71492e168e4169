"""Train/serve consistency: the prompt XTuner trains on is the prompt chat() and LMDeploy serve.

XTuner's InternVL dataset builds each training sample with its own system message and the
internlm2-chat turns (docs/design.md, "XTuner 0.2.0"); after convert.py the fine-tuned model must be asked
its questions in exactly those token ids, by our chat() and by LMDeploy, or it answers a prompt
it never saw.
"""

from __future__ import annotations

import json

import pytest

from conftest import chat_prompt, lmdeploy_prompt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def training_prompt(xtuner_run):
    """The prompt of the first sample XTuner trained on in the shared run (its dataset, as the
    cpu-tiny config builds it, recorded by a hook: tests/xtuner_hooks.py): ids before the answer, tiles."""
    config, _, _ = xtuner_run
    sample = json.loads(config.with_name("first_sample.json").read_text(encoding="utf-8"))
    first_answer = next(i for i, label in enumerate(sample["labels"]) if label != -100)
    return sample["input_ids"][:first_answer], sample["tiles"]


def _question_and_image(tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    item = json.loads(data_path.read_text(encoding="utf-8"))[0]
    question = item["conversations"][0]["value"].replace("<image>", "").strip()
    return question, image_folder / item["image"]


def test_chat_asks_the_fine_tuned_model_what_xtuner_trained_it_on(converted_model, training_prompt, tiny_llava_data,
                                                                   tiny_model):
    from internvl_course.model.preprocess import load_image

    question, image = _question_and_image(tiny_llava_data)
    ids, tiles = training_prompt
    pixel_values = load_image(image)
    assert pixel_values.shape[0] == tiles
    assert chat_prompt(converted_model[0].out_dir, pixel_values, question) == ids
    # The base model keeps InternVL's own system message: that prompt differs, which is why
    # convert.py writes XTuner's into the fine-tuned model.
    assert chat_prompt(tiny_model, pixel_values, question) != ids


def test_lmdeploy_asks_the_fine_tuned_model_what_xtuner_trained_it_on(converted_model, training_prompt,
                                                                      tiny_llava_data):
    pytest.importorskip("lmdeploy")
    from PIL import Image

    question, image = _question_and_image(tiny_llava_data)
    ids, _ = training_prompt
    lmdeploy_ids, _ = lmdeploy_prompt(converted_model[0].out_dir, Image.open(image), question)
    assert lmdeploy_ids == ids
