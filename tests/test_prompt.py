"""The package's prompt builder (internvl_course.model.prompt) writes what model.chat() writes.

Pretraining, the lesson-02 shape trace and convert's sample build their prompts with the package's
builder; model.chat() and batch_chat() with the model folder's own code (modelcode). Both must hand
the tokenizer the same text, or a model would be trained and checked on prompts it is never served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from internvl_course.model.load import load_model
from internvl_course.model.prompt import build_prompt, turn_texts, with_image
from internvl_course.modelcode.conversation import get_conv_template
from internvl_course.tiny.build import build_tiny_model

# Each template the kit knows, and the tiny family that speaks it. No tiny family has a Phi-3 LLM:
# the InternVL2-2B stand-in is switched to phi3-chat, which both builders then write alike.
TEMPLATES = {"internlm2-chat": "internvl2-2b", "Hermes-2": "internvl2-1b", "internvl2_5": "internvl2_5-2b",
             "phi3-chat": "internvl2-2b"}
FIRST = "What is on the plate?"
TWO_PICTURES = "Image-1: <image>\nImage-2: <image>\nWhich has more pieces?"


@pytest.fixture(scope="module")
def folders(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompt")
    return {"internvl2-2b": tiny_model,
            "internvl2-1b": build_tiny_model(root / "internvl2-1b", family="internvl2-1b"),
            "internvl2_5-2b": build_tiny_model(root / "internvl2_5-2b", family="internvl2_5-2b")}


def _speaking(folders: dict[str, Path], template: str):
    model, tokenizer = load_model(folders[TEMPLATES[template]])
    if model.template != template:
        model.template, model.system_message = template, get_conv_template(template).system_message
    return model, tokenizer


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_the_package_prompt_is_chats_prompt_token_for_token(folders, template):
    model, tokenizer = _speaking(folders, template)
    seen: list[list[int]] = []

    def record(pixel_values=None, input_ids=None, attention_mask=None, **kwargs):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
        return torch.full((len(input_ids), 1), tokenizer.eos_token_id)

    model.generate = record
    tiles = torch.zeros(3, 3, 448, 448)
    config = dict(max_new_tokens=1)
    history = [(with_image(FIRST), "A red circle.")]
    model.chat(tokenizer, tiles[:2], FIRST, config)  # a first turn with a picture of two tiles
    model.chat(tokenizer, tiles[:2], "And its colour?", config, history=history)  # a second turn
    model.chat(tokenizer, None, "Hello, who are you?", config)  # text only
    model.chat(tokenizer, tiles, TWO_PICTURES, config, num_patches_list=[1, 2])  # two pictures
    model.batch_chat(tokenizer, tiles, [FIRST, "How many plates?"], config, num_patches_list=[1, 2])

    def ids(turns, tiles_per_image):
        prompt = build_prompt(template, model.system_message, turns, tiles_per_image, model.num_image_token)
        return tokenizer(prompt).input_ids

    assert seen == [ids([(with_image(FIRST), None)], [2]),
                    ids(history + [("And its colour?", None)], [2]),
                    ids([("Hello, who are you?", None)], []),
                    ids([(TWO_PICTURES, None)], [1, 2]),
                    ids([(with_image(FIRST), None)], [1]),
                    ids([(with_image("How many plates?"), None)], [2])]
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert [row.count(context) for row in seen] == [512, 512, 0, 768, 256, 512]


@pytest.mark.parametrize("template", ["internlm2-chat", "Hermes-2", "internvl2_5"])
def test_turn_by_turn_pieces_tokenize_to_the_whole_conversation(folders, template):
    """What pretraining's label masking relies on: the pieces, tokenized one by one, are the ids
    of the whole text, and each answer piece ends with the template's end-of-turn text."""
    model, tokenizer = _speaking(folders, template)
    turns = [(with_image(FIRST), "A red circle."), ("And its colour?", "Red."), ("How many?", "One.")]
    pieces = turn_texts(template, None, turns, [1], model.num_image_token)
    piecewise: list[int] = []
    for turn, (prompt, answer) in enumerate(pieces):
        piecewise += tokenizer(prompt, add_special_tokens=turn == 0).input_ids
        piecewise += tokenizer(answer, add_special_tokens=False).input_ids
    assert piecewise == tokenizer(build_prompt(template, None, turns, [1], model.num_image_token)).input_ids
    sep = get_conv_template(template).sep
    assert [answer for _, answer in pieces] == [answer + sep for _, answer in turns]


def test_a_picture_without_its_marker_is_refused():
    with pytest.raises(ValueError, match=r"2 picture\(s\) but the conversation has only 1 <image>.*with_image"):
        build_prompt("internlm2-chat", None, [(with_image(FIRST), "A red circle."), ("And this one?", None)],
                     [1, 1], 256)
    assert with_image("<image> Compare them.") == "<image> Compare them."  # a marker placed is kept


@pytest.mark.parametrize("template", ["internlm2-chat", "Hermes-2", "internvl2_5"])
def test_pretraining_encodes_the_whole_conversation_and_labels_only_the_answers(folders, template):
    from internvl_course.tiny import pretrain as P
    from internvl_course.tiny.table_talk import TableTalk

    model, tokenizer = _speaking(folders, template)
    talk = TableTalk(0, (("盘子里有什么？", "盘子里有两个红色的圆形。"), ("What colour are they?", "Red."),
                         ("一共几个？", "一共两个。")))
    ids, labels = P.encode(talk, tokenizer, template, model.system_message, model.num_image_token)
    turns = [(with_image(question) if turn == 0 else question, answer)
             for turn, (question, answer) in enumerate(talk.turns)]
    whole = build_prompt(template, model.system_message, turns, [1], model.num_image_token)
    assert ids == tokenizer(whole).input_ids
    sep = get_conv_template(template).sep
    answers = [tokenizer(answer + sep, add_special_tokens=False).input_ids for _, answer in talk.turns]
    assert [label for label in labels if label != P.IGNORE_INDEX] == sum(answers, [])
    assert all(label in (P.IGNORE_INDEX, token) for label, token in zip(labels, ids, strict=True))
