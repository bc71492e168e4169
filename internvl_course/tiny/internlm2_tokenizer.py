"""Build the kit's own InternVL2-2B-compatible tokenizer from the kit's own text.

``build_tokenizer(out_dir)`` trains a small sentencepiece unigram model on
``corpus.corpus_sentences()`` and writes the files OpenGVLab/InternVL2-2B carries for its
tokenizer: ``tokenizer.model``, ``tokenizer_config.json`` (with ``auto_map`` and the chat
template), ``special_tokens_map.json`` and the two ``tokenization_internlm2*.py`` files.
The same inputs always give the same bytes, so a rebuilt model directory does not change.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import sentencepiece as spm

from internvl_course.data.words import corpus_dialogues, corpus_sentences
from internvl_course.fileio import atomic_write_bytes, atomic_write_text, json_text
from internvl_course.modelcode.conversation import INTERNVL_SYSTEM_MESSAGE, get_conv_template
from internvl_course.paths import MODELCODE

CODE_FILES = ("tokenization_internlm2.py", "tokenization_internlm2_fast.py")

# 1280 pieces: 3 control + 15 special + 256 byte pieces + about a thousand learned ones. The
# training text (about 140k characters, 460 distinct) supports at most about 1630 unigram
# pieces; near that limit the extra pieces are whole template phrases rather than words.
DEFAULT_VOCAB_SIZE = 1280

# The special tokens of InternVL2-2B in the order of their ids there, 92538-92552 (its
# tokenizer_config.json; InternVL's internlm2-chat template stops on 92542 <|im_end|> and
# 92543 <|im_start|>): InternLM2-chat's six, then the nine InternVL adds. Here: ids 3-17.
INTERNLM2_SPECIAL = (
    "<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>",
)
INTERNVL_SPECIAL = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
SPECIAL_TOKENS = INTERNLM2_SPECIAL + INTERNVL_SPECIAL
# internlm2-chat's tokenizer_config.json lists its six from <|im_start|> down; InternVL's follow.
ADDITIONAL_SPECIAL_TOKENS = tuple(reversed(INTERNLM2_SPECIAL)) + INTERNVL_SPECIAL

# Printable ASCII and common Chinese punctuation are pieces even where the corpus lacks them,
# so that markup such as "<image>" or "[[1, 2]]" stays a few short tokens rather than bytes.
REQUIRED_CHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + "，。！？、；：“”‘’（）《》【】…—·"

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
PAD = EOS  # internlm2-chat pads with </s>
# The max_length XTuner's InternVL2-2B config trains with (docs/design.md, "The original tutorial and FoodieQA").
MODEL_MAX_LENGTH = 8192

# The chat template exactly as the kit's conversation.py (and so chat()) writes the prompt: a
# system turn (the template's default system message when none is given), each message closed by
# the template's separator, and the assistant's role to ask for a reply. There is no bos in the
# text: chat() and LMDeploy both add it when they tokenize the prompt (add_bos_token), and a bos
# in the template would make LMDeploy warn about a duplicate bos on every request. So
# tokenizer(apply_chat_template(..., tokenize=False)) gives chat()'s ids.
def chat_template(system_message: str | None = None, template: str = "internlm2-chat") -> str:
    """The Jinja chat template of conversation template ``template``, with ``system_message`` as
    the system turn when a conversation brings none (default: the template's own; a fine-tuned
    model gets the one it was trained with: convert.py)."""
    conv = get_conv_template(template)
    system_message = conv.system_message if system_message is None else system_message

    def quoted(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

    system_prefix = conv.system_template.split("{system_message}")[0]
    user, assistant = conv.roles
    if (user, assistant) == ("<|im_start|>user\n", "<|im_start|>assistant\n"):  # ChatML: the role is in the text
        turn = "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + " + quoted(conv.sep) + " }}"
    else:
        turn = ("{% if message['role'] == 'user' %}{{ " + quoted(user) + " + message['content'] + " + quoted(conv.sep)
                + " }}{% else %}{{ " + quoted(assistant) + " + message['content'] + " + quoted(conv.sep) + " }}{% endif %}")
    return (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}"
        "{% set system_message = " + json.dumps(system_message, ensure_ascii=False) + " %}"
        "{% set loop_messages = messages %}"
        "{% endif %}"
        "{{ " + quoted(system_prefix) + " + system_message + " + quoted(conv.sep) + " }}"
        "{% for message in loop_messages %}" + turn + "{% endfor %}"
        "{% if add_generation_prompt %}{{ " + quoted(assistant) + " }}{% endif %}"
    )


CHAT_TEMPLATE = chat_template()


XTUNER_SYSTEM_MESSAGE = "You are an AI assistant whose name is InternLM (书生·浦语)."  # docs/design.md, "XTuner 0.2.0"
# What "<image>" becomes before tokenizing (one context token stands for the 256 per tile).
IMAGE_IN_PROMPT = "<img><IMG_CONTEXT></img>"


def training_sentences() -> list[str]:
    """The corpus, plus each of its questions and answers as a whole internlm2-chat prompt.

    Every prompt the model sees carries the template and a system message (InternVL's in
    chat(), XTuner's in training), so the tokenizer should learn them as whole words. The
    unigram trainer does not cut a long phrase repeated verbatim into words by itself, which is
    why the words of the Chinese system message are also glossary entries in corpus.py.
    """
    prompts = []
    for i, (question, answer) in enumerate(corpus_dialogues()):
        conv = get_conv_template("internlm2-chat")
        conv.system_message = XTUNER_SYSTEM_MESSAGE if i % 2 else INTERNVL_SYSTEM_MESSAGE
        conv.append_message(conv.roles[0], f"{IMAGE_IN_PROMPT}\n{question}")
        conv.append_message(conv.roles[1], answer)
        prompts.append(conv.get_prompt())
    return corpus_sentences() + prompts


def train_sentencepiece(vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0) -> bytes:
    """Train the unigram model and return its bytes.

    Deterministic: one thread, no input sampling or shuffling, and sentences fed from memory (a
    file input would record its path in the model). ``seed`` seeds sentencepiece's generator;
    with these options training draws no random numbers (seeds 0 and 1 give the same bytes).
    Identity normalisation, no dummy prefix and no whitespace cleanup keep
    decode(encode(text)) == text; byte fallback lets any character encode; digits are single
    pieces, so numbers read digit by digit.
    """
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        user_defined_symbols=list(SPECIAL_TOKENS),
        required_chars=REQUIRED_CHARS,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return model.getvalue()


def special_token(content: str) -> dict[str, Any]:
    """A special token as tokenizer files describe it: matched as it is, never stripped or split."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def tokenizer_config(sp: spm.SentencePieceProcessor, template: str = "internlm2-chat") -> dict[str, Any]:
    """tokenizer_config.json: InternVL2-2B's keys, with the ids the sentencepiece model gives and
    the chat template of conversation template ``template``."""
    ids = {token: sp.piece_to_id(token) for token in (UNK, BOS, EOS) + SPECIAL_TOKENS}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): special_token(token) | {"special": True} for token, i in ids.items()},
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        "bos_token": BOS,
        "chat_template": chat_template(template=template),
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": PAD,
        "tokenizer_class": "InternLM2Tokenizer",
        "unk_token": UNK,
    }


