"""Conversation templates and image markers: how ``chat()`` turns a conversation into one prompt.

InternVL2 names its template in config.json ("internlm2-chat" for InternVL2-2B and -8B, "Hermes-2"
for InternVL2-1B, "phi3-chat" for InternVL2-4B; every InternVL2.5 model uses "internvl2_5").
Every template here has the same shape:

    {system_start}{system message}{end}{user}{question}{end}{assistant}{answer}{end}...{assistant}

Each finished message is closed by ``sep``, the LLM's end-of-turn token, with no newline after
it (InternVL2.5's template alone puts a newline after each ``<|im_end|>``). That is InternVL2's own format (its conversation.py joins turns MPT-style), the text XTuner's
InternVL dataset trains on (it overrides XTuner's generic internlm2_chat template, which has
newlines, with exactly this), and what the tokenizer's chat_template writes for LMDeploy. So the
prompt ``chat()`` builds, the one XTuner trains on and the one LMDeploy serves are the same text.

A picture enters the text as ``<image>``, which ``expand_images`` replaces by ``<img>``, one
``<IMG_CONTEXT>`` placeholder per image token and ``</img>``; the model puts the picture's tokens
where the placeholders are. The kit's package builds its prompts (pretraining, lessons, convert)
from this module too, so that the text is written in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

# The system message InternVL2's own templates use (OpenGVLab InternVL2 model cards).
INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

# InternVL2.5's system message (OpenGVLab InternVL2.5 model cards and conversation.py).
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)

# The markers of a picture in the prompt (InternVL2's tokenizer has the last three as special tokens).
IMAGE_MARKER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"


def expand_images(text: str, tiles_per_image: Sequence[int], num_image_token: int, start: str = IMG_START_TOKEN,
                  end: str = IMG_END_TOKEN, context: str = IMG_CONTEXT_TOKEN) -> str:
    """Replace the first ``len(tiles_per_image)`` ``<image>`` markers, in order, by each picture's
    tokens: ``<img>`` + ``<IMG_CONTEXT>`` x (``num_image_token`` x its tiles) + ``</img>``.

    A picture needs a marker: fewer markers than pictures is an error here rather than, later, a
    count of placeholders that does not match the image features. Markers beyond the pictures
    stay text (a later turn of a conversation whose picture was not passed again).
    """
    markers = text.count(IMAGE_MARKER)
    if markers < len(tiles_per_image):
        raise ValueError(f"{len(tiles_per_image)} picture(s) but the prompt has {markers} {IMAGE_MARKER} marker(s): "
                         f"put one {IMAGE_MARKER} where each picture goes")
    for tiles in tiles_per_image:
        text = text.replace(IMAGE_MARKER, start + context * (num_image_token * tiles) + end, 1)
    return text


@dataclass
class Conversation:
    """A template plus the messages of one conversation (``None`` marks the reply to generate)."""

    name: str
    system_template: str
    system_message: str
    roles: tuple[str, str]
    sep: str
    messages: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def stop_token(self) -> str:
        """The token that ends a reply: generation stops there and the answer is cut there
        (``sep`` without the newline InternVL2.5's template adds after it)."""
        return self.sep.strip()

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append((role, message))

    def get_prompt(self) -> str:
        prompt = self.system_template.format(system_message=self.system_message) + self.sep
        for role, message in self.messages:
            prompt += role if message is None else role + message + self.sep
        return prompt

    def copy(self) -> "Conversation":
        return copy.deepcopy(self)


def _chatml(name: str, system_message: str = INTERNVL_SYSTEM_MESSAGE, sep: str = "<|im_end|>") -> Conversation:
    """ChatML turns: ``<|im_start|>role\\n ... <|im_end|>``."""
    return Conversation(name=name, system_template="<|im_start|>system\n{system_message}",
                        system_message=system_message, roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
                        sep=sep)


_TEMPLATES = {
    # InternLM2-chat (InternVL2-2B, -8B, -26B).
    "internlm2-chat": _chatml("internlm2-chat"),
    # ChatML as in Nous Hermes 2 (InternVL2-1B, Qwen2): the same markers as internlm2-chat.
    "Hermes-2": _chatml("Hermes-2"),
    # Phi-3 (InternVL2-4B): <|role|>\n ... <|end|>
    "phi3-chat": Conversation(
        name="phi3-chat",
        system_template="<|system|>\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|user|>\n", "<|assistant|>\n"),
        sep="<|end|>",
    ),
    # InternVL2.5 (every size): ChatML with a newline after each turn and its own system message.
    "internvl2_5": _chatml("internvl2_5", INTERNVL2_5_SYSTEM_MESSAGE, sep="<|im_end|>\n"),
}


def get_conv_template(name: str) -> Conversation:
    """A fresh, empty copy of the named template."""
    if name not in _TEMPLATES:
        raise KeyError(f"unknown conversation template {name!r}; known: {sorted(_TEMPLATES)}")
    return _TEMPLATES[name].copy()
