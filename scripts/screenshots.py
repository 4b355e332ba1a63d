"""Re-take the README screenshots: docs/chat.png, docs/train.png, docs/report.png and docs/report-sentiment.png,
1280 px wide.

Starts the app on the offline SmolLM2 with a fresh data folder (or uses --url), chats in headless Chromium,
uploads the sample data and trains a short adapter on it, then a sentiment classifier on its sample. Needs the
playwright package and a Chromium binary
(Debian: apt-get install chromium; never `playwright install`). Takes a few minutes on a CPU.

    .venv/bin/python scripts/screenshots.py [--url http://127.0.0.1:7860] [--max-steps 20] [--no-report]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280
CHAT = ["What is the capital of France?", "Write a haiku about the sea."]


def start_app(port: int, data_dir: str) -> subprocess.Popen:
    """The app in a child process, once it answers HTTP."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", data_dir], cwd=ROOT,
                           env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if app.poll() is not None:
            sys.exit(f"the app exited with code {app.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return app
        except OSError:
            time.sleep(1)
    app.terminate()
    sys.exit("the app did not start within 3 minutes")


@contextmanager
def app_page(url: str, port: int, data_dir: str, chromium: str, viewport: dict) -> Iterator[Page]:
    """A headless Chromium page open on the app at url, or on one started here on port (stopped afterwards)."""
    app = None if url else start_app(port, data_dir)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=viewport)
            page.set_default_timeout(60_000)
            page.goto(url or f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            yield page
            browser.close()
    finally:
        if app is not None:
            app.terminate()
            app.wait(30)


def shoot(page: Page, path: Path, top, bottom, margin: int = 12) -> None:
    """Screenshot the full-width band of the page from the top of one element to the bottom of another."""
    y0 = top.evaluate("e => e.getBoundingClientRect().top + window.scrollY")
    y1 = bottom.evaluate("e => e.getBoundingClientRect().bottom + window.scrollY")
    y0 = max(0, y0 - margin)
    clip = {"x": 0, "y": y0, "width": WIDTH, "height": y1 + margin - y0}
    page.screenshot(path=str(path), full_page=True, clip=clip)
    print(f"wrote {path}")


def wait_reply_done(page: Page, turns: int, timeout_s: float = 300) -> None:
    """Wait until the chat shows `turns` replies and the last one has stopped growing."""
    replies = page.get_by_test_id("bot")
    expect(replies).to_have_count(turns, timeout=timeout_s * 1000)
    last, stable, deadline = None, 0, time.time() + timeout_s
    while stable < 3 and time.time() < deadline:
        text = replies.nth(turns - 1).inner_text()
        stable = stable + 1 if text == last and text.strip() not in ("", "…") else 0
        last = text
        page.wait_for_timeout(1000)


def set_slider(page: Page, name: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=f"number input for {name}")
    box.fill(value)
    box.press("Enter")
    expect(page.get_by_role("slider", name=f"range slider for {name}")).to_have_value(value)


def chat_shot(page: Page, out: Path) -> None:
    page.get_by_role("tab", name="Chat").click()
    settings = page.get_by_role("button", name=re.compile("Generation settings"))
    settings.click()
    set_slider(page, "Temperature", "0")  # repeatable replies
    set_slider(page, "Max new tokens", "128")
    settings.click()
    box = page.get_by_placeholder("Type a message and press Enter")
    for turn, message in enumerate(CHAT, start=1):
        box.fill(message)
        page.get_by_role("button", name="Send").click()
        wait_reply_done(page, turn)
    # The chat keeps its newest message in view; show the conversation from its start instead.
    page.get_by_test_id("user").first.evaluate("""e => { for (let p = e.parentElement; p; p = p.parentElement)
        if (p.scrollHeight > p.clientHeight + 1 && getComputedStyle(p).overflowY !== 'visible') { p.scrollTop = 0; break; } }""")
    shoot(page, out / "chat.png", page.get_by_role("tablist"), settings)


def train_shots(page: Page, out: Path, max_steps: int, report: bool = True) -> None:
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("button", name="Try the sample").click()
    expect(page.get_by_text(re.compile(r"kept \d+"))).to_be_visible(timeout=60_000)
    page.get_by_role("button", name=re.compile("Preview and column mapping")).click()
    expect(page.get_by_text("Which city is Zorbia's capital?").first).to_be_visible()
    page.get_by_label("Adapter name").fill("zorbia-facts")
    train = page.get_by_role("button", name="Train", exact=True)
    shoot(page, out / "train.png", page.get_by_role("tablist"), train)
    if not report:
        return

    page.get_by_role("button", name=re.compile("Preview and column mapping")).click()
    if max_steps:
        page.get_by_role("button", name=re.compile("Advanced settings")).click()
        page.get_by_label("max steps", exact=True).fill(str(max_steps))
    train.click()
    expect(page.get_by_text("Did it learn?")).to_be_visible(timeout=1800_000)
    page.wait_for_timeout(1500)  # the last timer tick redraws the plot
    shoot(page, out / "report.png", page.get_by_role("heading", name="Progress"), page.locator("table").last)


def sentiment_report_shot(page: Page, out: Path) -> None:
    """Train a classifier on the sentiment sample and shoot its report: metric table and confusion matrix."""
    page.get_by_role("tab", name="Train").click()
    task = page.get_by_role("combobox", name="Task")
    task.fill("sentiment")
    task.press("Enter")
    expect(page.get_by_role("combobox", name="Base model")).to_have_value("all-MiniLM-L6-v2")
    page.get_by_role("button", name="Try the sample").click()
    expect(page.get_by_text(re.compile(r"kept \d+"))).to_be_visible(timeout=60_000)
    page.get_by_label("Adapter name").fill("support-tickets")
    page.get_by_role("button", name="Train", exact=True).click()
    expect(page.get_by_text("Confusion on the checked rows")).to_be_visible(timeout=600_000)
    page.wait_for_timeout(1500)  # the last timer tick redraws the plot
    shoot(page, out / "report-sentiment.png", page.get_by_role("heading", name="Did it learn?"),
          page.locator("table").last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="use this running app instead of starting one")
    parser.add_argument("--port", type=int, default=7870, help="port for the app this script starts")
    parser.add_argument("--data-dir", default="", help="data folder for that app (default: a fresh temp folder)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop training after this many steps "
                        "(0 = the quick preset)")
    parser.add_argument("--no-report", action="store_true", help="skip the training run and docs/report.png")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNG files")
    parser.add_argument("--chromium", default=os.environ.get("LORA_STUDIO_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with app_page(args.url, args.port, args.data_dir or tempfile.mkdtemp(prefix="shots-data-"), args.chromium,
                  {"width": WIDTH, "height": 900}) as page:
        chat_shot(page, out)
        train_shots(page, out, args.max_steps, not args.no_report)
        if not args.no_report:
            sentiment_report_shot(page, out)


if __name__ == "__main__":
    main()
