"""`mcnet-rt cluster` on one machine: a local Ray cluster of two simulated nodes, each with one unit of a custom
resource standing in for a GPU, the untrained `small` model on the CPU in each engine, in-process aiortc callers
sending a real clip through the ingress. Everything on loopback; Ray is started and stopped here."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from aiohttp import ClientSession

from support.cluster_helpers import ingress, local_engines, ray, replica_actor  # first: it keeps Ray's usage report off
pytest.importorskip("playwright.sync_api", exc_type=ImportError)
from support.browser_helpers import avatar_changes, browser, fake_camera, wait_for  # noqa: F401 (fixtures)
from support.browser_helpers import start_call as open_page
from mcnet_rt.cli import main
from mcnet_rt.cluster.deploy import ice_servers
from mcnet_rt.cluster.replica import health_problem
from mcnet_rt.serve.scheduler import BatchScheduler
from mcnet_rt.errors import InputError
from support.serve_helpers import (INTERFACES, StandInSession, call_until_answered, clip_frames, frames_flow, loopback_ice,
                           needs_isolation, reconnect_when_silent, start_call, until)

FREEZE_LIMIT_S = 60.0  # kill -> frames again on the caller's new call; measured and printed, far below this


@pytest.fixture(scope="module")
def engines():
    """Two engines, one session each, on a two-node local cluster (started once for the module)."""
    if INTERFACES != ["lo"]:
        pytest.skip("starts Ray, so it runs only in a network namespace with loopback alone")
    with local_engines(nodes=2, sessions_per_gpu=1) as handle:
        yield handle


@pytest.mark.slow  # a two-node Ray cluster
@needs_isolation
def test_callers_are_placed_per_gpu_refused_when_full_and_reconnect_after_a_replica_dies(engines, feat_data,
                                                                                         monkeypatch):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 30, (320, 240))

    async def body(url):
        async with ClientSession() as http:
            first = await start_call(http, url, frames)
            assert first[3] == 200, first[4]
            await frames_flow(first[2], 60, "the first caller's avatar frames")
            second = await start_call(http, url, frames)
            assert second[3] == 200, second[4]
            assert second[4]["replica"] != first[4]["replica"], "one session per GPU: the other replica"
            await frames_flow(second[2], 60, "the second caller's avatar frames")

            pc, _, _, code, refusal = await start_call(http, url, frames)
            await pc.close()
            assert code == 503 and "all GPUs are busy; retrying in 1 s" in refusal["error"], refusal

            await first[0].close()  # a caller that leaves frees its slot (the replica sees its peer close)
            third = await call_until_answered(http, url, frames)
            assert third[3] == 200 and third[4]["replica"] == first[4]["replica"], third[4]
            await frames_flow(third[2], 60, "frames on the freed slot")
            await second[0].close()

            killed = time.monotonic()
            ray.kill(replica_actor(third[4]["replica"]), no_restart=True)
            fourth = await reconnect_when_silent(http, url, frames, third)
            assert fourth[3] == 200, fourth[4]
            await frames_flow(fourth[2], FREEZE_LIMIT_S, "frames after the replica died")
            freeze = time.monotonic() - killed
            print(f"replica killed -> frames again on {fourth[4]['replica']}: {freeze:.1f} s")
            assert freeze < FREEZE_LIMIT_S
            await fourth[0].close()

    with ingress(engines) as url:
        asyncio.run(body(url))


@pytest.mark.slow  # a two-node Ray cluster
@needs_isolation
def test_token_is_required_on_every_ingress_route(engines):
    token = "cluster-token-" + "x" * 10

    async def body(url):
        async with ClientSession() as http:
            for method, path in (("GET", "/"), ("GET", "/static/app.js"), ("GET", "/api/status"),
                                 ("GET", "/api/samples"), ("GET", "/api/config"), ("POST", "/api/offer"),
                                 ("POST", "/api/avatar")):
                response = await http.request(method, url + path)
                assert response.status == 401, (method, path)
            response = await http.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"})
            assert response.status == 200 and await response.json() == {"calls": 0}

    with ingress(engines, token) as url:
        asyncio.run(body(url))


def test_turn_servers_need_credentials():
    assert ice_servers(["stun:stun.example.org:3478"], None, None) == [{"urls": "stun:stun.example.org:3478"}]
    assert ice_servers(["turn:turn.example.org"], "u", "p") == [{"urls": "turn:turn.example.org", "username": "u",
                                                                 "credential": "p"}]
    with pytest.raises(InputError, match="TURN server needs a username and a credential") as refused:
        ice_servers(["turn:turn.example.org"], None, None)
    assert refused.value.options == ("ice_username", "ice_credential")
    with pytest.raises(InputError, match="expected a stun:"):
        ice_servers(["http://example.org"], None, None)


def test_cluster_command_refuses_bad_options(capsys):
    assert main(["cluster", "--untrained", "small", "--sessions-per-gpu", "0"]) == 2
    assert "--sessions-per-gpu must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # zero engines would refuse every caller for good
        main(["cluster", "--untrained", "small", "--gpus", "0"])
    assert stop.value.code == 2 and "--gpus: expected a number of GPUs, at least 1, got '0'" in capsys.readouterr().err
    assert main(["cluster", "--untrained", "small", "--ice-server", "turn:turn.example.org"]) == 2
    assert "a TURN server needs a username and a credential" in capsys.readouterr().err


def test_serve_does_not_import_ray():
    code = "import sys, mcnet_rt.cli, mcnet_rt.serve.server; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.stdout.strip() == "False"


def test_an_engine_whose_model_hangs_or_fails_reports_unhealthy():
    async def body():
        release = threading.Event()

        def process(sessions, frames):
            if frames[0] == "fail":
                raise RuntimeError("CUDA error: an illegal memory access was encountered (stand-in)")
            release.wait(10)
            return frames

        scheduler = BatchScheduler(process, max_sessions=1)
        runner = asyncio.ensure_future(scheduler.run())
        slot = scheduler.open(StandInSession(np.arange(12, dtype=np.uint8).reshape(2, 2, 3)))
        assert health_problem(scheduler, 0.2) is None
        scheduler.submit(slot, "hang")
        await until(lambda: health_problem(scheduler, 0.2) is not None, 5, "the hung batch to be noticed")
        assert "has not finished a batch" in health_problem(scheduler, 0.2)
        release.set()
        await until(lambda: health_problem(scheduler, 0.2) is None, 5, "the batch to finish")
        scheduler.submit(slot, "fail")
        await until(lambda: health_problem(scheduler, 0.2) is not None, 5, "the failed batch to be noticed")
        assert "CUDA error" in health_problem(scheduler, 0.2)
        runner.cancel()
        scheduler.shutdown()

    asyncio.run(body())


@pytest.mark.slow  # a two-node Ray cluster
@needs_isolation
def test_the_page_through_the_ingress_retries_while_every_gpu_is_busy(engines, browser, feat_data, monkeypatch):
    """Chromium's page: both engines' slots taken by aiortc callers, it shows the retry message; when one leaves,
    its next try is answered and the avatar plays. Last in the module: Playwright's sync API keeps an event loop
    running in this thread from then on, so `asyncio.run` (the tests above) no longer works here."""
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 30, (320, 240))
    loop = asyncio.new_event_loop()  # the aiortc callers run here while Playwright drives the page
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(120)

    async def take_both_slots(url):
        http = ClientSession()
        calls = [await call_until_answered(http, url, frames) for _ in range(2)]
        return http, calls

    try:
        with ingress(engines) as url:
            http, calls = run(take_both_slots(url))
            assert [call[3] for call in calls] == [200, 200], [call[4] for call in calls]
            page = open_page(browser, url)
            wait_for(lambda: "all GPUs are busy, retrying in 1 s" in page.text_content("#status"), 30,
                     "the page's retry message")
            run(calls[0][0].close())
            avatar_changes(page, 60)
            page.context.close()
            run(calls[1][0].close())
            run(http.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
