"""One caller's WebRTC connection: its camera frames go to the scheduler, its avatar frames come back on a video
track, and a data channel carries the page's controls (reset pose, smoothing) and the server's stats."""
from __future__ import annotations

import asyncio
import json
import logging
from fractions import Fraction

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from .scheduler import BatchScheduler, Slot, SlotClosed

log = logging.getLogger("mcnet_rt.serve")
RTP_TIME_BASE = Fraction(1, 90000)
MAX_SMOOTHING = 1.0
IDLE_TIMEOUT_S = 10.0


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
    """Owns the peer connection, the slot and the tasks of one caller; `close()` releases all of them."""

    def __init__(self, name: str, pc: RTCPeerConnection, slot: Slot, scheduler: BatchScheduler, on_closed):
        self.name = name
        self.pc = pc
        self.slot = slot
        self.scheduler = scheduler
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self._on_closed = on_closed
        self.output = AvatarTrack(slot)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    def start_output(self) -> None:
        """Send the avatar on the offer's video transceiver (call after setting the remote description)."""
        self.pc.addTrack(self.output)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._spawn(self._pump(track))

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Camera frames to the scheduler (decoded to RGB only for frames that make a batch). A caller whose
        frames stop (a closed tab, a lost network) is closed after IDLE_TIMEOUT_S rather than ICE's 30 s."""
        try:
            while True:
                frame = await asyncio.wait_for(track.recv(), IDLE_TIMEOUT_S)
                self.scheduler.submit(self.slot, frame, frame.pts)
        except MediaStreamError:
            await self.close("its camera stream ended")
        except asyncio.TimeoutError:
            await self.close(f"no camera frame for {IDLE_TIMEOUT_S:.0f} s")

    def _on_datachannel(self, channel) -> None:
        channel.on("message", lambda message: self._on_message(channel, message))
        channel.on("close", lambda: self._spawn(self.close("its data channel closed")))
        self._spawn(self._send_stats(channel))

    def _on_message(self, channel, message) -> None:
        try:
            command = json.loads(message)
            if "reset" in command:
                self.scheduler.control(self.slot, lambda session: session.reset_reference())
            elif "smoothing" in command:
                value = float(command["smoothing"])
                if not 0 <= value <= MAX_SMOOTHING:
                    raise ValueError(f"smoothing must be in [0, {MAX_SMOOTHING}], got {value}")
                self.scheduler.control(self.slot, lambda session: session.set_smoothing(value))
            else:
                raise ValueError(f"unknown command {sorted(command)}")
        except (ValueError, TypeError, AttributeError) as e:
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

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close(f"its connection {self.pc.connectionState}")

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("%s closed: %s", self.name, reason)
        self.scheduler.close(self.slot)
        self._on_closed(self)
        self.output.stop()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        await self.pc.close()
