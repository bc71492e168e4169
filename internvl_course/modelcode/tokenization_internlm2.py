"""InternLM2's slow tokenizer: a sentencepiece ``tokenizer.model`` behind the transformers API.

InternVL2-2B ships a slow ``InternLM2Tokenizer`` on a sentencepiece model, and LMDeploy loads
tokenizers with ``use_fast=False`` (the internvl-course repository's docs/design.md, "LMDeploy"),
so every model directory needs this class. It is written for this kit, copied into each model
directory as remote code, and works on transformers 4.48 (``PreTrainedTokenizer`` in
tokenization_utils) and 5.x (the same name in tokenization_python): it only uses the hooks both
versions share.

Special tokens (``<|im_start|>``, ``<img>``, ...) are pieces of the sentencepiece model itself
(user-defined symbols, see ``internvl_course.tiny.internlm2_tokenizer``) and are also listed in
``added_tokens_decoder``, so transformers cuts them out of the text before sentencepiece sees it
and each one is a single token with the id the model file gives it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import sentencepiece as spm
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}


def portable_special_tokens(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Accept the extra special tokens of a tokenizer_config.json saved by transformers 5.

    Transformers 5 saves them as a list under ``extra_special_tokens``; 4.48 reads that key as a
    dict of named tokens and fails on a list. Both versions take ``additional_special_tokens``,
    so a directory saved in the course env still loads in the train env.
    """
    if isinstance(kwargs.get("extra_special_tokens"), list):
        kwargs["additional_special_tokens"] = kwargs.pop("extra_special_tokens")
    return kwargs


class InternLM2Tokenizer(PreTrainedTokenizer):
    """Sentencepiece tokenizer with InternLM2's names: ``<s>`` first, ``</s>`` also pads.

    Defaults follow internlm2-chat's tokenizer_config.json: bos ``<s>``, eos and pad ``</s>``,
    unk ``<unk>``, a bos added in front of every encoded text and no eos at the end.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    # Left padding, as InternLM2's fast tokenizer: batched generation appends on the right.
    padding_side = "left"
    _auto_class = "AutoTokenizer"

    def __init__(
        self,
        vocab_file: str,
        unk_token: str = "<unk>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str = "</s>",
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        # The base __init__ already asks for the vocabulary, so the model must be loaded first.
        self.vocab_file = vocab_file
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **portable_special_tokens(kwargs),
        )

    # datasets and multiprocessing copy tokenizers by pickling them, and a SentencePieceProcessor
    # cannot be pickled: carry the model's bytes instead and load them again on the other side.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["sp_model"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(model_proto=state["sp_model"])

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Decode runs of ordinary pieces with sentencepiece and keep special tokens verbatim.

        Sentencepiece would print control tokens (``<s>``) as nothing and ``<unk>`` as " ⁇ ",
        while the fast tokenizer prints them as written; passing them through keeps both equal.
        """
        verbatim = set(self.all_special_tokens) | set(self.added_tokens_encoder)
        parts: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in verbatim:
                parts += [self.sp_model.decode_pieces(run), token]
                run = []
            else:
                run.append(token)
        parts.append(self.sp_model.decode_pieces(run))
        return "".join(parts)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        ids = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            ids += bos + token_ids_1 + eos
        return ids

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """InternLM2 has no segment embeddings: every position is type 0."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Copy ``tokenizer.model`` (or write it from memory if the file has gone)."""
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"cannot save the tokenizer vocabulary: {save_directory} is not a directory")
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(out):
                shutil.copyfile(self.vocab_file, out)
        else:
            with open(out, "wb") as f:
                f.write(self.sp_model.serialized_model_proto())
        return (out,)
