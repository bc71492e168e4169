"""The InternVL2-1B stand-in's Qwen2 tokenizer: native transformers classes load it, encode alike, and
its chat template is the Hermes-2 prompt.

Runs in both envs (transformers 4.48 in .venv-train, 5.x in .venv). 4.48 has a slow (pure Python)
Qwen2Tokenizer beside the fast one; 5.x has only the tokenizers-backed class under both names, so
there a small byte-level BPE written here stands in for the slow one.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import regex
import transformers
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

from conftest import REPO, TRAIN_PYTHON
from internvl_course.data.words import corpus_sentences
from internvl_course.tiny.qwen2_tokenizer import (
    DEFAULT_VOCAB_SIZE,
    PRETOKENIZE_PATTERN,
    QWEN2_STOP_TOKENS,
    SPECIAL_TOKENS,
    build_qwen2_tokenizer,
    qwen2_generation_config,
)
from internvl_course.modelcode.conversation import INTERNVL_SYSTEM_MESSAGE, get_conv_template

pytestmark = pytest.mark.train_env

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
FILES = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}

TEXTS = [
    "Hello, who are you?",
    "图中的菜是麻婆豆腐，口味麻辣。",
    "这是一道川菜 (Sichuan), 口味麻辣；A. 宫保鸡丁 B. mapo tofu",
    "first line\nsecond line\n\n  indented\r\nwindows line\n",
    "There are 12 plates and 3.5 bowls, 2024年10月1日",
    "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\n图中的菜是什么？<|im_end|><|im_start|>assistant\n",
    "<ref>盘子</ref><box>[[12, 34, 560, 780]]</box><quad>x</quad>",
    "It's what they've said: I'LL go, we'd see.",
    "未见过的字：饕餮、鲍鱼、😀 and café",
    "  two  spaces, a tab\tand trailing spaces  ",
    "almost special: <|im_start, <IMG_CONTEXT and </img",
    "",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen2_tokenizer(tmp_path_factory.mktemp("qwen2-tokenizer"))


@pytest.fixture(scope="module")
def loaded(built: Path) -> dict:
    """Every way transformers gives this folder, by name; "slow" only where a Python one exists."""
    loaded = {
        "auto": AutoTokenizer.from_pretrained(built, trust_remote_code=False),
        "fast": transformers.Qwen2TokenizerFast.from_pretrained(built),
    }
    slow = transformers.Qwen2Tokenizer.from_pretrained(built)
    if not slow.is_fast:  # transformers 4.x; in 5.x Qwen2Tokenizer is the tokenizers-backed class
        loaded["slow"] = slow
    assert TRANSFORMERS_5 != ("slow" in loaded)
    return loaded


def _bytes_to_chars() -> dict[int, str]:
    """GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the others for chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}


class ReferenceBPE:
    """Qwen2's encoding from vocab.json, merges.txt and tokenizer_config.json alone, in plain Python."""

    def __init__(self, directory: Path) -> None:
        self.vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        self.rank = {tuple(line.split(" ")): i for i, line in enumerate(lines)}
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.special = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
        self.special_split = regex.compile("(" + "|".join(map(regex.escape, self.special)) + ")")
        self.to_char = _bytes_to_chars()

    def word(self, word: str) -> list[int]:
        """Merge the word's byte characters, lowest-ranked pair first, every occurrence of it at once."""
        pieces = [self.to_char[b] for b in word.encode("utf-8")]
        while len(pieces) > 1:
            best, i = min((self.rank.get(pair, len(self.rank)), i) for i, pair in enumerate(itertools.pairwise(pieces)))
            if best == len(self.rank):
                break
            pair, merged, j = (pieces[i], pieces[i + 1]), [], 0
            while j < len(pieces):
                if tuple(pieces[j:j + 2]) == pair:
                    merged.append(pieces[j] + pieces[j + 1])
                    j += 2
                else:
                    merged.append(pieces[j])
                    j += 1
            pieces = merged
        return [self.vocab[piece] for piece in pieces]

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in self.special_split.split(text):  # special tokens first, matched in the raw text
            if part in self.special:
                ids.append(self.special[part])
            else:
                for word in regex.findall(PRETOKENIZE_PATTERN, unicodedata.normalize("NFC", part)):
                    ids += self.word(word)
        return ids


