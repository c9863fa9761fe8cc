"""Shared by the serve tests: a stand-in session, a server on a background thread or as a `mcnet-rt serve` process,
a real clip as a sender, offers from in-process aiortc callers, and ICE limited to loopback. Tests that open
sockets run only where no packet can leave loopback (`needs_isolation`)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession, web

# Absent from some GPU images: the serve tests are skipped there.
av = pytest.importorskip("av", exc_type=ImportError)
pytest.importorskip("aiortc", exc_type=ImportError)
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402

from mcnet_rt.pipeline.session import NoSourceFace  # noqa: E402


class StandInSession:
    """Test-only stand-in for pipeline.session.Session (no model): it refuses a flat grey avatar as 'no face'."""

    def __init__(self, image: np.ndarray):
        if image.std() < 1:
            raise NoSourceFace("avatar: no face found (stand-in)")
        self.resets = 0
        self.smoothing = 0.0
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    def reset_reference(self) -> None:
        self.resets += 1

    def set_smoothing(self, seconds: float) -> None:
        self.smoothing = seconds

    def stats(self) -> dict:
        return {"frames": 0, "stages": {}}


def stand_in_process(sessions: list, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The driving frame, inverted: the output changes as the camera frames change."""
    return [255 - frame for frame in frames]


INTERFACES = [name for _, name in socket.if_nameindex()]
needs_isolation = pytest.mark.skipif(
    INTERFACES != ["lo"], reason=f"opens sockets, so it runs only in a network namespace with loopback alone "
    f"(`make test` runs pytest in `unshare -n`); visible here: {', '.join(INTERFACES)}")


def loopback_ice(monkeypatch) -> None:
    """aioice gathers only 127.0.0.1 (by default it skips loopback and would use the machine's other interface)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def caller_offer(track: MediaStreamTrack | None = None, direction: str = "sendrecv"):
    """An aiortc caller with its offer set as its local description: `track` sent as its camera (or a video
    transceiver in `direction` without one) and a control data channel; returns (connection, channel)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if track is not None:
        pc.addTrack(track)
    else:
        pc.addTransceiver("video", direction=direction)
    channel = pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, channel


async def until(condition, timeout: float, what: str) -> float:
    """Poll `condition()` (sync or async) every 0.1 s until true; the seconds it took (AssertionError after
    `timeout`): the serve tests run on loaded machines, so they wait for what must happen rather than sleep."""
    start = time.monotonic()
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


CONTROLS = ({"smoothing": 0.2}, {"reset": True}, {"smoothing": "a lot"})


