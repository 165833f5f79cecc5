"""The DAKTer Gradio app in a real browser: Debian's `chromium`, driven headless by Playwright (the Python package;
no Playwright browser download). Starts the app of a tiny pipeline saved by the test on 127.0.0.1, clicks
"Generate" and checks that the images, soft labels and overlays are shown and the pairs can be downloaded.

Skips (with the reason) when gradio or playwright is not installed (`pip install -e ".[app]"`) or no chromium is
found (`apt-get install chromium`; `make test` installs it where apt-get is available).
"""

import os
import shutil
import socket
import zipfile

import pytest


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio", reason='the app extra is not installed: pip install -e ".[app]"')
sync_api = pytest.importorskip("playwright.sync_api", reason='the app extra is not installed: pip install -e ".[app]"')

from test_hub_pipeline_code import make_tiny_pipeline  # noqa: E402

from dakter_hf.app import build_app  # noqa: E402


def find_chromium() -> str | None:
    """The system chromium: $DAKTER_CHROMIUM, else `chromium` / `chromium-browser` on the PATH."""
    candidates = [os.environ.get("DAKTER_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    """The app of a tiny pipeline loaded from a directory, served on 127.0.0.1; yields its URL."""
    make_tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    app = build_app(str(tmp_path / "pipeline"), work_dir=str(tmp_path / "work"))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def image_sizes(page, selector: str) -> list[int]:
    """naturalWidth of every loaded <img> under `selector` (0 for an image that failed to load)."""
    return page.eval_on_selector_all(f"{selector} img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def test_generate_in_chromium(served_app, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium found (apt-get install chromium, or set DAKTER_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(served_app, timeout=60_000)
            page.get_by_label("steps").first.fill("3")
            page.click("#generate")
            for column in ("#images", "#soft-labels", "#overlays"):  # 2 pairs by default
                page.wait_for_function(
                    f"document.querySelectorAll('{column} img').length >= 2", timeout=120_000)
                page.wait_for_function(
                    f"[...document.querySelectorAll('{column} img')].every(i => i.complete && i.naturalWidth > 0)",
                    timeout=30_000)
                assert all(width > 0 for width in image_sizes(page, column))
            with page.expect_download(timeout=30_000) as download_info:
                page.locator("#pairs-archive a").first.click()
            archive = tmp_path / "pairs.zip"
            download_info.value.save_as(archive)
        finally:
            browser.close()
    names = zipfile.ZipFile(archive).namelist()
    assert "dakter-pairs-seed0-1/README.md" in names
    assert "dakter-pairs-seed0-1/dataset_info.json" in names
