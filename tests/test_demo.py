"""The gradio demo, driven through gradio_client against a demo launched on 127.0.0.1.

The tiny model's answers are not meant to make sense, so these tests check behaviour: a reply
arrives and streams, tabs keep their own conversations, bad uploads get a message, and the
sliders reach the model as a ``GenerationConfig``.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from internvl_course.serve.chat import ChatPipeline, GenerationConfig, pipeline  # noqa: E402
from internvl_course.serve.demo import PictureChat, build_demo, check_upload, example_pictures  # noqa: E402
from internvl_course.paths import tiny_model_dir  # noqa: E402
from internvl_course.data.drawing import Piece, Scene, render  # noqa: E402

#: gradio 6.31's queue warns about pandas 3 deprecations on every call: its noise, not ours.
GRADIO_QUEUE_NOISE = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
pytestmark = GRADIO_QUEUE_NOISE

#: Small replies keep the CPU time of the whole file to seconds.
SHORT = 16
#: The launched test demo refuses uploads above this; a photo-sized noise PNG is above it.
TEST_LIMIT_MB = 0.25


@functools.cache
def shared_pipeline(model_dir: Path) -> ChatPipeline:
    """One loaded tiny model per pytest process, shared by this file and test_browser.py."""
    return pipeline(model_dir, backend="transformers", quiet=True)


@pytest.fixture(scope="session")
def chat_pipe(request: pytest.FixtureRequest) -> ChatPipeline:
    """The embedded tiny model from `make setup`, or one built for this session if it is absent."""
    model_dir = tiny_model_dir()
    if not (model_dir / "config.json").is_file():
        model_dir = request.getfixturevalue("tiny_model")
    return shared_pipeline(model_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(demo: gr.Blocks) -> str:
    """Serve ``demo`` on a free port of 127.0.0.1 without blocking; returns its URL."""
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dish, a text file, a text file named like a picture, and a picture above the test limit."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("uploads")
    render(Scene(pieces=(Piece("circle", "red", 3),)), seed=0).save(root / "dish.jpg")
    (root / "notes.txt").write_text("not a picture", encoding="utf-8")
    (root / "fake.png").write_text("not a picture either", encoding="utf-8")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "big.png")
    assert (root / "big.png").stat().st_size > TEST_LIMIT_MB * 2**20
    return {p.stem: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def url(chat_pipe: ChatPipeline) -> Iterator[str]:
    demo = build_demo(chat_pipe, max_upload_mb=TEST_LIMIT_MB)
    yield launch(demo)
    demo.close()


def client(url: str) -> gradio_client.Client:
    """A new client is a new browser session: its own gr.State."""
    return gradio_client.Client(url, verbose=False)


def reply_text(chat: list[dict]) -> str:
    """The text of the last message of a Chatbot value as gradio_client returns it."""
    return "".join(part.get("text", "") for part in chat[-1]["content"])


def upload(c: gradio_client.Client, path: Path) -> tuple:
    return c.predict(gradio_client.handle_file(str(path)), api_name="/set_picture")


def ask(c: gradio_client.Client, question: str, temperature: float = 0.0, top_p: float = 1.0) -> tuple:
    return c.predict(question, temperature, top_p, SHORT, api_name="/chat")


def test_build_demo_returns_blocks_that_name_model_and_backend(chat_pipe: ChatPipeline) -> None:
    demo = build_demo(chat_pipe)
    assert isinstance(demo, gr.Blocks)
    config = str(demo.config)
    assert chat_pipe.backend in config and chat_pipe.reason in config and chat_pipe.model_path.name in config
    with pytest.raises(ValueError, match="not both"):
        build_demo(chat_pipe, model_path=chat_pipe.model_path)


def test_example_pictures_one_dish_per_cuisine_else_drawn_dishes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("INTERNVL_COURSE_ROOT", str(tmp_path))  # no data/food there yet
    drawn = example_pictures()
    assert len(drawn) >= 3 and all(caption for _, caption in drawn)

    food = tmp_path / "data" / "food"
    food.mkdir(parents=True)
    dishes = [("宫保鸡丁", "川菜"), ("麻婆豆腐", "川菜"), ("叉烧", "粤菜")]
    items = [{"question_type": kind, "food_meta": {"food_name": name, "food_type": cuisine,
                                                    "food_file": f"images/test/{index}.jpg"}}
             for index, (name, cuisine) in enumerate(dishes) for kind in ("cuisine", "dish")]
    (food / "test.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    assert example_pictures() == [(food / "images/test/0.jpg", "宫保鸡丁 · 川菜"),
                                  (food / "images/test/2.jpg", "叉烧 · 粤菜")]


def test_a_picture_chat_shows_its_finished_turns() -> None:
    from dataclasses import replace

    from internvl_course.serve.chat import Session

    chat = PictureChat("dish.jpg", "dish.jpg")
    assert (chat.turns, chat.messages()) == (0, [])
    chat = replace(chat, session=Session(history=[("What is it?", "Dumplings.")]))
    assert chat.turns == 1
    assert chat.messages() == [{"role": "user", "content": "What is it?"},
                               {"role": "assistant", "content": "Dumplings."}]


def test_check_upload_messages(pictures: dict[str, Path]) -> None:
    assert check_upload(str(pictures["dish"]), max_upload_mb=TEST_LIMIT_MB) is None
    assert "not a picture" in check_upload(str(pictures["fake"]), max_upload_mb=TEST_LIMIT_MB)
    assert "accepts up to 0.25 MB" in check_upload(str(pictures["big"]), max_upload_mb=TEST_LIMIT_MB)
    assert "did not arrive" in check_upload(None, max_upload_mb=TEST_LIMIT_MB)


def test_upload_ask_and_get_a_streamed_reply(url: str, pictures: dict[str, Path]) -> None:
    c = client(url)
    _, chat, status = upload(c, pictures["dish"])
    assert chat == [] and "dish.jpg" in status
    job = c.submit("What is on the plate?", 0.0, 1.0, SHORT, api_name="/chat")
    chat, question_box, status = job.result()
    assert [m["role"] for m in chat] == ["user", "assistant"] and reply_text(chat).strip()
    assert question_box == "" and "Turn 1" in status and "greedy" in status
    assert len(job.outputs()) > 2, "the reply should arrive in pieces, not all at once"
    chat, _, status = ask(c, "And what colour is it?")
    assert len(chat) == 4 and "Turn 2" in status


def test_two_sessions_do_not_share_a_conversation(url: str, pictures: dict[str, Path]) -> None:
    first, second = client(url), client(url)
    upload(first, pictures["dish"])
    ask(first, "How many circles are there?")
    chat, _, status = ask(second, "Hello?")
    assert [reply["content"][0]["text"] for reply in chat if reply["role"] == "user"] == ["Hello?"]
    assert "no picture" in status  # the first session's picture stayed with the first session
    second.predict(api_name="/restart")
    chat, _, status = ask(first, "Are you sure?")
    assert len(chat) == 4 and "Turn 2" in status


@pytest.mark.parametrize("name", ["notes", "fake", "big"])
def test_bad_uploads_get_a_message_and_change_nothing(url: str, pictures: dict[str, Path], name: str) -> None:
    c = client(url)
    upload(c, pictures["dish"])
    ask(c, "What is this?")
    shown, _, status = upload(c, pictures[name])
    assert shown is None, "a refused upload is taken off the page"
    assert ("accepts up to" if name == "big" else "not a picture") in status
    chat, _, status = ask(c, "Still there?")
    assert len(chat) == 4 and "Turn 2" in status, "the conversation about the dish goes on"


def test_sliders_reach_the_generation_config(url: str, pictures: dict[str, Path], chat_pipe: ChatPipeline,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[GenerationConfig] = []
    real_chat = chat_pipe.chat

    def spy(*args, gen_config: GenerationConfig | None = None, **kwargs):
        seen.append(gen_config)
        return real_chat(*args, gen_config=gen_config, **kwargs)

    monkeypatch.setattr(chat_pipe, "chat", spy)
    c = client(url)
    upload(c, pictures["dish"])
    first = reply_text(ask(c, "Describe the picture.")[0])
    c.predict(api_name="/clear")  # a new conversation about the same picture
    again = reply_text(ask(c, "Describe the picture.")[0])
    assert first == again, "temperature 0 is greedy: the same question gets the same answer"
    chat, _, status = ask(c, "Tell me more.", temperature=0.9, top_p=0.5)
    assert "sampling, temperature 0.9, top-p 0.5" in status
    assert seen[:2] == [GenerationConfig(max_new_tokens=SHORT, temperature=0.0, top_p=1.0)] * 2
    assert seen[2] == GenerationConfig(max_new_tokens=SHORT, temperature=0.9, top_p=0.5) and seen[2].do_sample


def test_starting_over_during_an_answer_drops_that_answer(url: str, pictures: dict[str, Path],
                                                           chat_pipe: ChatPipeline,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    real_stream = chat_pipe.stream_chat
    mid_answer, started_over = threading.Event(), threading.Event()

    def held_stream(*args, **kwargs):
        """The real model's reply, held after its first piece until the test has started over."""
        pieces = real_stream(*args, **kwargs)
        yield next(pieces)
        mid_answer.set()  # the demo has shown the first piece and asks for the next
        if not started_over.wait(timeout=120):  # a guard against hanging, not a timing
            raise AssertionError("the test never started over")
        yield from pieces

    monkeypatch.setattr(chat_pipe, "stream_chat", held_stream)
    c = client(url)
    upload(c, pictures["dish"])
    job = c.submit("What is on the plate?", 0.0, 1.0, SHORT, api_name="/chat")
    assert mid_answer.wait(timeout=120), "the answer never started"
    c.predict(api_name="/restart")  # handled while the answer is held mid-way
    started_over.set()
    chat, _, _ = job.result()
    assert chat == [], "the dropped answer does not come back on the page"
    chat, _, status = ask(c, "Hello?")
    assert len(chat) == 2 and "Turn 1" in status and "no picture" in status


def test_out_of_range_settings_are_refused_with_a_message(url: str) -> None:
    with pytest.raises(gradio_client.exceptions.AppError, match="less than minimum"):
        client(url).predict("Hi", 0.5, 0.0, SHORT, api_name="/chat")
