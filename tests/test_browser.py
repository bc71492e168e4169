"""The demo in a real browser: Playwright driving Debian's chromium (``make browser`` installs it).

Playwright never downloads a browser here: it starts /usr/bin/chromium headless. Two browser
contexts are two strangers' tabs (no shared cookies or storage), so they must not see each
other's conversation. The screenshot lands in pytest's temporary folder for a human to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from internvl_course.serve.chat import ChatPipeline
from test_demo import GRADIO_QUEUE_NOISE, TEST_LIMIT_MB, chat_pipe, launch, pictures  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.browser, GRADIO_QUEUE_NOISE]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Generous for 2 shared CPU cores; a tiny-model turn takes well under a second on its own.
TURN_TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium: run `make browser` "
                "(or apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def url(chat_pipe: ChatPipeline) -> Iterator[str]:  # noqa: F811
    from internvl_course.serve.demo import build_demo

    demo = build_demo(chat_pipe, max_upload_mb=TEST_LIMIT_MB)
    yield launch(demo)
    demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_tab(browser: sync_api.Browser, url: str) -> sync_api.Page:
    """A fresh browser context (a stranger's tab) showing the demo, with short replies."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(url)
    page.locator("#question textarea").wait_for()
    set_slider(page, "max_new_tokens", 32)
    return page


def set_slider(page: sync_api.Page, elem_id: str, value: float) -> None:
    """Type a value into a slider's number box, as a person can."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def ask(page: sync_api.Page, question: str, turn: int) -> None:
    """Send a question and wait until the status line reports that turn finished."""
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()
    sync_api.expect(page.locator("#status")).to_contain_text(f"Turn {turn}", timeout=TURN_TIMEOUT_MS)


def test_upload_ask_and_two_contexts_stay_apart(browser: sync_api.Browser, url: str,
                                                pictures: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    first = open_tab(browser, url)
    first.locator("#picture input[type=file]").set_input_files(str(pictures["dish"]))
    sync_api.expect(first.locator("#status")).to_contain_text("dish.jpg")
    set_slider(first, "temperature", 0)
    ask(first, "What is on the plate?", turn=1)
    sync_api.expect(first.locator("#status")).to_contain_text("greedy")  # the slider reached the model
    sync_api.expect(first.locator("#chatbot [data-testid=user]")).to_have_count(1)
    assert first.locator("#chatbot [data-testid=bot]").inner_text().strip(), "the model's reply is on the page"

    second = open_tab(browser, url)
    sync_api.expect(second.locator("#chatbot")).not_to_contain_text("What is on the plate?")
    ask(second, "Hello from another tab", turn=1)
    sync_api.expect(second.locator("#status")).to_contain_text("sampling, temperature 0.7")
    sync_api.expect(second.locator("#status")).to_contain_text("no picture")
    sync_api.expect(second.locator("#chatbot")).not_to_contain_text("What is on the plate?")

    ask(first, "And what colour are they?", turn=2)
    sync_api.expect(first.locator("#chatbot")).not_to_contain_text("Hello from another tab")
    sync_api.expect(first.locator("#chatbot [data-testid=bot]")).to_have_count(2)
    first.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'demo.png'}")


def test_a_file_that_is_not_a_picture_gets_a_message_and_an_example_replaces_it(
        browser: sync_api.Browser, url: str, pictures: dict[str, Path]) -> None:  # noqa: F811
    page = open_tab(browser, url)
    page.locator("#picture input[type=file]").set_input_files(str(pictures["fake"]))
    sync_api.expect(page.locator("#status")).to_contain_text("not a picture")
    sync_api.expect(page.locator("#picture img")).to_have_count(0)
    page.locator("#examples button.thumbnail-item").first.click()
    sync_api.expect(page.locator("#status")).to_contain_text("New picture")
    sync_api.expect(page.locator("#picture img")).to_have_count(1)