@pytest.fixture(scope="module")
def reference(built: Path) -> ReferenceBPE:
    return ReferenceBPE(built)


def test_writes_qwen2_tokenizer_files(built: Path) -> None:
    assert {p.name for p in built.iterdir()} == FILES
    config = json.loads((built / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "auto_map" not in config and config["tokenizer_class"] == "Qwen2Tokenizer"
    assert config["bos_token"] is None and config["unk_token"] is None
    vocab = json.loads((built / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(DEFAULT_VOCAB_SIZE))
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)  # every byte has a token: no unknowns
    assert set(_bytes_to_chars().values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_pattern_is_qwen2s() -> None:
    from transformers.models.qwen2 import tokenization_qwen2

    assert PRETOKENIZE_PATTERN == tokenization_qwen2.PRETOKENIZE_REGEX


@pytest.mark.parametrize("python", ["this", "train"])
def test_build_is_deterministic(built: Path, tmp_path: Path, python: str) -> None:
    """The same bytes from a second build in this process, and from another process (another hash
    seed), in this env or in the train env (tokenizers 0.21 there)."""
    again = build_qwen2_tokenizer(tmp_path / "again")
    for name in FILES:
        assert (again / name).read_bytes() == (built / name).read_bytes(), name
    executable = sys.executable if python == "this" else str(TRAIN_PYTHON)
    if not Path(executable).exists():
        pytest.skip("no train env (.venv-train)")
    code = "import sys; from internvl_course.tiny.qwen2_tokenizer import build_qwen2_tokenizer as b; b(sys.argv[1])"
    result = subprocess.run([executable, "-c", code, str(tmp_path / "other")], capture_output=True, text=True,
                            timeout=120, env=os.environ | {"PYTHONHASHSEED": "12345"}, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    for name in FILES:
        assert (tmp_path / "other" / name).read_bytes() == (built / name).read_bytes(), name


def test_loads_natively(loaded: dict) -> None:
    for name, tok in loaded.items():
        assert type(tok).__name__ in ("Qwen2Tokenizer", "Qwen2TokenizerFast"), name
        names = (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token)
        assert names == (None, "<|im_end|>", "<|endoftext|>", None), name
        assert tok.vocab_size == DEFAULT_VOCAB_SIZE and len(tok) == DEFAULT_VOCAB_SIZE + len(SPECIAL_TOKENS)
        assert tok.model_max_length == 8192
    assert loaded["fast"].is_fast


def test_special_tokens_are_single_and_follow_the_vocabulary(loaded: dict) -> None:
    for tok in loaded.values():
        for i, token in enumerate(SPECIAL_TOKENS, start=DEFAULT_VOCAB_SIZE):
            assert tok.convert_tokens_to_ids(token) == i
            assert tok(token).input_ids == [i]
            assert tok.tokenize(f"图片{token}image") == tok.tokenize("图片") + [token] + tok.tokenize("image")
            assert tok.decode([i]) == token
        assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
        assert (tok.eos_token_id, tok.pad_token_id) == (DEFAULT_VOCAB_SIZE + 2, DEFAULT_VOCAB_SIZE)


@pytest.mark.parametrize("text", TEXTS)
def test_all_encode_alike_and_round_trip(reference: ReferenceBPE, loaded: dict, text: str) -> None:
    expected = reference.encode(text)
    for name, tok in loaded.items():
        ids = tok(text).input_ids  # no bos, no eos: Qwen2 adds nothing
        assert ids == expected, name
        assert all(isinstance(i, int) and 0 <= i < len(tok) for i in ids), name
        assert tok.decode(ids) == text, name
        assert tok.decode(ids, skip_special_tokens=True) == tok.decode(
            [i for i in ids if i < DEFAULT_VOCAB_SIZE]), name


def test_tokenizer_json_alone_encodes_alike(built: Path, reference: ReferenceBPE) -> None:
    """tokenizer.json's own pipeline, as the tokenizers library runs it. transformers 4.48's fast
    tokenizer runs exactly this; 5.x takes only its vocabulary and merges and rebuilds Qwen2's
    pipeline itself, so the file must describe the same pipeline to mean the same thing everywhere."""
    raw = Tokenizer.from_file(str(built / "tokenizer.json"))
    for text in TEXTS:
        ids = raw.encode(text).ids
        assert ids == reference.encode(text)
        assert raw.decode(ids, skip_special_tokens=False) == text


def test_text_is_composed_first(loaded: dict) -> None:
    """NFC, as Qwen2: an accent typed as a separate mark encodes as the composed letter."""
    for tok in loaded.values():
        assert tok("cafe\u0301").input_ids == tok("café").input_ids
        assert tok.decode(tok("cafe\u0301").input_ids) == "café"


def test_all_agree_on_the_whole_corpus(reference: ReferenceBPE, loaded: dict) -> None:
    lines = corpus_sentences()
    expected = [reference.encode(line) for line in lines]
    for name, tok in loaded.items():
        assert tok(lines).input_ids == expected, name
    assert sum(map(len, lines)) / sum(map(len, expected)) > 2  # a tokenizer for this text, not a byte coder


def _hermes2(system: str | None, turns: list[tuple[str, str | None]]) -> str:
    conv = get_conv_template("Hermes-2")
    if system is not None:
        conv.system_message = system
    for question, answer in turns:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def test_chat_template_is_hermes2(loaded: dict) -> None:
    expected = _hermes2(None, [("hi", None)])
    assert expected.startswith(f"<|im_start|>system\n{INTERNVL_SYSTEM_MESSAGE}<|im_end|>")
    messages = [{"role": "user", "content": "hi"}]
    for tok in loaded.values():
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        assert rendered["input_ids"] == tok(expected).input_ids


def test_chat_template_with_system_and_history(loaded: dict) -> None:
    system = "You are a helpful assistant."
    turns = [("<image>\n图中的菜是什么？", "图中的菜是宫保鸡丁。"), ("What does it taste like?", "Hot and fragrant.")]
    messages = [{"role": "system", "content": system}]
    for question, answer in turns:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    for tok in loaded.values():
        assert tok.apply_chat_template(messages, tokenize=False) == _hermes2(system, turns)


def test_save_pretrained_round_trip(loaded: dict, tmp_path: Path) -> None:
    for name, tok in loaded.items():
        tok.save_pretrained(tmp_path / name)
        again = AutoTokenizer.from_pretrained(tmp_path / name, trust_remote_code=False)
        assert [again(text).input_ids for text in TEXTS] == [tok(text).input_ids for text in TEXTS], name
        assert again.eos_token == tok.eos_token and again.pad_token == tok.pad_token, name


def test_generation_config(loaded: dict) -> None:
    for tok in loaded.values():
        assert qwen2_generation_config(tok) == {
            "eos_token_id": [DEFAULT_VOCAB_SIZE + 2, DEFAULT_VOCAB_SIZE], "pad_token_id": DEFAULT_VOCAB_SIZE,
        }
        assert tok.convert_ids_to_tokens(qwen2_generation_config(tok)["eos_token_id"]) == list(QWEN2_STOP_TOKENS)


def test_generation_config_refuses_other_tokenizers() -> None:
    class Other:
        def convert_tokens_to_ids(self, token: str) -> int:
            return 0

        def convert_ids_to_tokens(self, i: int) -> str:
            return "<unk>"

    with pytest.raises(ValueError, match="not a Qwen2 tokenizer"):
        qwen2_generation_config(Other())


def test_other_sizes_and_system_messages(tmp_path: Path) -> None:
    out = build_qwen2_tokenizer(tmp_path / "small", vocab_size=512, system_message="You are a cook.")
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    assert tok.vocab_size == 512 and tok.convert_tokens_to_ids("<|endoftext|>") == 512
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == _hermes2("You are a cook.", [("hi", None)])
    with pytest.raises(ValueError, match="supports only"):
        build_qwen2_tokenizer(tmp_path / "huge", vocab_size=100_000)