def special_tokens_map(additional: tuple[str, ...] = (), **named: str) -> dict[str, Any]:
    """special_tokens_map.json, which InternVL2 checkpoints ship beside tokenizer_config.json
    (loaders without ``added_tokens_decoder`` read it): ``named`` as ``bos_token=...`` and so on."""
    return {"additional_special_tokens": list(additional)} | {
        f"{role}_token": special_token(content) for role, content in named.items()}


def build_tokenizer(out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0,
                    model: bytes | None = None, template: str = "internlm2-chat") -> Path:
    """Write the tokenizer files into ``out_dir`` (created if needed) and return it.

    ``model``: a trained sentencepiece model to use instead of training one. Trained weights
    belong to the exact vocabulary they were trained with, and another sentencepiece version may
    train a different one from the same text, so the kit ships the base's tokenizer.model.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else train_sentencepiece(vocab_size, seed)
    atomic_write_bytes(out / "tokenizer.model", model)
    config = tokenizer_config(spm.SentencePieceProcessor(model_proto=model), template)
    atomic_write_text(out / "tokenizer_config.json", json_text(config))
    atomic_write_text(out / "special_tokens_map.json", json_text(special_tokens_map(ADDITIONAL_SPECIAL_TOKENS, bos=BOS, eos=EOS, pad=PAD, unk=UNK)))
    for name in CODE_FILES:
        shutil.copyfile(MODELCODE / name, out / name)
    return out
