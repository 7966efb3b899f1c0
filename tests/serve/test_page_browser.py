"""End to end in a real headless Chromium (Debian's ``chromium`` driven by Playwright's Python API): open the
page, upload an image, ask a question, and find the overlay and the diagnosis on the page."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim4seg.data.schema import load_split

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_upload_query_and_see_overlay_and_diagnosis(live, synth_m3ds, tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)

    _, samples = load_split(synth_m3ds, "test")
    s = next(x for x in samples if x.subset == "busi")
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=binary,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(live.url + "/")
            page.locator("#upload input[type=file]").set_input_files(str(synth_m3ds / s.image))
            expect(page.locator("#preview img")).to_be_visible()  # the server decoded and showed the upload
            page.locator("#query textarea").fill(s.query)
            page.locator("#submit").click()
            overlay = page.locator("#overlay img")
            expect(overlay).to_be_visible()
            expect(page.locator("#diagnosis")).to_contain_text("Diagnosis:")
            expect(page.locator("#diagnosis")).to_contain_text("mean pixel uncertainty")
            assert "[SEG]" in page.locator("#answer textarea").input_value()
            # the overlay is the uploaded image at its own size, tinted where the mask is
            shot = np.asarray(Image.open(io.BytesIO(overlay.screenshot())).convert("RGB"))
            assert shot.shape[0] > 20 and shot.shape[1] > 20 and shot.std() > 1.0
            assert page.locator("#uncertainty img").is_visible()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert Image.open(tmp_path / "page.png").size[0] >= 1000
