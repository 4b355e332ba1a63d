"""Re-take docs/first-run.png: the guided first run's panel on a first visit, 1400 x 1000.

Starts the app on the offline SmolLM2 with a fresh data folder (or uses --url, which must have no adapter yet),
picks the sample, trains it with the quick preset and asks the base and the adapter the sample's question. With
--wait-s, the shot is taken after that many seconds of training even when it has not finished (the progress bar
then shows instead of the answers). Needs the playwright package and a Chromium binary (see screenshots.py).

    .venv/bin/python scripts/first_run_shot.py [--url http://127.0.0.1:7860] [--wait-s 1800] [--no-train]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect

from screenshots import ROOT, app_page

SIZE = {"width": 1400, "height": 1000}


def walk_through(page: Page, train: bool, wait_s: int) -> None:
    """The panel's three steps, as a first visitor takes them."""
    panel = page.locator("#first-run")
    expect(panel.get_by_text("New here?")).to_be_visible(timeout=120_000)
    panel.get_by_role("button", name="Use the sample").click()
    expect(panel.get_by_text(re.compile(r"kept \d+"))).to_be_visible(timeout=60_000)
    if not train:
        return
    panel.get_by_role("button", name="Start training").click()
    try:
        expect(panel.get_by_text("is ready")).to_be_visible(timeout=wait_s * 1000)
    except AssertionError:  # what expect raises when its wait runs out
        print(f"training still runs after {wait_s} s: the shot shows its progress")
        return
    panel.get_by_role("button", name="Ask the base model and the adapter").click()
    for label in ("Base model (before training)", "With your new adapter"):
        expect(panel.get_by_label(label)).to_have_value(re.compile(r"\S"), timeout=300_000)
    page.wait_for_timeout(5000)  # the answers stream: let them finish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="use this running app (no adapter yet) instead of starting one")
    parser.add_argument("--port", type=int, default=7871, help="port for the app this script starts")
    parser.add_argument("--wait-s", type=int, default=1800, help="the longest wait for training")
    parser.add_argument("--no-train", action="store_true", help="shoot the panel before training")
    parser.add_argument("--out", default=str(ROOT / "docs" / "first-run.png"))
    parser.add_argument("--chromium", default=os.environ.get("LORA_STUDIO_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    with app_page(args.url, args.port, tempfile.mkdtemp(prefix="first-run-data-"), args.chromium, SIZE) as page:
        walk_through(page, not args.no_train, args.wait_s)
        page.screenshot(path=args.out)
        print(f"wrote {Path(args.out)}")


if __name__ == "__main__":
    main()
