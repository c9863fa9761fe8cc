"""`mcnet-rt serve` against hostile and careless callers (stand-in sessions; the soak and stop tests run the real
model): a caller that sends no camera, a page from another site, malformed and oversized requests, our own
failures, and the command's options."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

pytest.importorskip("aiortc", exc_type=ImportError)  # absent from some GPU images: the serve tests are skipped there
from aiortc import MediaStreamTrack  # noqa: E402

from mcnet_rt.serve import limits, security  # noqa: E402
from mcnet_rt.serve.peer import BATCH_FAILED  # noqa: E402
from mcnet_rt.serve.scheduler import BatchScheduler, SlotClosed  # noqa: E402
from mcnet_rt.serve.server import STATE, build_app, page_url  # noqa: E402
from support.serve_helpers import (StandInSession, call_server, caller_offer, clip_frames, frames_flow,  # noqa: E402
                           loopback_ice, needs_isolation, stand_in_process, start_call, until)

TOKEN = "hostile-test-token-0123456789"


class SilentCamera(MediaStreamTrack):
    """A camera that is offered and never sends a frame."""

    kind = "video"

    async def recv(self):
        await asyncio.Event().wait()


def app_with(opened: list, **options):
    """A stand-in server whose sessions are kept in `opened` (to check that each one is closed)."""

    def make_session(image):
        opened.append(StandInSession(image))
        return opened[-1]

    return build_app(make_session, stand_in_process, **{"max_sessions": 2, **options})


async def raw_request(port: int, request: bytes) -> bytes:
    """Bytes on a plain socket (headers an HTTP client would refuse to send); the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_json_from_callers_is_bounded_in_size_and_depth():
    assert limits.parse_json(b'{"a": [1, {"b": "[[[[[[[[[[[[[[[[[[[[[["}]}', 100) == {"a": [1, {"b": "[" * 22}]}
    assert limits.parse_json(r'["\"[[[[[[[[[[[[[[[[[[[[["]', 100) == ['"' + "[" * 21]  # an escaped quote
    for deep in ("[" * 30000, r'["\\"' + "[" * 20, '{"a":' * 17):  # an escaped backslash ends the string
        with pytest.raises(ValueError, match="nested deeper than 16 levels"):
            limits.parse_json(deep, 10**6)
    with pytest.raises(ValueError, match="Unterminated string"):  # one pass: a regex over strings took 46 s
        limits.parse_json('"' + '\\"' * 30000, 10**6)
    with pytest.raises(ValueError, match="over the limit of 10"):
        limits.parse_json("é" * 6, 10)  # bytes, not characters
    with pytest.raises(ValueError):
        limits.parse_json(b"\xff{}", 100)
    with pytest.raises(ValueError):
        limits.parse_json("1" * 5000, 10**6)  # past Python's digit limit: a ValueError too


def test_printed_url_has_the_real_port_and_an_encoded_token():
    assert page_url("127.0.0.1", 41234, None) == "http://127.0.0.1:41234/"
    assert page_url("::1", 8080, "a&b=c/d?e#f%g h") == "http://[::1]:8080/?token=a%26b%3Dc%2Fd%3Fe%23f%25g%20h"


def test_serve_refuses_ports_out_of_range(capsys):
    from mcnet_rt.cli import main

    for port in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as refused:
            main(["serve", "--untrained", "small", "--port", port])
        assert refused.value.code == 2
        assert f"--port: expected a port number from 0 to 65535, got '{port}'" in capsys.readouterr().err


