"""The built-in chat page in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from app.modelstore.tiny_phi3 import TINY_REPLY
from app.settings import REPO_ROOT
from tests.integration.conftest import Server, launch, start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    # `make browser` installs it where it can (as root); elsewhere it says what to install.
    pytest.skip(
        "no chromium: the chat page's browser tests need Debian's chromium "
        "(sudo apt-get install chromium)",
        allow_module_level=True,
    )
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"
# Chromium as root, headless, and kept off the (closed) network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keyed_server(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3", "--api-key", "sk-page")
    yield server
    stop_server(server)


def test_chat_page_streams_an_answer(browser: Browser, tiny_server: Server) -> None:
    page = browser.new_page()
    page.goto(tiny_server.url + "/")
    expect(page.locator("#model")).to_have_text("tiny-phi3")
    page.fill("#temperature", "0")
    page.fill("#prompt", "What is the capital of France?")
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_text(TINY_REPLY, timeout=30_000)
    expect(page.locator("#speed")).to_contain_text("tok/s")
    expect(page.locator("#send")).to_be_enabled()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-page.png"), full_page=True)
    page.close()


def test_chat_page_uses_the_api_key(browser: Browser, keyed_server: Server) -> None:
    page = browser.new_page()
    page.goto(keyed_server.url + "/")
    expect(page.locator("#model")).to_have_text("API key needed")
    page.fill("#api-key", "sk-page")
    page.dispatch_event("#api-key", "change")
    expect(page.locator("#model")).to_have_text("tiny-phi3")
    page.fill("#temperature", "0")
    page.fill("#prompt", "hi")
    page.press("#prompt", "Enter")
    expect(page.locator(".msg.assistant").last).to_have_text(TINY_REPLY, timeout=30_000)
    page.close()


def test_stop_button_ends_the_stream(browser: Browser, default_server: Server) -> None:
    """SmolLM2 answers this prompt greedily for all 4000 tokens (it loops): a long
    stream, with no request rewriting needed."""
    page = browser.new_page()
    page.goto(default_server.url + "/")
    expect(page.locator("#model")).to_have_text("smollm2")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "4000")
    page.fill("#prompt", "Write a long essay about the history of France, century by century.")
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    expect(answer).not_to_have_text("", timeout=30_000)  # streaming has begun
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("stopped")
    expect(page.locator("#send")).to_be_enabled()
    # Stopped early: the 4000 tokens asked for never all arrived.
    stopped_at = len(answer.inner_text())
    page.wait_for_timeout(500)
    assert len(answer.inner_text()) == stopped_at
    page.close()


@pytest.fixture(scope="module")
def two_model_server(
    server_logs: Path, tiny_model_dir: Path, window_model_dir: Path
) -> Iterator[Server]:
    server = launch(
        server_logs,
        "tiny-phi3",
        *("--model", str(tiny_model_dir), "--model", str(window_model_dir)),
        *("--preload", "first"),
    )
    yield server
    stop_server(server)


def test_the_user_picks_a_served_model(browser: Browser, two_model_server: Server) -> None:
    page = browser.new_page()
    page.goto(two_model_server.url + "/")
    picker = page.locator("#model")
    expect(picker.locator("option")).to_have_text(["tiny-phi3", "tiny-phi3-window"])
    expect(picker).to_have_value("tiny-phi3")
    expect(picker.locator("option").nth(1)).to_have_attribute("title", "unloaded, context 4096")
    picker.select_option("tiny-phi3-window")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "hi")
    page.click("#send")
    expect(page.locator("#send")).to_be_enabled(timeout=60_000)
    expect(page.locator(".msg.assistant").last).not_to_have_text("")
    assert "/v1/chat/completions 200" in two_model_server.log_text()
    assert "model=tiny-phi3-window" in two_model_server.log_text()
    # The choice is remembered across visits.
    page.reload()
    expect(page.locator("#model")).to_have_value("tiny-phi3-window")
    page.close()
