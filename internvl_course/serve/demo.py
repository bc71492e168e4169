"""The web demo of lesson 04: chat with InternVL2 about a picture, in a browser.

``internvl-course demo`` (``make demo``) serves it on http://127.0.0.1:1096; notebooks and tests
call ``build_demo`` and launch the Blocks themselves. It fixes what went wrong in the original
tutorial's demo (docs/design.md, "LMDeploy", "The original tutorial and FoodieQA" and "Known pain
points"):

- every browser tab has its own conversation, kept in ``gr.State``: there is no chat object
  shared by all visitors, so two students never see each other's questions;
- temperature, top-p and the reply length go into a fresh ``GenerationConfig`` on every turn,
  and temperature 0 means greedy decoding, so the sliders change what the model does;
- an upload that is not a picture, or is too large, gets a message on the page instead of an
  error deep inside gradio's image decoding;
- a question longer than ``MAX_QUESTION_CHARS`` cannot be typed into the page and is refused,
  naming the limit, when it comes through the API: one model answers every tab, one turn at a
  time, and a 20,000-character question once held it for 20 s and 6.6 GB;
- turns are answered first come, first served (``chat`` runs one at a time in gradio's queue,
  which shows each waiting tab its place): a tab waits for the turns before its own, not for
  every turn a busy tab asks next, and picture uploads, "clear" and "start over" never wait;
- it binds 127.0.0.1 and never asks gradio for a public share link;
- the header says which model and which backend answer, and why that backend was chosen.

The gradio_client API (see "Use via API" at the bottom of the page)::

    client.predict(handle_file("dish.jpg"), api_name="/set_picture")
    client.predict("What is on the plate?", 0.0, 1.0, 128, api_name="/chat")
    client.predict(api_name="/clear")      # a new conversation about the same picture
    client.predict(api_name="/restart")    # no picture, no conversation
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from internvl_course.serve.chat import ChatPipeline, GenerationConfig, PromptTooLongError, Session, pipeline
from internvl_course.paths import food_data_dir, tiny_model_dir
from internvl_course.model.preprocess import ImageLoadError, open_image

DEFAULT_PORT = 1096
DEFAULT_MAX_UPLOAD_MB = 20
#: The longest question, in characters. A question about a picture is a sentence or a paragraph;
#: 2,000 characters of Chinese came to about 1,600 tokens for the tiny model's tokenizer, which
#: leaves room in InternVL2's 8,192-token context for the largest picture (13 tiles of 256
#: tokens) and the longest reply the slider allows (1,024); the tiny model read them and a
#: picture in about 4 s on 2 shared CPU cores. Token counts are chat.py's to check
#: (``PromptTooLongError``): this limit keeps every turn cheap before anything is counted.
MAX_QUESTION_CHARS = 2000

#: Questions offered under the chat box, Chinese first as in the course.
EXAMPLE_QUESTIONS = (
    "这道菜叫什么名字？",
    "盘子里有什么？分别是什么颜色的？",
    "这道菜是哪个菜系的？",
    "What dish is this, and what is it made of?",
    "Describe the picture in one sentence.",
)

#: The example row shows one dish per cuisine, at most this many (China's eight great cuisines).
MAX_EXAMPLE_PICTURES = 8

#: What a picture can be for the demo: a file path, or a picture already in memory.
Picture = str | Path | Image.Image
#: One entry of the example row: the picture and its caption.
ExamplePicture = tuple[Picture, str]
#: A Chatbot message in gradio's messages format.
Message = dict[str, str]


@dataclass(frozen=True)
class PictureChat:
    """What one browser tab is talking about: its picture and the chat session so far.

    Each tab holds its own (``ChatTab`` in ``gr.State``). ``session`` is None until the first
    question, which is when the picture goes to the model.
    """

    picture: Picture | None = None
    picture_name: str = ""
    session: Session | None = None

    @property
    def turns(self) -> int:
        return len(self.session.history) if self.session is not None else 0

    def messages(self) -> list[Message]:
        """The finished turns as Chatbot messages."""
        shown: list[Message] = []
        for question, answer in self.session.history if self.session is not None else ():
            shown += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return shown


class ChatTab:
    """One browser tab's slot in ``gr.State``: the conversation it is having right now.

    Handlers swap ``conversation`` in place rather than return a new state. An answer still
    streaming can then see that its conversation was replaced (a new picture, clear, start over)
    and stop, instead of writing the old conversation back when it finishes.
    """

    def __init__(self) -> None:
        self.conversation = PictureChat()


def _scene_examples() -> list[ExamplePicture]:
    """A few dishes drawn with ``scenes.py``, for when the food dataset is not there."""
    from internvl_course.data.drawing import Piece, Scene, render

    dishes = [
        (Scene(pieces=(Piece("crescent", "white", 6, 0.22),), plate="steamer"), "蒸饺 dumplings"),
        (Scene(pieces=(Piece("noodle", "yellow", 8, 0.5), Piece("leaf", "green", 3, 0.15)), plate="bowl",
               sauce=(170, 90, 50)), "牛肉面 noodles"),
        (Scene(pieces=(Piece("oval", "yellow", 4, 0.25), Piece("circle", "red", 4, 0.18))),
         "番茄炒蛋 eggs"),
        (Scene(pieces=(Piece("bun", "white", 4, 0.3),), plate="steamer"), "包子 buns"),
    ]
    return [(render(scene, seed=index), caption) for index, (scene, caption) in enumerate(dishes)]


def _dataset_examples(root: Path) -> list[ExamplePicture]:
    """One picture per cuisine from the food dataset, like the tutorial's shortcut row.

    Read from the dataset's sivqa-style JSON (its dish questions name the dish and cuisine);
    the test split first, so the examples are pictures a fine-tuned model has not trained on.
    """
    import json

    for split in ("test", "validation", "train"):
        if (root / f"{split}.json").is_file():
            items = json.loads((root / f"{split}.json").read_text(encoding="utf-8"))
            break
    else:
        return []
    by_cuisine: dict[str, ExamplePicture] = {}
    for item in items:
        meta = item.get("food_meta", {})
        if item.get("question_type") == "dish" and meta.get("food_type") not in by_cuisine:
            by_cuisine[meta["food_type"]] = (root / meta["food_file"], f"{meta['food_name']} · {meta['food_type']}")
    return list(by_cuisine.values())[:MAX_EXAMPLE_PICTURES]


def example_pictures(example_images: Sequence[Picture | ExamplePicture] | None = None) -> list[ExamplePicture]:
    """The example row: the given pictures, else the food dataset's, else drawn ones."""
    if example_images is None:
        return _dataset_examples(food_data_dir()) or _scene_examples()
    pictures: list[ExamplePicture] = []
    for index, item in enumerate(example_images):
        if isinstance(item, tuple):
            pictures.append(item)
        elif isinstance(item, Image.Image):
            pictures.append((item, f"example {index + 1}"))
        else:
            pictures.append((item, Path(item).stem))
    return pictures


