"""The web page end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package "
                                                              "chromium; `make setup` installs it)")
pytest.importorskip("playwright", reason="playwright (search extra) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn (search extra) is not installed")

from test_service import KEY, make_search_setup  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_searches_and_shows_scored_images(tmp_path, tux_images):
    from playwright.sync_api import sync_playwright

    from modalign.search.service import ServiceConfig, create_app

    index, model = make_search_setup(tmp_path, tux_images)
    app = create_app(index, model, ServiceConfig(api_key=KEY))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            urls: list[str] = []
            page.on("request", lambda req: urls.append(req.url))
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#key", KEY)
            page.fill("#query", "a red bird")
            page.click("#go")
            page.wait_for_selector(".hit img", timeout=15_000)
            page.wait_for_function("() => Array.from(document.querySelectorAll('.hit img')).every(i => "
                                   "i.complete && i.naturalWidth > 0)", timeout=30_000)
            hits = page.locator(".hit")
            assert hits.count() == 8
            scores = [float(t.split()[-1]) for t in page.locator(".score").all_inner_texts()]
            assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
            assert "8 results" in page.inner_text("#status")
            # thumbnails came with the key in a header (blob: URLs on screen); the key is in no URL, and
            # the page runs under its strict CSP without a violation
            assert all(src.startswith("blob:") for src in page.eval_on_selector_all(".hit img", "e => e.map(i => i.src)"))
            assert sum("/items/" in u for u in urls) == 8 and not any(KEY in u or "token=" in u for u in urls)
            assert not [e for e in errors if "Content Security Policy" in e], errors
            page.screenshot(path=str(tmp_path / "search_page.png"), full_page=True)
            assert (tmp_path / "search_page.png").stat().st_size > 10_000
            # a wrong key shows the error, not results
            page.fill("#key", "wrong")
            page.click("#go")
            page.wait_for_selector("#status.error", timeout=10_000)
            assert "401" in page.inner_text("#status")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