@needs_isolation
def test_a_caller_without_video_never_holds_a_slot(monkeypatch, feat_data):
    """recvonly offers are refused; callers that offer a camera and send nothing are closed idle_s after their
    answer, so max_sessions of them do not lock a real caller out."""
    loopback_ice(monkeypatch)
    opened = []
    app = app_with(opened, idle_s=1.5)
    frames = clip_frames(feat_data / "single_face.mp4", 10, (160, 120))

    async def body():
        async with TestServer(app) as server, ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")

            async def offer(pc):
                response = await http.post(f"{url}/api/offer", json={
                    "sdp": pc.localDescription.sdp, "type": "offer", "avatar": {"sample": "single_face"}})
                return response.status, await response.json()

            listener, _ = await caller_offer(direction="recvonly")
            status, answer = await offer(listener)
            assert status == 400 and "sends no video" in answer["error"]
            assert opened == []  # refused before any avatar was prepared
            silent = [(await caller_offer(SilentCamera()))[0] for _ in range(2)]
            assert [(await offer(pc))[0] for pc in silent] == [200, 200]
            status, answer = await offer((await caller_offer(SilentCamera()))[0])
            assert status == 503 and "2 of 2 sessions" in answer["error"]
            waited = await until(lambda: not app[STATE].scheduler.slots and not app[STATE].peers, 10,
                                 "the silent callers to be closed")
            assert waited < 1.5 + 2.0  # the idle limit, and a loaded machine's slack
            await until(lambda: [s.closed for s in opened] == [1, 1], 5, "their sessions to be closed")
            pc, received, _, status = await call_server(url, frames, seconds=0.5)
            assert status["sessions"] == 1
            await until(lambda: received, 30, "the real caller's first avatar frame")
            for connection in [listener, *silent, pc]:
                await connection.close()

    asyncio.run(body())


@needs_isolation
def test_a_foreign_host_is_refused_without_a_token():
    """DNS rebinding: a page on attacker.example resolves its name to 127.0.0.1; its requests still name its host."""

    async def body():
        for token, foreign_status in ((None, 421), (TOKEN, 200)):
            async with TestServer(build_app(StandInSession, stand_in_process, 1, token)) as server:
                port = server.port
                auth = f"Authorization: Bearer {TOKEN}\r\n" if token else ""
                for host, expected in ((f"attacker.example:{port}", foreign_status), (f"127.0.0.1:{port}", 200),
                                       (f"LOCALHOST:{port}", 200), (f"[::1]:{port}", 200),
                                       (f"127.0.0.2:{port}", 200), ("127.0.0.1", foreign_status),
                                       (f"127.0.0.1:{port + 1}", foreign_status), ("127.0.0.1:x", foreign_status),
                                       (f"attacker.example.:{port}", foreign_status), ("", foreign_status)):
                    answer = await raw_request(port, f"GET /api/status HTTP/1.1\r\nHost: {host}\r\n{auth}"
                                                     "Connection: close\r\n\r\n".encode())
                    assert answer.startswith(f"HTTP/1.1 {expected}".encode()), (token, host, answer[:80])
                    assert b"Content-Security-Policy: default-src 'none'" in answer
                rebound = await raw_request(port, f"POST /api/avatar HTTP/1.1\r\nHost: attacker.example:{port}\r\n"
                                                  f"Origin: http://attacker.example:{port}\r\n{auth}Content-Length: 2"
                                                  "\r\nConnection: close\r\n\r\nxx".encode())
                # without a token: refused by its Host; with one, the token is what lets it through to the handler
                assert rebound.startswith(b"HTTP/1.1 421" if token is None else b"HTTP/1.1 400"), rebound[:80]

    asyncio.run(body())


