"""A bounded soak of `mcnet-rt serve` (a process, untrained small, loopback): 300 refused offers and two dozen real
calls leave its memory and threads flat. Bounds: RSS after 300 refused offers within 50 MB of its value after the
first 10, and after 24 calls within 50 MB of its value after the first 4; no more threads than after the first calls.
Before each session closed its MediaPipe graphs, every prepared avatar kept ~20-30 MB and its graph's threads."""
from __future__ import annotations

import asyncio
import io

import pytest
from aiohttp import ClientSession
from PIL import Image

from support.serve_helpers import (ClipTrack, call_server, caller_offer, clip_frames, loopback_ice, needs_isolation,
                           process_memory, serve_process, until)

pytestmark = [needs_isolation, pytest.mark.slow]
MB = 2**20


async def no_sessions(http: ClientSession, url: str) -> bool:
    return (await (await http.get(f"{url}/api/status")).json())["sessions"] == 0


def test_refused_offers_and_real_calls_leave_memory_and_threads_flat(tmp_path, feat_data, monkeypatch):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 20, (320, 240))
    flat = io.BytesIO()
    Image.new("RGB", (256, 256), (128, 128, 128)).save(flat, "PNG")

    async def soak(url: str, pid: int) -> dict:
        seen = {}
        caller, _ = await caller_offer(ClipTrack(frames))
        sdp = caller.localDescription.sdp
        async with ClientSession() as http:
            upload = {"upload": (await (await http.post(f"{url}/api/avatar", data=flat.getvalue())).json())["avatar"]}
            for i in range(300):  # garbage SDP with a sample face; a good SDP with a faceless avatar (prepared)
                offer = {"sdp": "v=0\r\ngarbage", "type": "offer", "avatar": {"sample": "single_face"}} if i % 2 \
                    else {"sdp": sdp, "type": "offer", "avatar": upload}
                response = await http.post(f"{url}/api/offer", json=offer)
                assert response.status == 400, await response.text()
                if i + 1 in (10, 300):
                    seen[f"refused {i + 1}"] = process_memory(pid)

            for round_ in range(12):  # 2 callers at a time, each until it has its avatar back
                calls = await asyncio.gather(*(call_server(url, frames, seconds=1.0) for _ in range(2)))
                await until(lambda: all(received for _, received, _, _ in calls), 30, "every caller's avatar")
                for pc, *_ in calls:
                    await pc.close()
                await until(lambda: no_sessions(http, url), 10, "the callers' sessions to close")
                seen[f"calls {2 * (round_ + 1)}"] = process_memory(pid)
            # Some threads of a closed call end a little after its session does, so one sample may count them: the
            # bound is the most seen after the first calls, and the count has 20 s to come back under it (a leak
            # of even one thread per call would stay 20 above it).
            early = max(seen["calls 2"][1], seen["calls 4"][1])
            await until(lambda: process_memory(pid)[1] <= early, 20, "the closed calls' threads to end")
            seen["calls 24"] = process_memory(pid)
        await caller.close()
        return seen

    with serve_process(tmp=tmp_path) as (process, url):
        seen = asyncio.run(soak(url, process.pid))
    print({k: (round(rss / MB), threads) for k, (rss, threads) in seen.items()})
    assert seen["refused 300"][0] - seen["refused 10"][0] < 50 * MB, seen
    assert seen["refused 300"][1] <= seen["refused 10"][1], seen
    assert seen["calls 24"][0] - seen["calls 4"][0] < 50 * MB, seen
