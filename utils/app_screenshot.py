"""Screenshot of the DAKTer app (docs/app.png in the README): serves the app of a pipeline on 127.0.0.1, clicks
"Generate" in headless chromium (Playwright with the system browser) and saves the page as a palette PNG.

    python utils/app_screenshot.py outputs/demo/generator docs/app.png --name outputs/demo/generator --seed 14 \\
        --num_pairs 4 --steps 25
"""

import argparse
import io
import os
import shutil
import socket

from PIL import Image

from dakter_hf.app import build_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="Pipeline directory or Hub id.")
    parser.add_argument("output", help="PNG to write.")
    parser.add_argument("--name", default=None, help="Pipeline name shown in the app (default: the path).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        parser.error("no chromium found: apt-get install chromium, or pass --chromium")
    from playwright.sync_api import sync_playwright

    app = build_app(args.pipeline, pipeline_name=args.name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            page.get_by_label("seed").first.fill(str(args.seed))
            page.get_by_label("steps").first.fill(str(args.steps))
            page.get_by_label("pairs").first.fill(str(args.num_pairs))
            page.click("#generate")
            page.wait_for_function(
                f"[...document.querySelectorAll('#overlays img')].filter(i => i.complete && i.naturalWidth > 0)"
                f".length >= {args.num_pairs}", timeout=300_000)
            page.wait_for_timeout(1000)
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        app.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    image.save(args.output, optimize=True)
    print(f"wrote {args.output} ({os.path.getsize(args.output) // 1024} KiB, {image.size[0]}x{image.size[1]})")


if __name__ == "__main__":
    main()