def check_upload(path: str | None, max_upload_mb: float) -> str | None:
    """Why an uploaded file cannot be chatted about (a message for the page), or None if it can."""
    if not path or not os.path.isfile(path):
        return "⚠️ 上传失败：没有收到文件。The upload did not arrive: please try again."
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > max_upload_mb:
        return (f"⚠️ 图片太大：{size_mb:.1f} MB，上限 {max_upload_mb:g} MB。 The picture is {size_mb:.1f} MB; "
                f"this demo accepts up to {max_upload_mb:g} MB. Shrink it (for example save it as JPEG) "
                "and upload again.")
    try:
        open_image(path)
    except ImageLoadError:
        return ("⚠️ 这不是图片。 This file is not a picture the model can read: "
                "upload a JPEG, PNG, WebP, BMP, GIF or TIFF file.")
    return None


def _settings_text(config: GenerationConfig) -> str:
    if not config.do_sample:
        return "greedy (temperature 0: the same answer every time)"
    return f"sampling, temperature {config.temperature:g}, top-p {config.top_p:g}"


def header_markdown(pipe: ChatPipeline) -> str:
    """Which model and backend answer, and why: the first thing to check when answers surprise."""
    lines = ["# InternVL2 看图对话 · Chat about a picture",
             f"**模型 Model** `{pipe.model_path.name}` · **后端 Backend** `{pipe.backend}` ({pipe.reason})"]
    if pipe.model_path.resolve() == tiny_model_dir().resolve():
        lines.append("课程内置的迷你模型：在 CPU 上几秒就能回答，但它太小，答案不必当真。 "
                     "This is the kit's embedded tiny model: quick on a CPU, far too small to answer well. "
                     "Start the demo with `--model` pointing at InternVL2-2B for real answers.")
    return "\n\n".join(lines)


