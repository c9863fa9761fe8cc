"""`mcnet-rt serve` without a browser: avatar checks, the access policy, the batching scheduler, and WebRTC calls
from in-process aiortc callers sending a real clip (stand-in sessions; the browser tests run the real model)."""
from __future__ import annotations

import asyncio
import gc
import io
import signal
import time
import weakref

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

pytest.importorskip("aiortc", exc_type=ImportError)  # absent from some GPU images: the serve tests are skipped there
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402

from mcnet_rt.errors import InputError
from mcnet_rt.serve import avatars, security
from mcnet_rt.serve.scheduler import BatchScheduler, ServerFull
from mcnet_rt.serve.server import STATE, build_app
from support.serve_helpers import (ClipTrack, StandInSession, call_server, caller_offer, clip_frames, loopback_ice,
                           needs_isolation, stand_in_process)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_avatar_images_are_checked_by_content_and_size():
    face = avatars.decode_image(avatars.sample_bytes("single_face"))
    assert face.dtype == np.uint8 and face.ndim == 3 and face.shape[2] == 3
    png = avatars.decode_image(encoded(Image.fromarray(face), "PNG"), "face.png")
    assert np.array_equal(png, face)
    with pytest.raises(InputError, match="not a JPEG, PNG or WebP image"):
        avatars.decode_image(b"<html>not an image</html>", "page.html")
    with pytest.raises(InputError, match="not a JPEG, PNG or WebP image"):
        avatars.decode_image(encoded(Image.fromarray(face), "GIF"), "face.gif")
    for side in (5000, 20000):  # over our limit; over PIL's own (it refuses from the header)
        bomb = encoded(Image.new("1", (side, side)), "PNG")  # 25 and 400 MP of zeros in a few kB
        assert len(bomb) < 100_000
        with pytest.raises(InputError, match="over the limit of .* pixels"):
            avatars.decode_image(bomb, "bomb.png")
    with pytest.raises(InputError, match="over the limit of .* bytes"):
        avatars.decode_image(b"\0" * (avatars.MAX_BYTES + 1))
    with pytest.raises(InputError, match="no sample face named"):
        avatars.sample_bytes("../../etc/passwd")


def test_non_loopback_binds_need_a_token():
    assert security.access_token("127.0.0.1", None) is None
    assert security.access_token("::1", None) is None
    assert security.access_token("localhost", None) is None
    generated = security.access_token("0.0.0.0", None)
    assert generated is not None and len(generated) >= 16
    assert security.access_token("0.0.0.0", "a-long-enough-token") == "a-long-enough-token"
    with pytest.raises(InputError, match="at least 16") as short:
        security.access_token("0.0.0.0", "short")
    assert short.value.options == ("token",) and "--" not in str(short.value)  # the CLI adds its flag


def serve_app(max_sessions: int = 2, token: str | None = None):
    return build_app(StandInSession, stand_in_process, max_sessions, token)


async def with_client(app, body):
    async with TestClient(TestServer(app)) as client:
        return await body(client)


@needs_isolation
def test_token_is_checked_on_every_request_and_headers_are_set():
    token = "t" * 24

    async def body(client):
        for path in ("/", "/static/app.js", "/api/status", "/api/samples", "/api/config"):
            response = await client.get(path)
            assert response.status == 401, path
            assert "access token" in await response.text()
        assert (await client.post("/api/offer", json={"sdp": "x", "type": "offer"})).status == 401
        page = await client.get(f"/?token={token}")
        assert page.status == 200
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert page.cookies[security.TOKEN_COOKIE].value == token
        status = await client.get("/api/status")  # the cookie the page got
        assert status.status == 200 and (await status.json())["sessions"] == 0
        bearer = await client.get("/api/status", headers={"Authorization": f"Bearer {token}"}, cookies={})
        assert bearer.status == 200
        assert (await client.get("/static/../server.py")).status == 404

    asyncio.run(with_client(serve_app(token=token), body))


