"""`mcnet-rt serve` as a process (untrained small, loopback ICE): one SIGTERM ends it within 5 s whether it is idle
or mid-call, leaving no temporary file; a connection that never finishes its request headers is dropped; the
printed URL names the port really bound (--port 0). The state after a browser call is in test_serve_browser."""
from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from mcnet_rt.serve.limits import HEADER_TIMEOUT_S
from support.serve_helpers import (call_server, clip_frames, loopback_ice, needs_isolation, seconds_to_stop, serve_process,
                           until)

pytestmark = [needs_isolation, pytest.mark.slow]


def test_sigterm_ends_an_idle_server_in_time(tmp_path):
    with serve_process(tmp=tmp_path) as (process, url):
        assert not url.endswith(":0")
        assert seconds_to_stop(process) < 5
    assert process.returncode == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["serve.log"]


def test_sigterm_ends_a_server_mid_call_and_slow_headers_are_cut_off(tmp_path, feat_data, monkeypatch):
    loopback_ice(monkeypatch)
    frames = clip_frames(feat_data / "single_face.mp4", 20, (320, 240))
    with serve_process(tmp=tmp_path) as (process, url):
        port = int(url.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())  # ... and never the end
        started = time.monotonic()

        async def call():
            pc, received, _, status = await call_server(url, frames, seconds=1.0)
            assert status["sessions"] == 1
            await until(lambda: received, 30, "the first avatar frame")
            return pc

        loop = asyncio.new_event_loop()
        pc = loop.run_until_complete(call())
        slow.settimeout(HEADER_TIMEOUT_S + 5)
        assert slow.recv(1024) == b""  # closed by the server, no answer
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 5
        assert seconds_to_stop(process) < 5  # the caller is still connected
        loop.run_until_complete(pc.close())
        loop.close()
    assert process.returncode == 128 + signal.SIGTERM
    log = (tmp_path / "serve.log").read_text()
    assert "session 1 closed: the server is stopping" in log and "Traceback" not in log
    assert [p.name for p in tmp_path.iterdir()] == ["serve.log"]