async def start_call(http: ClientSession, url: str, frames, avatar=None):
    """An aiortc caller that sends `frames` (a real clip, looped) and offers its call to `url`: returns (its
    connection, its control channel, the avatar frames it receives (a list that grows), the offer's HTTP status,
    the answer's JSON). The answer is set on the connection when the status is 200."""
    pc, channel = await caller_offer(ClipTrack(frames))
    received = []

    @pc.on("track")
    def on_track(track):
        async def read():
            with contextlib.suppress(MediaStreamError):
                while True:
                    received.append((await track.recv()).to_ndarray(format="rgb24"))
        asyncio.ensure_future(read())

    response = await http.post(f"{url}/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                          "avatar": avatar or {"sample": "single_face"}})
    answer = await response.json()
    if response.status == 200:
        await pc.setRemoteDescription(RTCSessionDescription(**{k: answer[k] for k in ("sdp", "type")}))
    return pc, channel, received, response.status, answer


async def call_server(url: str, frames, avatar=None, seconds: float = 2.0, messages=CONTROLS):
    """One aiortc caller: sends `frames` and the data-channel `messages` (JSON values, or str sent as they are);
    returns (its connection, avatar frames received, messages received, the server's status during the call)."""
    async with ClientSession() as http:
        pc, channel, received, code, answer = await start_call(http, url, frames, avatar)
        assert code == 200, answer
        stats = []
        channel.on("message", lambda message: stats.append(json.loads(message)))
        channel_open = asyncio.Event()
        channel.on("open", channel_open.set)
        await asyncio.wait_for(channel_open.wait(), 10)
        for message in messages:
            channel.send(message if isinstance(message, str) else json.dumps(message))
        await asyncio.sleep(seconds)
        status = await (await http.get(f"{url}/api/status")).json()
    return pc, received, stats, status


async def frames_flow(received: list, timeout: float, what: str) -> float:
    """Seconds until three more avatar frames arrived in `received` (a list `start_call` fills)."""
    count = len(received)
    return await until(lambda: len(received) >= count + 3, timeout, what)


async def call_until_answered(http, url, frames, limit_s: float = 60.0):
    """What the page does: call; on 503 wait the Retry-After and call again (bounded)."""
    deadline = time.monotonic() + limit_s
    while True:
        call = await start_call(http, url, frames)
        if call[3] != 503 or time.monotonic() > deadline:
            return call
        await call[0].close()
        await asyncio.sleep(1)


async def reconnect_when_silent(http, url, frames, call, silent_s: float = 2.0, limit_s: float = 60.0):
    """What the page does when its stream stops: no avatar frame for `silent_s` -> hang up and call again."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count = len(call[2])
        await asyncio.sleep(silent_s)
        if len(call[2]) == count:
            break
    await call[0].close()
    return await call_until_answered(http, url, frames, limit_s)


# `mcnet-rt serve` as a separate process, its ICE limited to loopback as loopback_ice does in-process.
SERVE_ON_LOOPBACK = ("import sys, aioice.ice; "
                     "aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ['127.0.0.1']; "
                     "from mcnet_rt.cli import main; sys.exit(main(sys.argv[1:]))")


@contextlib.contextmanager
def serve_process(*args: str, tmp: Path):
    """`mcnet-rt serve --port 0 ARGS` (untrained small) with TMPDIR=tmp; yields (process, base URL) once it
    prints its URL; killed at the end if a test left it running. Its log is tmp/serve.log."""
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
    log = open(tmp / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-c", SERVE_ON_LOOPBACK, "serve", "--untrained", "small",
                                "--port", "0", *args], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving on http://"), (line, (tmp / "serve.log").read_text())
        yield process, line.split()[-1].split("/?")[0].rstrip("/")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def process_memory(pid: int) -> tuple[int, int]:
    """(resident bytes, threads) of a running process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def seconds_to_stop(process: subprocess.Popen, signum: int = signal.SIGTERM, limit: float = 30.0) -> float:
    """Send `signum` and time the exit (AssertionError when it is still running after `limit`)."""
    start = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(limit)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {limit} s after {signal.Signals(signum).name}") from None
    return time.monotonic() - start


@contextlib.contextmanager
def running_server(app: web.Application):
    """Serve `app` on 127.0.0.1 (a free port) from a background thread; yields (base URL, the server's loop)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    port = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}", loop
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def clip_frames(path, count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first `count` frames of a real clip as RGB uint8 arrays (resized to (width, height) when given)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1])
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


class ClipTrack(MediaStreamTrack):
    """A camera stand-in for an in-process aiortc caller: a real clip's frames, looped, at `fps`."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0):
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.index = 0
        self.started = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self.started is None:
            self.started = loop.time()
        wait = self.started + self.index / self.fps - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self.frames[self.index % len(self.frames)], format="rgb24")
        frame.pts, frame.time_base = int(self.index * 90000 / self.fps), Fraction(1, 90000)
        self.index += 1
        return frame


def write_y4m(path, frames: list[np.ndarray], fps: int = 30) -> None:
    """A .y4m clip (Chromium's fake camera input) from RGB frames: 4:2:0 planes after a one-line header."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            planes = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
            out.write(b"FRAME\n" + planes.tobytes())