@needs_isolation
def test_malformed_requests_are_refused_with_4xx_never_500(monkeypatch):
    loopback_ice(monkeypatch)
    opened = []

    async def body():
        caller, _ = await caller_offer(SilentCamera())
        good = caller.localDescription.sdp
        lines = good.split("\r\n")
        broken_sdps = ["", "v=0", "v=0\r\ngarbage", good[: len(good) // 2], good.replace("a=setup:", "a=setup-"),
                       good.replace("a=ice-ufrag", "a=x"), re.sub(r"m=video \d+", "m=video x", good),
                       good.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256"),
                       "\r\n".join(line for line in lines if not line.startswith("a=rtpmap")),
                       "\r\n".join(line.split(" ")[0] for line in lines), "\x00" * 100,
                       good + good[good.index("m=video"):] * 3]  # eight media sections
        async with TestServer(app_with(opened, token=TOKEN)) as server, ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            answers = []
            for sdp in broken_sdps:
                answers.append(await http.post(f"{url}/api/offer", headers=bearer, json={
                    "sdp": sdp, "type": "offer", "avatar": {"sample": "single_face"}}))
            deep_avatar = json.loads("[" * 18 + "1" + "]" * 18)
            for body_bytes in (b"[" * 30000, b'{"sdp": ' * 30000, b"\xff\xfe", b"{}", b"[]", b"1e999999",
                               json.dumps({"sdp": good, "type": "offer", "avatar": deep_avatar}).encode()):
                answers.append(await http.post(f"{url}/api/offer", headers=bearer, data=body_bytes))
            too_long = b" " * (limits.MAX_OFFER_BYTES + 1)
            answers.append(await http.post(f"{url}/api/offer", headers=bearer, data=too_long))
            answers.append(await http.post(f"{url}/api/offer", headers=bearer, json={
                "sdp": good, "type": "offer", "avatar": {"upload": "no-such-upload"}}))
            for i, response in enumerate(answers):
                assert 400 <= response.status < 500, (i, response.status, await response.text())
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            assert answers[-2].status == 413
            assert opened == []  # no avatar was prepared for any of them
            await caller.close()

            port = server.port
            for header in (b"Authorization: Bearer \xff\xfe" + TOKEN.encode(), b"Authorization: Bearer \xc3\xa9",
                           b"Cookie: " + security.TOKEN_COOKIE.encode() + b"=\xff" + TOKEN.encode()):
                answer = await raw_request(port, b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header +
                                           b"\r\nConnection: close\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
                assert b"Content-Security-Policy: default-src 'none'" in answer
            for request in (b"GET /api/samples/%ff%fe HTTP/1.1", b"GET /static/%00 HTTP/1.1",
                            b"GET /static/..%2f..%2fserver.py HTTP/1.1", b"POST /api/avatar HTTP/1.1",
                            b"GET /\xff HTTP/1.1", b"GARBAGE"):
                answer = await raw_request(port, request + b"\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                                           TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
                assert answer[9:10] == b"4", (request, answer[:80])
            stale = await http.get(f"{url}/?token={TOKEN}", cookies={security.TOKEN_COOKIE: "an-old-token-1234567"})
            assert stale.status == 200 and stale.cookies[security.TOKEN_COOKIE].value == TOKEN

    asyncio.run(body())


@needs_isolation
def test_our_own_failures_are_logged_500s_with_the_security_headers(monkeypatch, caplog):
    """A bug of ours is not the caller's "malformed SDP offer": 500, its traceback in the log, and whatever the
    offer had made (the peer connection, the session) is closed."""
    import aioice.ice

    opened = []

    async def body():
        caller, _ = await caller_offer(SilentCamera())
        # as in a mistaken set-up: the ICE host-address function with the wrong signature -> TypeError in gathering
        monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda: ["127.0.0.1"])
        async with TestServer(app_with(opened)) as server, ClientSession() as http:
            response = await http.post(str(server.make_url("/api/offer")), json={
                "sdp": caller.localDescription.sdp, "type": "offer", "avatar": {"sample": "single_face"}})
            assert response.status == 500
            assert "malformed" not in (await response.json())["error"]
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            await asyncio.sleep(0.2)  # the session's close runs on the model thread
            assert [s.closed for s in opened] == [1]
            assert not server.app[STATE].peers and not server.app[STATE].scheduler.slots
        await caller.close()

    with caplog.at_level(logging.ERROR, "mcnet_rt.serve"):
        asyncio.run(body())
    failure = [r for r in caplog.records if "POST /api/offer failed" in r.getMessage()]
    assert failure and failure[0].exc_info[0] is TypeError


class Explodes:
    """A batch function that raises while `armed` (our own bug in the model step, say), else the stand-in's."""

    def __init__(self):
        self.armed = False

    def __call__(self, sessions, frames):
        if self.armed:
            raise TypeError("a bug in the step")
        return stand_in_process(sessions, frames)


def test_a_failing_batch_ends_its_sessions_with_the_error_and_the_others_are_served(caplog):
    process = Explodes()
    told = []
    avatar = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)  # not flat: the stand-in accepts it

    async def body():
        scheduler = BatchScheduler(process, max_sessions=2)
        runner = asyncio.ensure_future(scheduler.run())
        failing = scheduler.open(StandInSession(avatar))
        failing.on_failure = told.append
        process.armed = True
        scheduler.submit(failing, np.zeros((2, 2, 3), np.uint8))
        with pytest.raises(SlotClosed) as closed:
            await asyncio.wait_for(failing.next_output(), 10)
        assert isinstance(closed.value.__cause__, TypeError) and told == [closed.value.__cause__]
        assert failing.closed and scheduler.slots == [] and isinstance(scheduler.failure, TypeError)
        process.armed = False
        other = scheduler.open(StandInSession(avatar))
        scheduler.submit(other, np.zeros((2, 2, 3), np.uint8))
        output = await asyncio.wait_for(other.next_output(), 10)  # the loop is still running
        assert output.image.max() == 255 and scheduler.failure is None
        runner.cancel()
        scheduler.shutdown()

    with caplog.at_level(logging.ERROR, "mcnet_rt.serve"):
        asyncio.run(body())
    failure = [r for r in caplog.records if "a batch of 1 frames failed" in r.getMessage()]
    assert failure and failure[0].exc_info[0] is TypeError


@needs_isolation
def test_a_caller_whose_batch_fails_is_told_on_its_channel_and_the_next_caller_is_served(monkeypatch, feat_data):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 10, (160, 120))
    process = Explodes()
    app = build_app(StandInSession, process, 1)

    async def body():
        async with TestServer(app) as server, ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            process.armed = True
            pc, channel, _, code, answer = await start_call(http, url, frames)
            assert code == 200, answer
            messages = []
            channel.on("message", lambda message: messages.append(json.loads(message)))
            await until(lambda: {"error": BATCH_FAILED} in messages, 30, "the failure on the data channel")
            await until(lambda: not app[STATE].peers and not app[STATE].scheduler.slots, 30, "the call to end")
            await pc.close()
            process.armed = False
            pc, _, received, code, answer = await start_call(http, url, frames)
            assert code == 200, answer  # its slot was freed
            await frames_flow(received, 30, "the next caller's avatar frames")
            await pc.close()

    asyncio.run(body())


