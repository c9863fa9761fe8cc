"""One engine per GPU: serve's Engine inside a Ray Serve replica. Media flow between the caller and the replica
directly over WebRTC; Ray carries only the offer and the answer. A call is one streaming request that stays open
while the caller is connected, so the replica's ongoing requests are its live sessions and
`max_ongoing_requests` = sessions per GPU makes Ray's router place a new caller on a replica with a free slot."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

import ray
from aiortc import RTCSessionDescription

from ..serve.server import Engine, MakeSession
from ..serve.scheduler import BatchScheduler, Process

log = logging.getLogger("mcnet_rt.cluster")
CLOSED_POLL_S = 0.5  # how often an open call checks whether its caller has gone


class EngineReplica:
    """`sessions()` -> (make_session, process), built once per replica on its GPU. Unhealthy (Ray replaces it)
    when a batch has run for over `stuck_after_s` or the last batch raised (e.g. the device failed)."""

    def __init__(self, sessions: Callable[[], tuple[MakeSession, Process]], sessions_per_gpu: int,
                 ice_servers: list[dict], idle_s: float, stuck_after_s: float):
        self.engine = Engine(*sessions(), sessions_per_gpu, idle_s=idle_s, ice_servers=ice_servers)
        self.stuck_after_s = stuck_after_s
        self.name = ray.get_runtime_context().get_actor_name()

    async def call(self, sdp: str, image: Any) -> AsyncIterator[dict]:
        """Yields {"replica": name} at once (the ingress knows the call was placed), then the answer (or raises
        CallRefused); stays open until the caller's peer closes, and closes it when the request is cancelled."""
        yield {"replica": self.name}
        await self.engine.start()
        peer, answer = await self.engine.answer(RTCSessionDescription(sdp=sdp, type="offer"), image)
        try:
            yield {**answer, "replica": self.name}
            while not peer.closed:
                await asyncio.sleep(CLOSED_POLL_S)
        finally:
            await peer.close("its call ended")

    def check_health(self) -> None:
        problem = health_problem(self.engine.scheduler, self.stuck_after_s)
        if problem is not None:
            raise RuntimeError(problem)


def health_problem(scheduler: BatchScheduler, stuck_after_s: float) -> str | None:
    """Why an engine should be replaced: its batch in flight has run too long, or its last batch raised."""
    if scheduler.stuck_s() > stuck_after_s:
        return f"the model has not finished a batch for {scheduler.stuck_s():.1f} s"
    if scheduler.failure is not None:
        return f"the last batch failed: {scheduler.failure!r}"
    return None