def build_demo(pipe: ChatPipeline | None = None, model_path: str | Path | None = None,
               example_images: Sequence[Picture | ExamplePicture] | None = None,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> gr.Blocks:
    """The demo's page, ready to ``launch()``; loads a pipeline for ``model_path`` if none is given.

    ``example_images``: pictures (or (picture, caption) pairs) for the example row; by default
    the food dataset's when it exists, else a few drawn dishes. Uploads larger than
    ``max_upload_mb`` or not decodable as pictures are refused with a message on the page.
    """
    if pipe is not None and model_path is not None:
        raise ValueError("give either a loaded pipe or a model_path to load, not both")
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    pipe = pipe if pipe is not None else pipeline(model_path)
    examples = example_pictures(example_images)

    def start(tab: ChatTab, picture: Picture, name: str) -> tuple[list[Message], str]:
        """A new picture starts a new conversation (the model sees a picture only in the first turn)."""
        tab.conversation = PictureChat(picture, name)
        return [], f"新图片：{name}。请提问。 New picture ({name}): ask about it."

    def set_picture(upload: dict[str, Any] | None, tab: ChatTab) -> tuple[Any, ...]:
        """Check an upload (raw: gradio has not decoded it) and make it this tab's picture.

        A refused upload is removed from the page and the conversation carries on unchanged.
        """
        path = (upload or {}).get("path")
        problem = check_upload(path, max_upload_mb)
        if problem is not None:
            return None, gr.skip(), problem
        return gr.skip(), *start(tab, path, upload.get("orig_name") or Path(path).name)

    def choose_example(tab: ChatTab, evt: gr.SelectData) -> tuple[Any, ...]:
        """The index, not the path the browser reports, picks the picture: clients name no server files."""
        picture, caption = examples[evt.index]
        return open_image(picture), *start(tab, picture, caption)

    def chat(question: str, temperature: float, top_p: float, max_new_tokens: float,
             tab: ChatTab) -> Iterator[tuple[Any, ...]]:
        """One turn, streamed: yields (chat so far, question box, status)."""
        conversation = tab.conversation
        question = (question or "").strip()
        if not question:
            yield conversation.messages(), "", "⚠️ 请先输入问题。 Type a question first."
            return
        if len(question) > MAX_QUESTION_CHARS:  # the page's box stops typing there; the API does not
            raise gr.Error(f"问题太长 The question is {len(question):,} characters long; this demo takes at most "
                           f"{MAX_QUESTION_CHARS:,} (MAX_QUESTION_CHARS). Shorten it and ask again.")
        # The sliders' bounds (checked by gradio, also for API calls) keep these valid.
        config = GenerationConfig(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                  top_p=float(top_p))
        session = conversation.session
        prompt = (question, conversation.picture) if session is None and conversation.picture is not None else question
        shown = conversation.messages() + [{"role": "user", "content": question},
                                           {"role": "assistant", "content": ""}]
        try:
            for text, session in pipe.stream_chat(prompt, session=conversation.session, gen_config=config):
                if tab.conversation is not conversation:  # replaced while answering: drop this answer
                    yield tab.conversation.messages(), gr.skip(), gr.skip()
                    return
                shown[-1]["content"] = text
                yield shown, "", "正在回答… Answering…"
        except (ImageLoadError, FileNotFoundError) as err:  # the cached upload was cleaned away, say
            yield conversation.messages(), question, f"⚠️ {err} 请重新上传。 Please upload the picture again."
            return
        except PromptTooLongError as err:  # refused before the model ran: the conversation is unchanged
            yield (conversation.messages(), question,
                   f"⚠️ 对话太长 This turn does not fit the model's context: {err} On this page: press "
                   "\"Clear chat\" to start over about the same picture, or shorten the question.")
            return
        if tab.conversation is not conversation:
            yield tab.conversation.messages(), gr.skip(), gr.skip()
            return
        tab.conversation = conversation = replace(conversation, session=session)
        picture_note = " · 没有图片 no picture" if conversation.picture is None else f" · {conversation.picture_name}"
        status = (f"第 {conversation.turns} 轮 Turn {conversation.turns} · {session.response.generate_token_len} "
                  f"tokens · {_settings_text(config)}{picture_note}")
        yield conversation.messages(), "", status

    def clear(tab: ChatTab) -> tuple[list[Message], str]:
        """Forget the turns, keep the picture: start over about the same picture."""
        tab.conversation = replace(tab.conversation, session=None)
        return [], "对话已清空，图片保留。 Chat cleared; the picture stays."

    def restart(tab: ChatTab) -> tuple[None, list[Message], str]:
        tab.conversation = PictureChat()
        return None, [], "已重新开始。 Started over: upload a picture or pick an example."

    with gr.Blocks(title="InternVL2 看图对话", analytics_enabled=False) as demo:
        tab = gr.State(ChatTab())
        gr.Markdown(header_markdown(pipe), elem_id="header")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                picture = gr.Image(label="图片 Picture", type="filepath", sources=["upload", "clipboard"],
                                   height=320, elem_id="picture")
                status = gr.Markdown("上传一张图片，或点下面的示例。 Upload a picture, or click an example below.",
                                     label="status", elem_id="status")
                columns = min(4, max(1, len(examples)))  # rows of four thumbnails, captions readable
                gallery = gr.Gallery([(str(p) if isinstance(p, Path) else p, c) for p, c in examples],
                                     label="示例图片 Example pictures: click one", columns=columns,
                                     height=60 + 140 * math.ceil(len(examples) / columns), allow_preview=False,
                                     object_fit="cover", buttons=[], elem_id="examples")
                with gr.Accordion("生成参数 Generation settings", open=True):
                    temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature 温度",
                                            elem_id="temperature",
                                            info="0 = greedy: always the most likely token. Higher = more varied.")
                    top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="top-p", elem_id="top_p",
                                      info="Sample only from the most likely tokens whose probabilities add up to "
                                           "top-p (used when temperature > 0).")
                    max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label="max new tokens 最多生成",
                                               elem_id="max_new_tokens", info="The longest reply, in tokens.")
            with gr.Column(scale=1, min_width=300):
                chatbot = gr.Chatbot(label="对话 Conversation", height=560, elem_id="chatbot",
                                     buttons=["copy", "copy_all"],
                                     placeholder="先给一张图片，再提问。 Give it a picture, then ask about it.")
                with gr.Row():
                    question = gr.Textbox(label="question", show_label=False, placeholder="问点什么… Ask something…",
                                          scale=5, elem_id="question", autofocus=True,
                                          max_length=MAX_QUESTION_CHARS)
                    send = gr.Button("发送 Send", variant="primary", scale=1, min_width=90, elem_id="send")
                gr.Examples([[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="示例问题 Example questions")
                with gr.Row():
                    clear_button = gr.Button("清空对话 Clear chat", elem_id="clear")
                    restart_button = gr.Button("重新开始 Start over", elem_id="restart")

        # One turn at a time, whatever GRADIO_DEFAULT_CONCURRENCY_LIMIT says: the model answers one
        # turn at a time anyway (ChatPipeline's lock), and waiting in gradio's queue is first come,
        # first served with a place shown, where handlers waiting on that lock would be served in
        # any order and shown as busy.
        gr.on([question.submit, send.click], chat, inputs=[question, temperature, top_p, max_new_tokens, tab],
              outputs=[chatbot, question, status], api_name="chat", concurrency_limit=1)
        picture.upload(set_picture, inputs=[picture, tab], outputs=[picture, chatbot, status], preprocess=False,
                       api_name="set_picture")
        picture.clear(restart, inputs=[tab], outputs=[picture, chatbot, status], api_name="picture_removed",
                      api_visibility="private")
        gallery.select(choose_example, inputs=[tab], outputs=[picture, chatbot, status], api_visibility="private")
        chatbot.clear(clear, inputs=[tab], outputs=[chatbot, status], api_name="chat_cleared",
                      api_visibility="private")
        clear_button.click(clear, inputs=[tab], outputs=[chatbot, status], api_name="clear")
        restart_button.click(restart, inputs=[tab], outputs=[picture, chatbot, status], api_name="restart")
    return demo


def main(model: str | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
    """``internvl-course demo``: serve the demo until Ctrl+C; 0 on a clean stop, 1 if it cannot start."""
    try:
        pipe = pipeline(model)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"Cannot load the model: {err}", file=sys.stderr)
        return 1
    demo = build_demo(pipe)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Binding {host}: anyone who can reach this machine on port {port} can use the demo.")
    shown_host = "127.0.0.1" if host == "0.0.0.0" else host
    print(f"Model {pipe.model_path} on {pipe.backend}. Open http://{shown_host}:{port} (Ctrl+C stops it).")
    try:
        # max_file_size stops a huge upload at the door, before it fills the disk; anything
        # under it that is still too big for the demo gets the demo's own message.
        demo.launch(server_name=host, server_port=port, share=False, show_error=True, quiet=True,
                    max_file_size=f"{4 * DEFAULT_MAX_UPLOAD_MB}mb")
    except OSError as err:
        print(f"Cannot serve on {host}:{port}: {str(err).rstrip('.')}. Is another demo running there? "
              f"Try --port {port + 1}.", file=sys.stderr)
        return 1
    finally:
        pipe.close()
    return 0
