"""Take the playground's screenshot (shown in the README and on docs/running.md): a browser, a server, one generation.

    python scripts/playground_screenshot.py --base-url http://127.0.0.1:8000 --out docs/playground.png

Needs Chromium (Debian's ``chromium``) and Playwright (the test extra), as the browser test does.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

from playwright.sync_api import expect, sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", default="docs/playground.png")
    parser.add_argument("--prompt", default="a red circle in the top left corner")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=shutil.which("chromium"),
            args=FLAGS,
            headless=True,
            viewport={"width": args.width, "height": args.height},
        )
        page = browser.new_page()
        page.goto(args.base_url + "/")
        page.fill("#prompt", args.prompt)
        page.fill("#generate .n", "4")
        page.fill("#generate .seed", "7")
        page.click("#run-generate")
        expect(page.locator("#results img.result")).to_have_count(4, timeout=300_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
