"""The ingress's side of a call: the offer goes to the engine deployment as one streaming request. The request
waits at most `place_timeout_s` for a replica with a free slot (Ray's router queues it meanwhile); past that the
caller gets 503 with Retry-After and the page retries. Once answered, the stream is followed until the replica
ends it (the caller left) or is lost (the page notices its stream stopped and calls again)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from ..serve.server import CallRefused

log = logging.getLogger("mcnet_rt.cluster")


class ClusterCalls:
    def __init__(self, handle: Any, place_timeout_s: float = 3.0, retry_after_s: int = 5):
        self.handle = handle.options(stream=True)
        self.place_timeout_s = place_timeout_s
        self.retry_after_s = retry_after_s
        self.open: set[asyncio.Task] = set()

    def busy(self) -> CallRefused:
        return CallRefused(503, f"all GPUs are busy; retrying in {self.retry_after_s} s", self.retry_after_s)

    def full(self) -> str | None:
        return None  # only the router knows; answer() refuses when no slot comes free in time

    async def answer(self, sdp: str, image: Any) -> dict:
        stream = self.handle.call.remote(sdp, image)
        try:
            placed = await asyncio.wait_for(stream.__anext__(), self.place_timeout_s)
        except (asyncio.TimeoutError, BackPressureError):
            stream.cancel()
            raise self.busy() from None
        try:
            answer = await stream.__anext__()
        except RayTaskError as e:  # the replica refused the call (a 400 or a full replica's 503) or failed
            if isinstance(e.cause, CallRefused):
                raise e.cause from None
            raise
        except RayActorError:
            raise CallRefused(503, f"the GPU worker {placed['replica']} was lost; retrying in "
                              f"{self.retry_after_s} s", self.retry_after_s) from None
        task = asyncio.ensure_future(self.follow(stream, answer))
        self.open.add(task)
        task.add_done_callback(self.open.discard)
        return answer

    async def follow(self, stream: Any, answer: dict) -> None:
        try:
            async for _ in stream:
                pass
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as e:  # the replica died: its caller notices the stopped stream and calls again
            log.warning("%s on %s was lost: %s", answer["session"], answer["replica"], type(e).__name__)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for task in list(self.open):
            task.cancel()
        await asyncio.gather(*self.open, return_exceptions=True)

    def status(self) -> dict:
        return {"calls": len(self.open)}
