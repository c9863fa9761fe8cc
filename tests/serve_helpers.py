"""Shared by the serve tests: a stand-in session, a server on a background thread, a real clip as a sender, and
ICE limited to loopback (all test traffic stays on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from fractions import Fraction

import numpy as np
import pytest
from aiohttp import web

# Absent from some GPU images: the serve tests are skipped there.
av = pytest.importorskip("av", exc_type=ImportError)
MediaStreamTrack = pytest.importorskip("aiortc", exc_type=ImportError).MediaStreamTrack

from mcnet_rt.errors import InputError


class StandInSession:
    """Test-only stand-in for pipeline.session.Session (no model): it refuses a flat grey avatar as 'no face'."""

    def __init__(self, image: np.ndarray):
        if image.std() < 1:
            raise InputError("avatar: no face found (stand-in)")
        self.resets = 0
        self.smoothing = 0.0

    def reset_reference(self) -> None:
        self.resets += 1

    def set_smoothing(self, seconds: float) -> None:
        self.smoothing = seconds

    def stats(self) -> dict:
        return {"frames": 0, "stages": {}}


def stand_in_process(sessions: list, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The driving frame, inverted: the output changes as the camera frames change."""
    return [255 - frame for frame in frames]


def loopback_ice(monkeypatch) -> None:
    """aioice gathers only 127.0.0.1 (by default it skips loopback and would use the machine's other interface)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


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
