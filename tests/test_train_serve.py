"""Train/serve consistency: the prompt XTuner trains on is the prompt chat() and LMDeploy serve.

XTuner's InternVL dataset builds each training sample with its own system message and the
internlm2-chat turns (FACTS.md section 2); after convert.py the fine-tuned model must be asked
its questions in exactly those token ids, by our chat() and by LMDeploy, or it answers a prompt
it never saw.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import TRAIN_PYTHON, chat_prompt, lmdeploy_prompt

pytestmark = pytest.mark.slow

# In the train env: XTuner's own dataset class, as the cpu-tiny config builds it.
XTUNER_SAMPLE = r"""
import json, sys
from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.utils import PROMPT_TEMPLATE
model, data, images = sys.argv[1:4]
dataset = InternVL_V1_5_Dataset(model_path=model, template=PROMPT_TEMPLATE.internlm2_chat, data_paths=data,
                                image_folders=images, max_length=8192)
sample = dataset[0]
print(json.dumps({"input_ids": list(map(int, sample["input_ids"])), "labels": list(map(int, sample["labels"])),
                  "tiles": int(sample["pixel_values"].shape[0])}))
"""


@pytest.fixture(scope="module")
def training_prompt(converted_model, tiny_llava_data):
    data_path, image_folder = tiny_llava_data
    result = subprocess.run([str(TRAIN_PYTHON), "-c", XTUNER_SAMPLE, str(converted_model[0].out_dir),
                             str(data_path), str(image_folder)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sample = json.loads(result.stdout.strip().splitlines()[-1])
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
