"""The tiny base that can talk: its generated data, its training, and the shipped weights."""

from __future__ import annotations

import random
import re

import pytest
import torch
from safetensors.torch import load_file

from internvl_course.tiny import pretrain as P
from internvl_course.tiny import table_talk as T
from internvl_course.data.words import DISHES
from internvl_course.paths import BASE_WEIGHTS
from internvl_course.tiny.build import build_tiny_model

RECIPE = P.Recipe()


def _all_training_conversations(seed: int = 0) -> list[T.TableTalk]:
    """Every conversation the shipped recipe trains on, exactly as train_model draws them."""
    scenes = T.random_scenes(seed, RECIPE.images)
    size = RECIPE.batch_size
    return (T.conversations(scenes, RECIPE.stage1_steps * size, seed, T.CAPTIONS)
            + T.conversations(scenes, RECIPE.look_steps * size, seed + 1, T.LOOK)
            + T.conversations(scenes, RECIPE.talk_steps * size, seed + 2, T.TALK))


@pytest.fixture(scope="module")
def training_text() -> list[tuple[str, str]]:
    return [turn for talk in _all_training_conversations() for turn in talk.turns]


def _options(question: str) -> dict[str, str] | None:
    """{"A": ..., "D": ...} of a question in the food VQA layout, None for an open question."""
    lines = question.split("\n")
    if len(lines) != 5:
        return None
    return {line[0]: line[3:] for line in lines[1:]}


def _chosen(question: str, answer: str) -> str | None:
    """The option an answer opens with ("白色，盘子是白色的。" -> "白色"), or None."""
    options = _options(question) or {}
    return next((o for o in options.values() if answer.startswith(o + "，") or answer.startswith(o + ", ")), None)


def test_dish_names_are_only_read_back_never_seen(training_text):
    # The base may read a dish's name (as every LLM has), but only in a list it is asked to read
    # back, where the letter decides the answer and the picture plays no part: so nothing in the
    # data ties a name to a look, and the food fine-tune starts from no knowledge of the dishes.
    names = {dish.zh for dish in DISHES} | {dish.en.lower() for dish in DISHES}
    read = 0
    for question, answer in training_text:
        text = (question + "\n" + answer).lower()
        if not any(name in text for name in names):
            continue
        read += 1
        letter = re.match(r"(?:选项|What is option )([ABCD])", question)
        assert letter, (question, answer)
        assert _chosen(question, answer) == _options(question)[letter.group(1)], (question, answer)
    assert 200 < read < len(training_text) / 10  # the names are read, and reading them is a small share
    assert len(training_text) > 5000  # the check saw the whole corpus, not an empty one


def test_every_answer_is_one_well_formed_sentence(training_text):
    for question, answer in training_text:
        lang = "en" if question.isascii() else "zh"
        chosen = _chosen(question, answer)
        sentence = answer[len(chosen) + (1 if lang == "zh" else 2):] if chosen else answer
        if lang == "en" and chosen:
            sentence = sentence[0].upper() + sentence[1:]  # "white, the plate is white." -> "The plate is white."
        assert P.well_formed(sentence, lang), (question, answer)


def test_multiple_choice_answers_open_with_the_right_option(training_text):
    asked = 0
    for question, answer in training_text:
        options = _options(question)
        if options is None:
            continue
        asked += 1
        assert list(options) == list("ABCD") and len(set(options.values())) == 4
        chosen = _chosen(question, answer)
        assert chosen is not None, (question, answer)
        # The food answers' shape: the option, then a sentence that names it again.
        assert chosen.lower() in answer[len(chosen):].lower(), (question, answer)
    assert asked > 500  # the food VQA format is a real share of the data


def test_languages_follow_the_question(training_text):
    for question, answer in training_text:
        assert question.isascii() == answer.isascii(), (question, answer)


def test_both_stages_see_the_same_prompt_chat_builds(tiny_model):
    """encode() must build, turn by turn, exactly the ids model.chat() feeds generate()."""
    from transformers import AutoTokenizer

    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    model = InternVLChatModel.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True)
    scene = T.random_scenes(7, 1)[0]
    talk = T.random_conversation(scene, 0, random.Random(3), T.Mix(T.TALK.kinds, max_turns=3, multiple_choice=0.5))
    while len(talk.turns) < 3:
        talk = T.random_conversation(scene, 0, random.Random(len(talk.turns) + 10), T.TALK)
    ids, labels = P.encode(talk, tokenizer, model.template, model.system_message, model.num_image_token)

    seen: list[list[int]] = []

    def record(pixel_values=None, input_ids=None, **kwargs):
        seen.append(input_ids[0].tolist())
        return torch.tensor([[tokenizer.convert_tokens_to_ids("<|im_end|>")]])

    model.generate = record
    pixels = torch.zeros(1, 3, 448, 448)
    history: list[tuple[str, str]] = []
    for question, answer in talk.turns:
        model.chat(tokenizer, pixels, question, {"max_new_tokens": 1}, history=history or None)
        history.append(("<image>\n" + question if not history else question, answer))
    answers = [i for i, label in enumerate(labels) if label != P.IGNORE_INDEX]
    starts = [i for i in answers if i == 0 or labels[i - 1] == P.IGNORE_INDEX]
    for turn, start in enumerate(starts):
        assert ids[:start] == seen[turn]  # the prompt before each answer is chat()'s prompt
    assert len(starts) == len(talk.turns)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [labels[i] for i in answers].count(im_end) == len(talk.turns)  # each answer is trained to stop


