"""Conversation templates: how ``chat()`` turns a system message and turns into one prompt.

InternVL2 names its template in config.json ("internlm2-chat" for InternVL2-2B and -8B, "Hermes-2"
for InternVL2-1B, "phi3-chat" for InternVL2-4B; every InternVL2.5 model uses "internvl2_5").
Every template here has the same shape:

    {system_start}{system message}{end}{user}{question}{end}{assistant}{answer}{end}...{assistant}

Each finished message is closed by ``sep``, the LLM's end-of-turn token, with no newline after
it (InternVL2.5's template alone puts a newline after each ``<|im_end|>``). That is InternVL2's own format (its conversation.py joins turns MPT-style), the text XTuner's
InternVL dataset trains on (it overrides XTuner's generic internlm2_chat template, which has
newlines, with exactly this), and what the tokenizer's chat_template writes for LMDeploy. So the
prompt ``chat()`` builds, the one XTuner trains on and the one LMDeploy serves are the same text.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

# The system message InternVL2's own templates use (OpenGVLab InternVL2 model cards).
INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

# InternVL2.5's system message (OpenGVLab InternVL2.5 model cards and conversation.py).
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)


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


_TEMPLATES = {
    # InternLM2-chat (InternVL2-2B, -8B, -26B): <|im_start|>role\n ... <|im_end|>
    "internlm2-chat": Conversation(
        name="internlm2-chat",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep="<|im_end|>",
    ),
    # ChatML as in Nous Hermes 2 (InternVL2-1B, Qwen2): the same markers as internlm2-chat.
    "Hermes-2": Conversation(
        name="Hermes-2",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep="<|im_end|>",
    ),
    # Phi-3 (InternVL2-4B): <|role|>\n ... <|end|>
    "phi3-chat": Conversation(
        name="phi3-chat",
        system_template="<|system|>\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|user|>\n", "<|assistant|>\n"),
        sep="<|end|>",
    ),
    # InternVL2.5 (every size): ChatML with a newline after each turn and its own system message.
    "internvl2_5": Conversation(
        name="internvl2_5",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL2_5_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep="<|im_end|>\n",
    ),
}


def get_conv_template(name: str) -> Conversation:
    """A fresh, empty copy of the named template."""
    if name not in _TEMPLATES:
        raise KeyError(f"unknown conversation template {name!r}; known: {sorted(_TEMPLATES)}")
    return _TEMPLATES[name].copy()
