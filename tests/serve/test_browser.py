"""The web page in a real headless Chromium: it loads, speaks a sentence while streaming, highlights words.

Needs Debian's ``chromium`` (apt-get install chromium) and Playwright's Python package; Playwright's
own browser download is never used. All traffic stays on 127.0.0.1: any other request is aborted.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from koel.serve import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
SENTENCE = "Hello from koel. The words light up while they are spoken."


@pytest.fixture()
def browser_page(tmp_path: Path):
    """A page in a fresh Chromium profile; returns (page, problems) where problems collects JS errors."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        problems: list[str] = []
        blocked: list[str] = []

        def loopback_only(route) -> None:
            if urlparse(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith(
                ("blob:", "data:")
            ):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", loopback_only)
        page = context.pages[0] if context.pages else context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        try:
            yield page, problems
        finally:
            context.close()
        assert not blocked, f"the page tried to leave loopback: {blocked}"


def _speak_and_check(page, url: str, screenshot: Path, *, blend: bool, min_seconds: float) -> dict:
    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#voice option').length > 0", timeout=20_000)
    page.fill("#text", SENTENCE)
    if blend:
        options = page.eval_on_selector_all("#voice option", "els => els.map(e => e.value)")
        page.select_option("#voice", options[0])
        page.select_option("#voice2", options[1])
    page.fill("#speed", "1.1")
    page.click("#speak")
    page.wait_for_function("window.koelState.bytes > 0", timeout=120_000)
    page.wait_for_function("window.koelState.done || window.koelState.error", timeout=300_000)
    state = page.evaluate("window.koelState")
    assert state["error"] is None, state["error"]
    # The audio element received the stream and plays it.
    page.wait_for_function(
        f"(() => {{ const a = document.getElementById('player');"
        f" return a.buffered.length > 0 && a.buffered.end(a.buffered.length - 1) >= {min_seconds}; }})()",
        timeout=30_000,
    )
    page.wait_for_function("document.getElementById('player').currentTime > 0.2", timeout=30_000)
    page.wait_for_function("window.koelState.highlighted > 0", timeout=30_000)
    assert page.locator("#transcript .word.now").count() <= 1
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert not page.is_hidden("#download")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    return state


def test_page_speaks_a_sentence_with_a_fake_engine(kit, live_server_factory, browser_page, tmp_path):
    page, problems = browser_page
    live = live_server_factory(create_app(kit.pipeline(kit.FakeEngine(delay=0.2))))
    state = _speak_and_check(page, live.url, tmp_path / "page.png", blend=True, min_seconds=1.0)
    assert [w["word"] for w in state["words"]] == SENTENCE.split()
    spans = page.eval_on_selector_all("#transcript .word", "els => els.map(e => e.textContent)")
    assert spans == SENTENCE.split()
    assert not problems, problems


def test_page_reports_server_errors(kit, live_server_factory, browser_page):
    from koel.serve import ServerSettings

    page, _ = browser_page
    live = live_server_factory(create_app(kit.pipeline(), ServerSettings(max_input_chars=20)))
    page.goto(live.url + "/")
    page.wait_for_function("document.querySelectorAll('#voice option').length > 0", timeout=20_000)
    page.fill("#text", "This text is longer than twenty characters.")
    page.click("#speak")
    page.wait_for_function("window.koelState.error !== null", timeout=20_000)
    assert "at most 20" in page.text_content("#status")


def test_page_asks_for_the_api_key_and_then_works(kit, live_server_factory, browser_page):
    from koel.serve import ServerSettings

    page, _ = browser_page
    live = live_server_factory(create_app(kit.pipeline(), ServerSettings(api_key="page-key")))
    page.goto(live.url + "/")
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('API key')", timeout=20_000
    )
    assert page.get_attribute("#key-box", "open") is not None
    page.fill("#api-key", "page-key")
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.querySelectorAll('#voice option').length > 0", timeout=20_000)
    page.fill("#text", "Hello.")
    page.click("#speak")
    page.wait_for_function("window.koelState.done || window.koelState.error", timeout=60_000)
    assert page.evaluate("window.koelState.error") is None
    assert page.evaluate("window.koelState.bytes") > 0


@pytest.mark.slow
def test_page_speaks_a_sentence_with_the_real_model(kit, real_engine, shared_voices, browser_page, tmp_path):
    from koel.pipeline import Pipeline
    from koel.voices import VoiceStore

    page, problems = browser_page
    pipeline = Pipeline(real_engine, voice="af_heart", voices=VoiceStore(shared_voices, allow_download=False))
    with kit.LiveServer(create_app(pipeline)) as live:
        state = _speak_and_check(page, live.url, tmp_path / "page-real.png", blend=False, min_seconds=1.5)
    spoken = [w["word"] for w in state["words"] if w["word"].isalpha()]
    assert spoken[:3] == ["Hello", "from", "koel"]
    assert not problems, problems
