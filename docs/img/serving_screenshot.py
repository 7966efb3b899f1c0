"""Take docs/img/serving-page.png: start ``sim4seg serve`` on a checkpoint, drive headless Chromium through one
query on a bundled example (m = 2 answers × n = 4 masks), and screenshot the page.

Run: ``python docs/img/serving_screenshot.py --checkpoint demo-out/train/final [--out docs/img/serving-page.png]``
(needs Debian's ``chromium`` and the ``playwright`` Python package; no browser download).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "sim4seg" / "serve" / "examples"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "serving-page.png"))
    ap.add_argument("--example", default="busi")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    ex = next(e for e in json.loads((EXAMPLES / "examples.json").read_text()) if e["subset"] == args.example)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "sim4seg", "serve", "--checkpoint", args.checkpoint,
                             "--port", str(port)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        expect.set_options(timeout=120_000)
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS, headless=True,
                viewport={"width": 1500, "height": 1050})
            page = browser.new_page()
            page.goto(url + "/")
            page.locator("#upload input[type=file]").set_input_files(str(EXAMPLES / ex["file"]))
            expect(page.locator("#preview img")).to_be_visible()
            page.locator("#query textarea").fill(ex["query"])
            page.locator("#m input[type=number]").fill("2")
            page.locator("#m input[type=number]").press("Enter")
            page.locator("#submit").click()
            expect(page.locator("#overlay img")).to_be_visible()
            expect(page.locator("#diagnosis")).to_contain_text("Diagnosis:")
            expect(page.locator("#uncertainty img")).to_be_visible()
            time.sleep(1)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
