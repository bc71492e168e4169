"""InternLM2's fast tokenizer: the same sentencepiece model, run by the ``tokenizers`` library.

A model directory carries only ``tokenizer.model`` (as InternVL2-2B does), so when there is no
``tokenizer.json`` this class rebuilds the sentencepiece model as a ``tokenizers`` pipeline
itself, instead of relying on transformers' converter registry (which differs between 4.48 and
5.x and has no entry for this class). It gives the same ids as ``InternLM2Tokenizer`` for the
kit's models: unigram, byte fallback, identity normalisation, no dummy prefix, spaces kept
(``internvl_course.tiny.internlm2_tokenizer``). Written for this kit; copied into model directories.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import sentencepiece as spm
from tokenizers import Tokenizer, decoders, normalizers, processors
from tokenizers.models import Unigram
from transformers import PreTrainedTokenizerFast

from .tokenization_internlm2 import InternLM2Tokenizer, portable_special_tokens

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}

# Score for pieces sentencepiece never matches against text (control, unknown, unused and byte
# pieces): far below any real log-probability, so literal text such as "<0x41>" is split into
# ordinary pieces, as sentencepiece splits it, whenever each of its characters is a piece (the
# kit's models make every printable ASCII character one). The byte fallback still emits byte
# pieces by name, whatever their score.
_NEVER_MATCHED = -1e9


def _check_supported(sp: spm.SentencePieceProcessor) -> None:
    """Refuse models this conversion would tokenize differently from sentencepiece."""
    try:
        sp.nbest_encode_as_ids("a", 1)  # sentencepiece offers n-best only for unigram models
    except RuntimeError as err:
        raise ValueError("InternLM2TokenizerFast can only rebuild a unigram sentencepiece model") from err
    probe = "Ａ  b"  # a full-width letter and a double space survive only identity normalisation
    pieces = sp.encode(probe, out_type=str)
    if sp.decode(sp.encode(probe)) != probe or pieces[0].startswith("▁"):
        raise ValueError(
            "InternLM2TokenizerFast needs a sentencepiece model trained with "
            "normalization_rule_name=identity, remove_extra_whitespaces=False and add_dummy_prefix=False"
        )


def backend_from_sentencepiece(vocab_file: str) -> Tokenizer:
    """Build a ``tokenizers.Tokenizer`` that splits text exactly as the sentencepiece model does.

    Both run a Viterbi search over the same pieces and scores on text whose spaces became "▁";
    characters with no piece fall back to their UTF-8 bytes; decoding turns "▁" back into spaces
    and byte pieces back into characters.
    """
    sp = spm.SentencePieceProcessor(model_file=vocab_file)
    _check_supported(sp)
    vocab: list[tuple[str, float]] = []
    for i in range(sp.get_piece_size()):
        never = sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i)
        vocab.append((sp.id_to_piece(i), _NEVER_MATCHED if never else sp.get_score(i)))
    backend = Tokenizer(Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return backend


def _post_processor_flag(name: str) -> property:
    """A flag whose change rebuilds the post-processor, so that the next encode adds (or stops
    adding) the bos/eos token at once."""

    def get(self) -> bool:
        return getattr(self, f"_{name}")

    def set_(self, value: bool) -> None:
        setattr(self, f"_{name}", value)
        self.update_post_processor()

    return property(get, set_)


class InternLM2TokenizerFast(PreTrainedTokenizerFast):
    """Fast twin of ``InternLM2Tokenizer``: same files, same special tokens, same ids."""

    vocab_files_names = VOCAB_FILES_NAMES
    slow_tokenizer_class = InternLM2Tokenizer
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # as InternLM2's own fast tokenizer
    _auto_class = "AutoTokenizer"

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        unk_token: str = "<unk>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str = "</s>",
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        has_json = tokenizer_file is not None and os.path.isfile(tokenizer_file)
        if not has_json and kwargs.get("tokenizer_object") is None:
            if vocab_file is None:
                raise ValueError("InternLM2TokenizerFast needs tokenizer.json or tokenizer.model")
            kwargs["tokenizer_object"] = backend_from_sentencepiece(vocab_file)
        self.vocab_file = vocab_file
        self._add_bos_token = add_bos_token
        self._add_eos_token = add_eos_token
        super().__init__(
            vocab_file=vocab_file,
            tokenizer_file=tokenizer_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **portable_special_tokens(kwargs),
        )
        self.update_post_processor()

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Hand the files to ``__init__`` untouched (transformers 5 calls this before ``__init__``).

        Its default would unpack tokenizer.model into vocabulary keyword arguments, which this
        class does not take and which would then be written into tokenizer_config.json.
        """
        return kwargs

    def update_post_processor(self) -> None:
        """Add bos (and eos) around encoded text as the flags say, like the slow tokenizer."""

        def sequence(name: str, type_id: int) -> list[str]:
            bos = [f"{self.bos_token}:{type_id}"] if self.add_bos_token else []
            eos = [f"{self.eos_token}:{type_id}"] if self.add_eos_token else []
            return bos + [f"${name}:{type_id}"] + eos

        special = [(self.bos_token, self.bos_token_id)] if self.add_bos_token else []
        special += [(self.eos_token, self.eos_token_id)] if self.add_eos_token else []
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join(sequence("A", 0)),
            pair=" ".join(sequence("A", 0) + sequence("B", 1)),
            special_tokens=special,
        )

    add_bos_token = _post_processor_flag("add_bos_token")
    add_eos_token = _post_processor_flag("add_eos_token")

    @property
    def can_save_slow_tokenizer(self) -> bool:
        return bool(self.vocab_file) and os.path.isfile(self.vocab_file)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Copy ``tokenizer.model`` next to tokenizer.json, so the slow class loads the copy too."""
        if not self.can_save_slow_tokenizer:
            raise ValueError("this fast tokenizer was not loaded from a tokenizer.model, so it cannot save one")
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)

    def _save_pretrained(
        self,
        save_directory: str | os.PathLike,
        file_names: tuple[str, ...],
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
    ) -> tuple[str, ...]:
        """Save tokenizer.json and tokenizer.model: transformers 5 would write only the former."""
        saved = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        wanted = legacy_format is not False and self.can_save_slow_tokenizer
        if wanted and not any(name.endswith("tokenizer.model") for name in saved):
            saved += self.save_vocabulary(str(save_directory), filename_prefix)
        return saved
