"""The built-in chat page in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from app.modelstore.tiny_phi3 import TINY_REPLY
from app.settings import REPO_ROOT
from tests.integration.conftest import Server, start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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
