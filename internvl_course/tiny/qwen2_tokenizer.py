"""Build the tokenizer of a tiny stand-in of InternVL2-1B from the kit's own text.

InternVL2-1B's language model is Qwen2-0.5B-Instruct, whose tokenizer is a byte-level BPE: text
is cut into words by a regular expression, each word is written as bytes (every byte one
printable character), and learned merges glue bytes back into longer tokens. Any text encodes,
with no unknown token and no byte-fallback trick, and decoding gives the text back.

``build_qwen2_tokenizer(out_dir)`` trains such a BPE on the same text as the InternLM2 stand-in
(``tokenizer_build.training_sentences()``) and writes the files OpenGVLab/InternVL2-1B carries
for its tokenizer: ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json``
and ``special_tokens_map.json``. There is no Python code among them: transformers' own
``Qwen2Tokenizer`` and ``Qwen2TokenizerFast`` read them, so the folder loads with
``trust_remote_code=False``. The same inputs always give the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from internvl_course.fileio import atomic_write_text
from internvl_course.modelcode.conversation import INTERNVL_SYSTEM_MESSAGE
from internvl_course.tiny.internlm2_tokenizer import (INTERNVL_SPECIAL, MODEL_MAX_LENGTH, chat_template, special_token,
                                                     special_tokens_map, training_sentences)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The learned vocabulary: the 256 byte characters plus 1792 merges. The special tokens come after
# it, so the model's embedding needs DEFAULT_VOCAB_SIZE + len(SPECIAL_TOKENS) rows. The training
# text has pairs occurring twice or more for about 2300 tokens; past that train_bpe refuses.
DEFAULT_VOCAB_SIZE = 2048

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2's three (ids 151643-151645 in Qwen2-0.5B-Instruct), then the nine InternVL2-1B adds
# (151646-151654, so <IMG_CONTEXT> is 151648 there). Here they follow the learned vocabulary in
# the same order.
QWEN2_SPECIAL = (ENDOFTEXT, IM_START, IM_END)
SPECIAL_TOKENS = QWEN2_SPECIAL + INTERNVL_SPECIAL
# Qwen2-Instruct lists its chat markers as additional special tokens (<|endoftext|> is already
# special as the pad token); InternVL2-1B appends its own nine.
ADDITIONAL_SPECIAL_TOKENS = (IM_START, IM_END) + INTERNVL_SPECIAL

EOS = IM_END  # a chat model's turn ends with <|im_end|>, so that is what generation stops on
PAD = ENDOFTEXT  # Qwen2 pads with <|endoftext|>; it has no bos and no unk token
# What generation stops on, in the order Qwen2-Instruct's generation_config.json lists them:
# the end of a turn, then the end of a document (a base-style continuation ends with it).
QWEN2_STOP_TOKENS = (IM_END, ENDOFTEXT)

# Qwen2's word splitter, one alternative per line; the first that matches at a position wins.
# Leading spaces stick to the word after them (" chicken"), which is why no prefix space is added.
_PRETOKENIZE_PARTS = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",  # English contractions, in either case
    r"[^\r\n\p{L}\p{N}]?\p{L}+",  # a run of letters (all of a Chinese phrase) and one character before it
    r"\p{N}",  # a single digit: numbers are read digit by digit
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",  # punctuation and symbols, with the line breaks right after them
    r"\s*[\r\n]+",  # line breaks, with the spaces before them
    r"\s+(?!\S)",  # spaces, except the last one before a word (that one goes with the word)
    r"\s+",  # any spaces left (at the end of the text)
)
PRETOKENIZE_PATTERN = "|".join(_PRETOKENIZE_PARTS)

# Every special token as one alternative, longest first so that none hides a longer one.
_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))


def _pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """Give ``tokenizer`` Qwen2's normalizer, word splitter, byte mapping and decoder.

    NFC first, as Qwen2 does (its tokenizer.json and its slow tokenizer both compose
    characters before splitting), so that "é" typed as e + accent encodes like "é". The regex
    does the splitting; ByteLevel then only maps bytes to characters (use_regex=False: its own
    GPT-2 regex would split a second time) and adds no space in front of the text. Its
    trim_offsets is left at the default because tokenizers 0.21 (the train env) cannot set it;
    it changes offsets only, never ids, and the file comes out the same in both envs.
    """
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()  # bytes back to text; its options only matter for offsets
    return tokenizer


def training_pieces() -> Iterator[str]:
    """The training text with the special tokens cut out, each stretch between them on its own.

    Loaded tokenizers cut the special tokens out of the text before anything else, so the BPE
    only ever sees the stretches between them; training on the same stretches keeps it from
    spending merges on "<|im_" or "IMG_CONTEXT", which never reach it. The prompts are in
    InternVL2-2B's internlm2-chat form, which is word for word InternVL2-1B's Hermes-2 (ChatML).
    """
    for sentence in training_sentences():
        for piece in _SPECIAL_SPLIT.split(sentence):
            if piece:
                yield piece


def train_bpe(vocab_size: int = DEFAULT_VOCAB_SIZE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE and return (vocab, merges), vocab ordered by id.

    The 256 byte characters are the first 256 ids whether or not the text uses them all, so no
    input can fall outside the vocabulary. A pair must occur twice to be merged. The trainer
    breaks ties between equally frequent pairs by their token ids, not by hash order, so the
    result does not depend on the process; the tests check that across processes.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size <= len(alphabet):
        raise ValueError(f"vocab_size must exceed the {len(alphabet)} byte tokens, got {vocab_size}")
    tokenizer = _pipeline(Tokenizer(models.BPE()))
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                         initial_alphabet=alphabet)
    tokenizer.train_from_iterator(training_pieces(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    if len(vocab) != vocab_size:
        raise ValueError(f"the kit's text supports only {len(vocab)} BPE tokens, fewer than vocab_size={vocab_size}")
    # tokenizers writes a merge as [left, right] (0.20 on) or as "left right" (before).
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str:
    """tokenizer.json: the fast tokenizer, which transformers reads before vocab.json and merges.txt."""
    tokenizer = _pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                                               continuing_subword_prefix="", end_of_word_suffix="",
                                               fuse_unk=False, byte_fallback=False)))
    # normalized=False: a special token is matched in the raw text, before NFC and the splitter.
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    return tokenizer.to_str(pretty=True) + "\n"


def tokenizer_config(vocab_size: int, system_message: str = INTERNVL_SYSTEM_MESSAGE) -> dict[str, Any]:
    """tokenizer_config.json with Qwen2-Instruct's keys and InternVL2-1B's special tokens.

    No bos and no unk (Qwen2 starts a prompt with <|im_start|> and needs no unknown token);
    ``errors: "replace"`` makes the slow tokenizer decode a cut-off UTF-8 sequence to U+FFFD
    rather than raise, as the fast one does.
    """
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(vocab_size + i): special_token(token) | {"special": True} for i, token in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "chat_template": chat_template(system_message),
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": PAD,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }



def _json(data: Any, **options: Any) -> str:
    return json.dumps(data, ensure_ascii=False, **options) + "\n"


def build_qwen2_tokenizer(out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE,
                          system_message: str = INTERNVL_SYSTEM_MESSAGE) -> Path:
    """Write the tokenizer files into ``out_dir`` (created if needed) and return it.

    ``vocab_size`` counts the learned tokens (vocab.json); the twelve special tokens take the
    next ids, ``vocab_size`` to ``vocab_size + 11``. ``system_message`` is the chat template's
    system turn when a conversation brings none.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe(vocab_size)
    atomic_write_text(out / "vocab.json", _json(vocab))
    # GPT-2's format: a version line, then one merge a line. Byte-level tokens hold no space
    # (a space byte is "Ġ"), so a space separates the two halves unambiguously.
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    atomic_write_text(out / "tokenizer.json", tokenizer_json(vocab, merges))
    atomic_write_text(out / "tokenizer_config.json",
                      _json(tokenizer_config(vocab_size, system_message), indent=2, sort_keys=True))
    # as Qwen2-Instruct ships it: no bos, no unk
    atomic_write_text(out / "special_tokens_map.json",
                      _json(special_tokens_map(ADDITIONAL_SPECIAL_TOKENS, eos=EOS, pad=PAD), indent=2, sort_keys=True))
    return out


def qwen2_generation_config(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The generation_config.json entries that make a model stop and pad as Qwen2-Instruct does.

    generate() stops on any id of ``eos_token_id`` when it is a list: <|im_end|> ends a chat
    turn, <|endoftext|> a plain continuation. Padding uses <|endoftext|>, which the model never
    has to produce inside a reply.
    """
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2_STOP_TOKENS}
    # transformers gives None or the unk id for a token it does not know; either way it is not that token.
    missing = [t for t, i in ids.items() if not isinstance(i, int) or tokenizer.convert_ids_to_tokens(i) != t]
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)}: not a Qwen2 tokenizer")
    return {"eos_token_id": [ids[token] for token in QWEN2_STOP_TOKENS], "pad_token_id": ids[PAD]}
