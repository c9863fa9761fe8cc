"""`mcnet-rt cluster` on one machine: a local Ray cluster of two simulated nodes, each with one unit of a custom
resource standing in for a GPU, the untrained `small` model on the CPU in each engine, in-process aiortc callers
sending a real clip through the ingress. Everything on loopback; Ray is started and stopped here."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession

from cluster_helpers import ingress, local_engines, replica_actor  # first: it keeps Ray's usage report off
import ray
from mcnet_rt.cluster.deploy import ice_servers
from mcnet_rt.errors import InputError
from serve_helpers import (INTERFACES, call_until_answered, clip_frames, frames_flow, loopback_ice, needs_isolation,
                           reconnect_when_silent, start_call)

FREEZE_LIMIT_S = 60.0  # kill -> frames again on the caller's new call; measured and printed, far below this


@pytest.fixture(scope="module")
def engines():
    """Two engines, one session each, on a two-node local cluster (started once for the module)."""
    if INTERFACES != ["lo"]:
        pytest.skip("starts Ray, so it runs only in a network namespace with loopback alone")
    with local_engines(nodes=2, sessions_per_gpu=1) as handle:
        yield handle


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
    with pytest.raises(InputError, match="needs --ice-username"):
        ice_servers(["turn:turn.example.org"], None, None)
    with pytest.raises(InputError, match="expected a stun:"):
        ice_servers(["http://example.org"], None, None)