@needs_isolation
def test_bad_uploads_and_offers_get_clear_messages(monkeypatch):
    loopback_ice(monkeypatch)

    async def body(client):
        caller, _ = await caller_offer(ClipTrack([np.zeros((48, 64, 3), np.uint8)]))
        sdp = caller.localDescription.sdp
        response = await client.post("/api/avatar", data=b"GIF89a not really")
        assert response.status == 400 and "not a JPEG, PNG or WebP image" in (await response.json())["error"]
        response = await client.post("/api/avatar", data=b"x" * (avatars.MAX_BYTES + 4096))
        assert response.status == 413 and "over the limit" in (await response.json())["error"]
        flat = encoded(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG")
        upload = {"upload": (await (await client.post("/api/avatar", data=flat)).json())["avatar"]}
        response = await client.post("/api/offer", json={"sdp": sdp, "type": "offer", "avatar": upload})
        assert response.status == 400 and "no face found in this avatar" in (await response.json())["error"]
        assert "--crop" not in (await response.json())["error"]  # a page caller has no command line
        response = await client.post("/api/offer", data=b"{not json")
        assert response.status == 400 and "malformed offer" in (await response.json())["error"]
        response = await client.post("/api/offer", json={"sdp": "v=0\r\ngarbage", "type": "offer",
                                                          "avatar": {"sample": "single_face"}})
        assert response.status == 400 and "malformed offer" in (await response.json())["error"]
        response = await client.post("/api/offer", json={"sdp": sdp, "type": "offer", "avatar": {"sample": "x"}})
        assert response.status == 400 and "no sample face named" in (await response.json())["error"]
        assert (await (await client.get("/api/status")).json())["sessions"] == 0
        await caller.close()

    asyncio.run(with_client(serve_app(), body))


class Named(str):
    """A scheduler test's session: its name, and whether the scheduler closed it."""

    closed = False

    def close(self) -> None:
        self.closed = True


def test_scheduler_batches_latest_frames_and_drops_late_ones():
    batches = []

    def process(sessions, frames):
        batches.append(list(frames))
        return [frame + 1 for frame in frames]

    async def body():
        scheduler = BatchScheduler(process, max_sessions=2, deadline_s=0.05)
        sessions = Named("a"), Named("b")
        a, b = scheduler.open(sessions[0]), scheduler.open(sessions[1])
        with pytest.raises(ServerFull, match="2 of 2 sessions"):
            scheduler.open(Named("c"))
        scheduler.submit(a, 10, "a10")
        scheduler.submit(a, 11, "a11")  # replaces 10: the latest frame wins
        scheduler.submit(b, 20, "b20")
        runner = asyncio.ensure_future(scheduler.run())
        out_a, out_b = await a.next_output(), await b.next_output()
        assert batches == [[11, 20]]  # one batch, both sessions
        assert (out_a.image, out_a.tag, out_b.image, out_b.batch_size) == (12, "a11", 21, 2)
        assert (a.received, a.replaced, a.processed) == (2, 1, 1)
        scheduler.control(b, lambda session: batches.append(f"control {session}"))
        scheduler.submit(a, 12, "late")
        a.pending = (12, time.monotonic() - 1.0, "late")  # waited past the deadline
        await asyncio.sleep(0.05)
        assert a.late == 1 and batches[-1] == "control b"
        runner.cancel()
        scheduler.shutdown()
        assert all(session.closed for session in sessions)  # on the model thread, before shutdown returns

    asyncio.run(body())


def test_one_at_a_time_mode_serves_sessions_in_turn():
    served = []

    async def body():
        scheduler = BatchScheduler(lambda s, f: served.append(s) or f, max_sessions=3, max_batch=1)
        slots = [scheduler.open(Named(name)) for name in "abc"]
        for slot in slots:
            scheduler.submit(slot, 0)
        runner = asyncio.ensure_future(scheduler.run())
        for slot in slots:
            await slot.next_output()
        runner.cancel()
        scheduler.shutdown()

    asyncio.run(body())
    assert served == [["a"], ["b"], ["c"]]


@needs_isolation
def test_two_aiortc_callers_get_frames_and_closing_frees_the_session(monkeypatch, feat_data):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 20, (320, 240))
    app = serve_app(max_sessions=2)

    async def body():
        async with TestServer(app) as server:
            url = str(server.make_url("")).rstrip("/")
            (pc1, got1, stats1, status), (pc2, got2, _, _) = await asyncio.gather(
                call_server(url, frames), call_server(url, frames))
            assert status["sessions"] == 2, status
            assert len(got1) > 5 and len(got2) > 5
            assert not np.array_equal(got1[0], got1[-1])  # the avatar changes with the camera
            assert any("stats" in m for m in stats1) and any("bad control message" in m.get("error", "")
                                                             for m in stats1)
            sessions = [weakref.ref(slot.session) for slot in app[STATE].scheduler.slots]
            assert {s().smoothing for s in sessions} == {0.2} and {s().resets for s in sessions} == {1}
            async with ClientSession() as http:
                full = await http.post(f"{url}/api/offer", json={"sdp": "v=0", "type": "offer"})
                assert full.status == 503 and "2 of 2 sessions" in (await full.json())["error"]
            await pc1.close()  # one caller leaves
            for _ in range(50):  # the connection notices, then a batch in flight finishes
                gc.collect()
                if len(app[STATE].peers) == 1 and sum(s() is None for s in sessions) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len(app[STATE].scheduler.slots) == 1 and len(app[STATE].peers) == 1
            assert sum(s() is None for s in sessions) == 1  # its session is released
            count = len(got2)
            await asyncio.sleep(0.5)
            assert len(got2) > count  # the other caller keeps receiving
            await pc2.close()

    asyncio.run(body())


def test_serve_command_refuses_bad_options(capsys):
    from mcnet_rt.cli import main

    assert main(["serve", "--untrained", "small", "--max-sessions", "0"]) == 2
    assert "--max-sessions must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--untrained", "small", "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "access token must be at least 16 characters" in capsys.readouterr().err


def test_serve_detect_every_reaches_every_callers_face_tracker(monkeypatch, feat_data, capsys):
    from mcnet_rt.cli import main
    from mcnet_rt.io.image import read_image
    from mcnet_rt.serve import server

    with pytest.raises(SystemExit) as refused:
        main(["serve", "--untrained", "small", "--detect-every", "0"])
    assert refused.value.code == 2
    assert "--detect-every: expected a whole number of frames, at least 1, got '0'" in capsys.readouterr().err
    made = []
    monkeypatch.setattr(server, "build_app", lambda make_session, *rest: made.append(make_session))
    monkeypatch.setattr(server, "serve", lambda *args: signal.SIGTERM)  # no socket: the sessions are the point
    assert main(["serve", "--untrained", "small", "--detect-every", "4", "--face", "centre", "--align",
                 "none"]) == 128 + signal.SIGTERM
    session = made[0](read_image(feat_data / "single_face.jpg"))
    assert session.options.detect_every == session.tracker.detect_every == 4
    assert (session.tracker.choice, session.tracker.align) == ("centre", "none")  # as animate and live take them
    assert main(["serve", "--untrained", "small", "--face", "biggest"]) == 2
    assert "face choice must be a number from 1 (the leftmost face)" in capsys.readouterr().err