def test_training_is_deterministic_and_learns(tmp_path):
    """A miniature recipe (same code path as the shipped one): same seed, same bytes, and the
    held-out answer loss falls."""
    small = P.Recipe(see_images=8, see_steps=2, see_batch=4, images=8, batch_size=4, stage1_steps=2, look_steps=6,
                     talk_steps=6, eval_images=4)
    first = P.train_base(tmp_path / "a.safetensors", seed=0, recipe=small, progress=False)
    second = P.train_base(tmp_path / "b.safetensors", seed=0, recipe=small, progress=False)
    assert first.read_bytes() == second.read_bytes()
    losses = P.read_metadata(first)["eval_loss"]
    assert losses["stage2"] < losses["start"] - 0.5  # 12 steps of stage 2 already lower it by ~0.9
    # The vocabulary the weights belong to is written beside them; no temporary files are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "tokenizer.model"]


def test_shipped_base_fits_the_tiny_model_and_says_how_it_was_made(tiny_model):
    assert BASE_WEIGHTS.stat().st_size < 30e6
    about = P.read_metadata(BASE_WEIGHTS)
    assert about["seed"] == 0 and about["recipe"] == vars(RECIPE)  # made by today's recipe
    assert about["eval_loss"]["stage2"] < 1.0 < about["eval_loss"]["start"]
    # build_tiny_model's default is this base, tensor for tensor.
    shipped, built = load_file(str(BASE_WEIGHTS)), load_file(str(tiny_model / "model.safetensors"))
    assert shipped.keys() == built.keys()
    assert all(torch.equal(shipped[k], built[k]) for k in shipped)


def test_the_base_carries_the_vocabulary_it_was_trained_with(tiny_model):
    from internvl_course.tiny.build import BASE_TOKENIZER
    from internvl_course.tiny.internlm2_tokenizer import train_sentencepiece

    # Every tiny model built from the base uses the shipped tokenizer.model, whatever
    # sentencepiece version is installed (another version may train another vocabulary, and
    # the trained weights would then read the wrong tokens) ...
    assert (tiny_model / "tokenizer.model").read_bytes() == BASE_TOKENIZER.read_bytes()
    # ... and here, training it again gives the same bytes, so `make base` reproduces the base.
    assert train_sentencepiece() == BASE_TOKENIZER.read_bytes()


def test_random_weights_differ_from_the_base(tmp_path, tiny_model):
    random_dir = build_tiny_model(tmp_path / "random", weights="random")
    a = load_file(str(random_dir / "model.safetensors"))["mlp1.1.weight"]
    b = load_file(str(tiny_model / "model.safetensors"))["mlp1.1.weight"]
    assert not torch.equal(a, b)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file.*\"base\""):
        build_tiny_model(tmp_path / "m", weights=tmp_path / "nope.safetensors")
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def base_probe(tiny_model) -> dict[str, dict[str, float]]:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_model, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, trust_remote_code=True)
    return P.probe(model, tokenizer, images=12)


def test_base_talks_in_well_formed_sentences(base_probe):
    for kind, scores in base_probe.items():
        assert scores["well_formed"] >= 0.9, (kind, scores)


def test_base_looks_at_the_picture(base_probe):
    # Chance: one in 11 colours, one in 4 containers. The base reads the plate's colour far
    # better than chance (0.44 on these 12 pictures) and the container somewhat better;
    # what it reads stays modest (it is tiny).
    assert base_probe["plate colour"]["exact"] >= 0.4, base_probe
    assert base_probe["container"]["exact"] >= 0.3, base_probe


def test_well_formed_rejects_broken_answers():
    assert P.well_formed("盘子是白色的。", "zh") and P.well_formed("The plate is white.", "en")
    assert not P.well_formed("盘子是白色的", "zh")  # no full stop
    assert not P.well_formed("The plate is white.", "zh")  # wrong language
    assert not P.well_formed("旁边放着一把叉子和一把叉子和一把叉子。", "zh")  # loops
    assert not P.well_formed("With a pair and a pair and a pair and a fork.", "en")
    assert P.well_formed("It holds two red squares and two blue squares.", "en")
    assert not P.well_formed("<|im_end|>", "en") and not P.well_formed("", "zh")


def test_a_foreign_weights_file_is_named_in_the_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors was not written by internvl_course.tiny.pretrain"):
        P.read_metadata(tmp_path / "other.safetensors")