@needs_isolation
def test_bad_data_channel_messages_are_answered_and_the_call_goes_on(monkeypatch, feat_data):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 10, (160, 120))
    app = build_app(StandInSession, stand_in_process, 1)

    async def body():
        async with TestServer(app) as server:
            url = str(server.make_url("")).rstrip("/")
            pc, received, messages, status = await call_server(url, frames, seconds=1.5, messages=(
                "[" * 4000, "x" * (limits.MAX_MESSAGE_BYTES + 1), "[1, 2]", "null", {"smoothing": float("nan")},
                {"reset": True}))
            errors = [m["error"] for m in messages if "error" in m]
            assert len(errors) == 5, errors
            assert "nested deeper" in errors[0] and "over the limit" in errors[1]
            count = len(received)
            await until(lambda: len(received) > count, 30, "more avatar frames")  # still connected and animated
            assert status["sessions"] == 1
            assert app[STATE].scheduler.slots[0].session.resets == 1
            await pc.close()

    asyncio.run(body())


@needs_isolation
def test_a_burst_of_offers_makes_no_more_sessions_than_the_limit(monkeypatch):
    loopback_ice(monkeypatch)
    opened = []
    app = app_with(opened)

    async def body():
        callers = [(await caller_offer(SilentCamera()))[0] for _ in range(6)]
        async with TestServer(app) as server, ClientSession() as http:
            url = str(server.make_url("/api/offer"))
            answers = await asyncio.gather(*(http.post(url, json={
                "sdp": pc.localDescription.sdp, "type": "offer", "avatar": {"sample": "single_face"}})
                for pc in callers))
            assert sorted(a.status for a in answers) == [200, 200, 503, 503, 503, 503]
            assert len(opened) == 2  # the refused four prepared nothing
        for pc in callers:
            await pc.close()

    asyncio.run(body())
