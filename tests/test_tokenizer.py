"""The kit's tokenizer: slow and fast agree, special tokens are single, the chat template is chat()'s.

Runs in both envs (transformers 4.48 in .venv-train, 5.x in .venv), because the two versions
load, convert and save tokenizers differently and a model directory must work in both.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
from pathlib import Path

import pytest
import sentencepiece as spm
import transformers
from transformers import AutoTokenizer

from conftest import TRAIN_PYTHON
from internvl_course.data.words import (
    COLOURS,
    CUISINES,
    DISHES,
    FLAVOURS,
    INGREDIENTS,
    METHODS,
    corpus_dialogues,
    corpus_sentences,
)
from internvl_course.modelcode.conversation import INTERNVL_SYSTEM_MESSAGE, get_conv_template
from internvl_course.modelcode.tokenization_internlm2_fast import backend_from_sentencepiece
from internvl_course.tiny.internlm2_tokenizer import DEFAULT_VOCAB_SIZE, SPECIAL_TOKENS, build_tokenizer

pytestmark = pytest.mark.train_env

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5

# Mixed Chinese and English, special tokens inside, spaces in odd places, characters the corpus
# never saw (byte fallback), and text that looks like a byte piece or a special token.
TEXTS = [
    "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\n图中的菜是什么？<|im_end|><|im_start|>assistant\n",
    "答案：B，图中的菜是麻婆豆腐",
    "Kung pao chicken is  hot and fragrant.   Three spaces, then a tab\tand a newline\n.",
    " leading and trailing spaces ",
    "这是一道川菜 (Sichuan), 口味麻辣；A. 宫保鸡丁 B. mapo tofu",
    "未见过的字：饕餮、鲍鱼、😀 and é",
    "literal <0x41>, <unk>, <s>inside</s> and ▁",
    "<ref>盘子</ref><box>[[12, 34, 560, 780]]</box><quad>x</quad>",
    "<|action_start|><|plugin|>{\"name\": \"search\"}<|action_end|><|interpreter|>",
    "",
]


def load_pair(directory: Path):
    """(slow, fast) as AutoTokenizer gives them; transformers 5 ignores use_fast=False."""
    slow = AutoTokenizer.from_pretrained(directory, trust_remote_code=True, use_fast=False)
    fast = AutoTokenizer.from_pretrained(directory, trust_remote_code=True, use_fast=True)
    assert type(fast).__name__ == "InternLM2TokenizerFast"
    if TRANSFORMERS_5:
        assert slow.is_fast
        slow = type(fast).slow_tokenizer_class.from_pretrained(directory)
    assert type(slow).__name__ == "InternLM2Tokenizer"
    return slow, fast


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def pair(built: Path):
    return load_pair(built)


def test_writes_internvl2_tokenizer_files(built: Path) -> None:
    names = {p.name for p in built.iterdir()}
    assert names == {
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenization_internlm2.py",
        "tokenization_internlm2_fast.py",
    }


def test_names_and_ids_of_special_tokens(pair) -> None:
    for tok in pair:
        assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "</s>")
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 2)
        assert tok.add_bos_token and not tok.add_eos_token
        assert len(tok) == tok.vocab_size == DEFAULT_VOCAB_SIZE
        for i, token in enumerate(SPECIAL_TOKENS, start=3):
            assert tok.convert_tokens_to_ids(token) == i
            assert tok(token, add_special_tokens=False).input_ids == [i]
            assert tok.tokenize(f"图片{token}image") == tok.tokenize("图片") + [token] + tok.tokenize("image")
        assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)


@pytest.mark.parametrize("text", TEXTS)
def test_slow_and_fast_encode_and_decode_alike(pair, text: str) -> None:
    slow, fast = pair
    ids = slow(text).input_ids
    assert fast(text).input_ids == ids
    assert ids[0] == slow.bos_token_id
    expected = "<s>" + text.replace("▁", " ")  # "▁" stands for a space inside sentencepiece
    assert slow.decode(ids) == fast.decode(ids) == expected
    assert slow.decode(ids, skip_special_tokens=True) == fast.decode(ids, skip_special_tokens=True)


def test_slow_and_fast_agree_on_the_whole_corpus(pair) -> None:
    slow, fast = pair
    lines = corpus_sentences()
    assert [slow.encode(x) for x in lines] == fast(lines).input_ids
    tokens = sum(len(fast.encode(x, add_special_tokens=False)) for x in lines)
    assert sum(map(len, lines)) / tokens > 2  # a tokenizer for this text, not a byte coder


def test_pairs_and_batches(pair) -> None:
    slow, fast = pair
    a, b = "图中有三个红色的圆形。", "There are three red circles."
    assert slow(a, b).input_ids == fast(a, b).input_ids
    batch_slow = slow([a, b], padding=True)
    batch_fast = fast([a, b], padding=True)
    assert batch_slow.input_ids == batch_fast.input_ids
    assert batch_slow.attention_mask == batch_fast.attention_mask
    shorter = min((0, 1), key=lambda i: sum(batch_fast.attention_mask[i]))
    assert batch_fast.input_ids[shorter][0] == fast.pad_token_id  # left padding, for generation


def _chat_by_hand(system: str, turns: list[tuple[str, str | None]]) -> str:
    prompt = f"<|im_start|>system\n{system}<|im_end|>"
    for question, answer in turns:
        prompt += f"<|im_start|>user\n{question}<|im_end|><|im_start|>assistant\n"
        if answer is not None:
            prompt += f"{answer}<|im_end|>"
    return prompt


def _chat_by_conversation(system: str | None, turns: list[tuple[str, str | None]]) -> str:
    conv = get_conv_template("internlm2-chat")
    if system is not None:
        conv.system_message = system
    for question, answer in turns:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


@pytest.mark.parametrize("system", [None, "You are an AI assistant whose name is InternLM (书生·浦语)."])
def test_chat_template_is_internlm2_chat(pair, system: str | None) -> None:
    turns = [("<image>\n图中的菜是什么？", "图中的菜是宫保鸡丁。"), ("What does it taste like?", None)]
    messages = [] if system is None else [{"role": "system", "content": system}]
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    expected = _chat_by_hand(system or INTERNVL_SYSTEM_MESSAGE, turns)
    assert expected == _chat_by_conversation(system, turns)
    slow, fast = pair
    for tok in pair:
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    ids = slow(expected).input_ids  # what chat() feeds the model: bos, then the prompt
    assert fast(expected).input_ids == ids
    assert ids[:2] == [slow.bos_token_id, slow.convert_tokens_to_ids("<|im_start|>")]
    for tok in pair:  # the template holds no bos; tokenizing the rendered text adds it
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        assert rendered["input_ids"] == ids[1:]


def test_system_turn_costs_words_not_characters(pair) -> None:
    """Every prompt carries the system turn, so it should be a few dozen tokens, not one per character."""
    system_turn = _chat_by_hand(INTERNVL_SYSTEM_MESSAGE, [])
    assert len(pair[1].encode(system_turn, add_special_tokens=False)) < len(system_turn) / 2


def test_chat_template_without_generation_prompt(pair) -> None:
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hello"}]
    expected = _chat_by_hand(INTERNVL_SYSTEM_MESSAGE, [("你好", "Hello")])
    for tok in pair:
        assert tok.apply_chat_template(messages, tokenize=False) == expected


def test_build_is_deterministic(tmp_path: Path, built: Path) -> None:
    again = build_tokenizer(tmp_path / "again")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (again / name).read_bytes() == (built / name).read_bytes(), name


def _assert_same_tokenizer(again, tok) -> None:
    for text in TEXTS:
        assert again(text).input_ids == tok(text).input_ids
        assert again.decode(again(text).input_ids) == tok.decode(tok(text).input_ids)
    messages = [{"role": "user", "content": "这是什么菜？"}]
    assert again.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(messages, tokenize=False)


def test_save_pretrained_round_trip_fast(pair, tmp_path: Path) -> None:
    fast = pair[1]
    fast.save_pretrained(tmp_path)
    for name in ("tokenizer.model", "tokenizer.json", "tokenization_internlm2.py", "tokenization_internlm2_fast.py"):
        assert (tmp_path / name).is_file(), name
    for again in load_pair(tmp_path):
        _assert_same_tokenizer(again, fast)


def test_save_pretrained_round_trip_slow(pair, tmp_path: Path) -> None:
    slow = pair[0]
    slow.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.model").is_file()
    # transformers records only the slow class when a slow tokenizer saves itself
    # (dynamic_module_utils.custom_object_save), so both loads give the slow class back.
    for use_fast in (False, True):
        again = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True, use_fast=use_fast)
        assert type(again).__name__ == "InternLM2Tokenizer"
        _assert_same_tokenizer(again, slow)


# Run by the train env (transformers 4.48): load directories the course env saved, save its own.
_TRAIN_ENV_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
texts, saved_slow, saved_fast, out_slow, out_fast = json.loads(sys.argv[1]), *sys.argv[2:]
ids = {}
for directory in (saved_slow, saved_fast):
    for use_fast in (False, True):
        tok = AutoTokenizer.from_pretrained(directory, trust_remote_code=True, use_fast=use_fast)
        ids[f"{directory} {use_fast}"] = [tok(text).input_ids for text in texts]
for out, use_fast in ((out_slow, False), (out_fast, True)):
    AutoTokenizer.from_pretrained(saved_fast, trust_remote_code=True, use_fast=use_fast).save_pretrained(out)
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_saved_in_one_env_loads_in_the_other(pair, tmp_path: Path, in_course_env: bool) -> None:
    """A directory saved under transformers 5 loads under 4.48, and the other way round."""
    if not in_course_env:
        pytest.skip("drives the train env from the course env")
    slow, fast = pair
    dirs = [tmp_path / name for name in ("course-slow", "course-fast", "train-slow", "train-fast")]
    slow.save_pretrained(dirs[0])
    fast.save_pretrained(dirs[1])
    result = subprocess.run(
        [str(TRAIN_PYTHON), "-c", _TRAIN_ENV_SCRIPT, json.dumps(TEXTS), *map(str, dirs)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    expected = [fast(text).input_ids for text in TEXTS]
    for loaded, ids in json.loads(result.stdout.splitlines()[-1]).items():
        assert ids == expected, loaded
    for directory in dirs[2:]:
        for use_fast in (False, True):
            again = AutoTokenizer.from_pretrained(directory, trust_remote_code=True, use_fast=use_fast)
            assert [again(text).input_ids for text in TEXTS] == expected


def test_tokenizers_survive_pickling(pair) -> None:
    """datasets and DataLoader workers copy the tokenizer by pickling it."""
    for tok in pair:
        for clone in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
            assert clone(TEXTS[0]).input_ids == tok(TEXTS[0]).input_ids


def _train(**options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_sentences()), model_writer=model, vocab_size=900,
        byte_fallback=True, num_threads=1, minloglevel=2, **options,
    )
    return model.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        dict(model_type="bpe", normalization_rule_name="identity", add_dummy_prefix=False,
             remove_extra_whitespaces=False),
        dict(model_type="unigram"),  # sentencepiece's defaults: NFKC, dummy prefix, squeezed spaces
    ],
)
def test_fast_refuses_models_it_would_split_differently(tmp_path: Path, options: dict) -> None:
    path = tmp_path / "tokenizer.model"
    path.write_bytes(_train(**options))
    with pytest.raises(ValueError, match="InternLM2TokenizerFast"):
        backend_from_sentencepiece(str(path))


def test_corpus_word_lists_are_consistent() -> None:
    assert corpus_sentences() == corpus_sentences()
    dialogues = corpus_dialogues()
    assert dialogues and all(question and answer for question, answer in dialogues)
    letters = {answer[3] for _, answer in dialogues if answer.startswith("答案：")}
    assert letters == set("ABCD")  # the right option moves round the four letters
    assert len({dish.zh for dish in DISHES}) == len(DISHES)
    for dish in DISHES:
        assert dish.cuisine in CUISINES and dish.flavour in FLAVOURS
        assert dish.colour in COLOURS and dish.method in METHODS
        assert all(ingredient in INGREDIENTS for ingredient in dish.ingredients)
