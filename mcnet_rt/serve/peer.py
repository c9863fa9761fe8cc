"""One caller's WebRTC connection: its camera frames go to the scheduler, its avatar frames come back on a video
track, and a data channel carries the page's controls (reset pose, smoothing) and the server's stats. A caller
that sends no camera frame for IDLE_TIMEOUT_S, counted from its answer (whether or not its track ever arrives), is
closed: no caller holds a session it does not use. A caller whose batch failed is told why on its data channel
(the page shows it) before its connection is closed."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from fractions import Fraction

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from ..errors import InputError
from .limits import MAX_MESSAGE_BYTES, parse_json
from .scheduler import BatchScheduler, Slot, SlotClosed

log = logging.getLogger("mcnet_rt.serve")
RTP_TIME_BASE = Fraction(1, 90000)
FAREWELL_TIMEOUT_S = 1.0  # how long a closing peer waits for its last data-channel message to be sent
BATCH_FAILED = "the server failed to animate this call and ended it (its log says why); start the call again"


class AvatarTrack(MediaStreamTrack):
    """The avatar stream: each frame keeps the timestamp of the camera frame that drove it."""

    kind = "video"

    def __init__(self, slot: Slot):
        super().__init__()
        self.slot = slot

    async def recv(self) -> VideoFrame:
        try:
            output = await self.slot.next_output()
        except SlotClosed:
            self.stop()
            raise MediaStreamError from None
        frame = VideoFrame.from_ndarray(output.image, format="rgb24")
        frame.pts, frame.time_base = output.tag, RTP_TIME_BASE
        return frame


class Peer:
    """Owns the peer connection, the slot and the tasks of one caller; `close()` releases all of them.

    Made after the caller's offer was set as the remote description (its camera track is then known); `start()`
    adds the avatar track and starts the idle watch."""

    def __init__(self, name: str, pc: RTCPeerConnection, slot: Slot, scheduler: BatchScheduler, on_closed,
                 idle_s: float):
        self.name = name
        self.pc = pc
        self.slot = slot
        self.scheduler = scheduler
        self.idle_s = idle_s
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.last_frame = time.monotonic()
        self._on_closed = on_closed
        self.output = AvatarTrack(slot)
        self.channel = None  # the caller's control channel, once it is open
        slot.on_failure = self._on_batch_failure
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    def start(self) -> None:
        """Send the avatar on the offer's video transceiver, read the caller's camera, watch for idleness."""
        self.pc.addTrack(self.output)
        for receiver in self.pc.getReceivers():
            if receiver.track is not None and receiver.track.kind == "video":
                self._spawn(self._pump(receiver.track))
        self.last_frame = time.monotonic()
        self._spawn(self._watch_idle())

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Camera frames to the scheduler (decoded to RGB only for frames that make a batch)."""
        try:
            while True:
                frame = await track.recv()
                self.last_frame = time.monotonic()
                self.scheduler.submit(self.slot, frame, frame.pts)
        except MediaStreamError:
            await self.close("its camera stream ended")

    async def _watch_idle(self) -> None:
        """Close a caller whose frames never came or stopped (a closed tab, a lost network, a caller that offers a
        camera and sends nothing) after idle_s, rather than ICE's 30 s or never."""
        while not self.closed:
            left = self.last_frame + self.idle_s - time.monotonic()
            if left <= 0:
                await self.close(f"no camera frame for {self.idle_s:g} s")
                return
            await asyncio.sleep(left)

    def _on_datachannel(self, channel) -> None:
        self.channel = channel
        channel.on("message", lambda message: self._on_message(channel, message))
        channel.on("close", lambda: self._spawn(self.close("its data channel closed")))
        self._spawn(self._send_stats(channel))

    def _on_message(self, channel, message) -> None:
        try:
            command = parse_json(message, MAX_MESSAGE_BYTES)
            if not isinstance(command, dict):
                raise ValueError("expected a JSON object")
            if "reset" in command:
                self.scheduler.control(self.slot, lambda session: session.reset_reference())
            elif "smoothing" in command:
                from ..pipeline.session import check_smoothing  # the serve stack loads no face stack on import

                value = check_smoothing(float(command["smoothing"]))
                self.scheduler.control(self.slot, lambda session: session.set_smoothing(value))
            else:
                raise ValueError(f"unknown command {sorted(command)}")
        except (InputError, ValueError, TypeError, AttributeError) as e:
            log.warning("%s: bad control message: %s", self.name, e)
            channel.send(json.dumps({"error": f"bad control message: {e}"}))

    async def _send_stats(self, channel) -> None:
        """Once a second: the scheduler's counters and the session's stats (per-stage milliseconds)."""
        while not self.closed:
            await asyncio.sleep(1.0)
            if channel.readyState != "open" or self.slot.session is None:
                continue
            stats = {**self.slot.counters(), "session": self.slot.session.stats()}
            channel.send(json.dumps({"stats": stats}))

    def _on_batch_failure(self, error: BaseException) -> None:
        """The scheduler closed this caller's slot: its batch raised (logged there, with the traceback)."""
        self._spawn(self.close(f"a batch with its frame failed ({type(error).__name__})", tell=BATCH_FAILED))

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close(f"its connection {self.pc.connectionState}")

    async def close(self, reason: str, tell: str | None = None) -> None:
        """Release everything of this caller; `tell` is sent to the page as an error message first."""
        if self.closed:
            return
        self.closed = True
        log.info("%s closed: %s", self.name, reason)
        if tell is not None:
            await self._farewell(tell)
        self.scheduler.close(self.slot)
        self._on_closed(self)
        self.output.stop()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        await close_connection(self.pc)

    async def _farewell(self, message: str) -> None:
        """Send `message` as {"error": ...} and wait (at most FAREWELL_TIMEOUT_S) until it has left: closing the
        connection drops what its data channel has not sent yet."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        channel.send(json.dumps({"error": message}))
        deadline = time.monotonic() + FAREWELL_TIMEOUT_S
        await asyncio.sleep(0)
        while channel.bufferedAmount and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


async def close_connection(pc: RTCPeerConnection) -> None:
    """Close a peer connection; aiortc's own failures while closing one it could not set up (e.g. an
    AttributeError for a transport it never made) are logged, never the caller's answer."""
    try:
        await pc.close()
    except Exception:
        log.warning("closing a peer connection failed", exc_info=True)
