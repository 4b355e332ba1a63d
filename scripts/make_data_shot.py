"""Re-take docs/make-data.png: the "Make training data" view with chat rows written from bench/docs_data.py's
made-up facts, 1280 px wide.

Starts the app with a fresh data folder (or uses --url), uploads the fact documents in the Train area's "Make
training data" view, lets the offline SmolLM2 write the rows and shoots the view with its table. Needs the
playwright package and a Chromium binary (see screenshots.py).

    .venv/bin/python scripts/make_data_shot.py [--url http://127.0.0.1:7860] [--documents 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect

from screenshots import ROOT, WIDTH, app_page, shoot

sys.path.insert(0, str(ROOT))
from bench.docs_data import FACTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="use this running app instead of starting one")
    parser.add_argument("--port", type=int, default=7872, help="port for the app this script starts")
    parser.add_argument("--documents", type=int, default=4, help="fact documents uploaded")
    parser.add_argument("--models", default=str(ROOT / "data" / "models"), help="converted models to reuse")
    parser.add_argument("--out", default=str(ROOT / "docs" / "make-data.png"))
    parser.add_argument("--chromium", default=os.environ.get("LORA_STUDIO_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="make-data-docs-"))
    files = []
    for name, text in list(FACTS.items())[:args.documents]:
        (folder / name).write_text(text, encoding="utf-8")
        files.append(str(folder / name))
    data_dir = tempfile.mkdtemp(prefix="make-data-shot-")
    models = Path(args.models)
    if models.is_dir():  # the converted SmolLM2, not converted again
        (Path(data_dir) / "models").symlink_to(models.resolve(), target_is_directory=True)
    base = (args.url or f"http://127.0.0.1:{args.port}").rstrip("/")
    with app_page(args.url, args.port, data_dir, args.chromium, {"width": WIDTH, "height": 1100}) as page:
        page.goto(f"{base}/?view=make_data", wait_until="domcontentloaded")
        expect(page.get_by_text("Turn your documents into training rows")).to_be_visible(timeout=120_000)
        page.locator("input[type=file]").last.set_input_files(files)
        page.wait_for_timeout(2000)
        page.get_by_role("button", name="Make rows").click()
        train = page.get_by_role("button", name="Train on these rows")
        expect(train).to_be_visible(timeout=900_000)
        page.wait_for_timeout(1500)
        shoot(page, Path(args.out), page.get_by_text("Turn your documents into training rows"), train)


if __name__ == "__main__":
    main()
