"""A report page opened in headless Chromium (the system's, driven by Playwright) and what a reviewer's browser
would have done with it: console errors, dialogs, requests beyond the page itself, images and charts that do
not decode, and where the verdict sits; a screenshot of it beside the test's other outputs."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


# the flags the machine's probe found needed: no sandbox as root, no GPU, no calls home on a closed network
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
HOW = ("install it: `apt-get install chromium` on Debian or Ubuntu (.ci/run does), `brew install chromium` on "
       "macOS, or set FLUXGATE_CHROMIUM to any Chromium or Chrome")


def chromium() -> str | None:
    """The browser the tests drive: FLUXGATE_CHROMIUM, else the first of chromium, chromium-browser,
    google-chrome on PATH."""
    return os.environ.get("FLUXGATE_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@dataclass
class Findings:
    console: list[str] = field(default_factory=list)      # console errors and uncaught page errors
    dialogs: list[str] = field(default_factory=list)      # alert, confirm, prompt: a script ran
    requests: list[str] = field(default_factory=list)     # anything fetched but the page and its data: URIs
    blocked: list[str] = field(default_factory=list)      # what the page's content-security policy stopped
    broken: list[str] = field(default_factory=list)       # images, charts and style-sheet images that fail to decode
    images: int = 0                                       # how many were decoded
    verdict_top: float | None = None                      # the verdict's distance from the top, in pixels
    zoomed: tuple[float, float] | None = None             # the first image's width before and after a click

    @property
    def clean(self) -> bool:
        return not (self.console or self.dialogs or self.requests or self.broken)


DECODE = """async () => {
  const uris = new Set([...document.images].map(i => i.src));
  for (const sheet of document.styleSheets)
    for (const rule of sheet.cssRules)
      for (const m of (rule.cssText || '').matchAll(/url\\("(data:[^"]+)"\\)/g)) uris.add(m[1]);
  const broken = [];
  for (const uri of uris) {
    const im = new Image(); im.src = uri;
    try { await im.decode(); if (!im.naturalWidth) broken.push(uri.slice(0, 60)); }
    catch (e) { broken.push(uri.slice(0, 60)); }
  }
  return {count: uris.size, broken};
}"""


def inspect(browser, page_path: Path, screenshot: Path) -> Findings:
    """Open PAGE_PATH as a reviewer would (file://), wait for it to settle, and say what happened."""
    found, page_url = Findings(), page_path.resolve().as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: found.console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: found.console.append(str(e)))
    page.on("dialog", lambda d: (found.dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: found.requests.append(r.url) if not r.url.startswith(("data:", page_url)) else None)
    page.on("requestfailed", lambda r: (found.requests.remove(r.url), found.blocked.append(r.url))
            if r.failure == "csp" and r.url in found.requests else None)
    page.goto(page_url, wait_until="load")
    page.wait_for_timeout(200)  # a script set off by an image's error handler would have run by now
    decoded = page.evaluate(DECODE)
    found.images, found.broken = decoded["count"], decoded["broken"]
    verdict = page.query_selector("#verdict")
    found.verdict_top = verdict.bounding_box()["y"] if verdict and verdict.is_visible() else None
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=False)
    image = page.query_selector(".zoom")
    if image:
        before = image.bounding_box()["width"]
        image.click()
        found.zoomed = (before, image.bounding_box()["width"])
        page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-enlarged.png")))
    page.close()
    return found
