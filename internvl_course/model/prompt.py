"""Prompts exactly as InternVL's ``chat()`` writes them, for code that tokenizes without calling it.

Pretraining masks the loss turn by turn, the lesson-02 shape trace shows the prompt's ids, and
convert checks logits on a sample: each needs the very ids ``model.chat()`` hands ``generate()``,
or training and serving would see different text. The templates and ``expand_images`` (the one
function that turns ``<image>`` into ``<img>`` + ``<IMG_CONTEXT>`` x N + ``</img>``) live in
``modelcode/conversation.py``, which model folders carry and ``chat()`` uses; this module builds
whole conversations from them. tests/test_prompt.py proves the ids equal ``chat()``'s for every
template the kit knows.
"""

from __future__ import annotations

from collections.abc import Sequence

from internvl_course.modelcode.conversation import IMAGE_MARKER, Conversation, expand_images, get_conv_template


def with_image(question: str) -> str:
    """A first question about one picture as ``chat()`` asks it: ``<image>\\n`` in front, unless
    the question already places ``<image>`` itself."""
    return question if IMAGE_MARKER in question else f"{IMAGE_MARKER}\n{question}"


def _conversation(template: str, system_message: str | None) -> Conversation:
    conv = get_conv_template(template)
    if system_message is not None:
        conv.system_message = system_message
    return conv


def turn_texts(template: str, system_message: str | None, turns: Sequence[tuple[str, str | None]],
               tiles_per_image: Sequence[int], num_image_token: int) -> list[tuple[str, str | None]]:
    """Each turn's text as (prompt, answer), the pieces label masking needs.

    ``prompt`` is what stands before the answer (the system turn too, on the first), ending at the
    assistant's opener; ``answer`` is the answer closed by the template's end-of-turn text, or
    None for a last turn still to be generated. Joined in order they are the whole conversation
    as ``chat()`` writes it (``build_prompt``). ``system_message`` None keeps the template's own;
    the ``<image>`` markers are expanded in order, one per entry of ``tiles_per_image``
    (``num_image_token`` placeholders a tile). Each piece begins after a special token or a
    newline, where a tokenizer never merges, so tokenizing the pieces one by one gives the ids of
    the whole text.
    """
    conv = _conversation(template, system_message)
    images = list(tiles_per_image)
    pieces: list[tuple[str, str | None]] = []
    said = ""
    for question, answer in turns:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()[len(said):]
        here = min(prompt.count(IMAGE_MARKER), len(images))
        prompt = expand_images(prompt, images[:here], num_image_token)
        images = images[here:]
        conv.messages[-1] = (conv.roles[1], answer)
        pieces.append((prompt, None if answer is None else answer + conv.sep))
        said = conv.get_prompt()
    if images:
        raise ValueError(f"{len(tiles_per_image)} picture(s) but the conversation has only "
                         f"{len(tiles_per_image) - len(images)} {IMAGE_MARKER} marker(s): put one {IMAGE_MARKER} "
                         "where each picture goes (with_image(question) puts it before a first question)")
    return pieces


def build_prompt(template: str, system_message: str | None, turns: Sequence[tuple[str, str | None]],
                 tiles_per_image: Sequence[int], num_image_token: int) -> str:
    """The whole conversation as one text (see ``turn_texts``); a last answer of None leaves the
    text at the assistant's opener, where ``chat()`` starts generating."""
    pieces = turn_texts(template, system_message, turns, tiles_per_image, num_image_token)
    return "".join(prompt + (answer or "") for prompt, answer in pieces)
