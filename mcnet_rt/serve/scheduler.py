"""The multi-session batching scheduler: one model, many callers.

Each session has one slot for its latest camera frame: a newer frame replaces the waiting one (never a queue).
When the model is free, the scheduler takes the waiting frame of every session (up to `max_batch`, round-robin),
drops those older than the deadline (a late frame is dropped, never processed late), and runs the rest as ONE
batch through `process(sessions, frames)` — `pipeline.session.process_batch` in the server — on its single model
thread. Control changes (reset the reference pose, smoothing) are applied between batches, never while a batch
runs. Outputs go to the session's one-slot output (the newest wins). Closing a slot closes its session (its
`close()`, on the model thread after a batch in flight). A batch that raises is logged with its traceback and
closes the slot of every session in it (`Slot.failure` holds the error, `Slot.on_failure` is called with it): its
callers are told, and the scheduler goes on serving the others.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger("mcnet_rt.serve")

Process = Callable[[list, list], Sequence[Any]]


class ServerFull(Exception):
    """Every session slot is taken."""


class SlotClosed(Exception):
    """The session was closed while its caller waited for a frame (caused by `Slot.failure` when a batch failed)."""


@dataclass
class Output:
    """A processed frame: `tag` is the sender's tag of its input (e.g. its timestamp), times are `time.monotonic`."""

    image: Any
    tag: Any
    arrived: float
    done: float
    batch_size: int


@dataclass(eq=False)
class Slot:
    session: Any
    pending: tuple[Any, float, Any] | None = None  # frame, arrival time, tag
    controls: list[Callable[[Any], None]] = field(default_factory=list)
    outputs: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    closed: bool = False
    received: int = 0
    processed: int = 0
    late: int = 0
    replaced: int = 0
    latency_ms: float = 0.0  # arrival -> output ready, of the last frame
    batch_ms: float = 0.0
    batch_size: int = 0
    failure: BaseException | None = None  # what the batch that ended this session raised
    on_failure: Callable[[BaseException], None] | None = None  # told on the event loop, after the slot is closed

    async def next_output(self) -> Output:
        """The next processed frame; SlotClosed once the session is closed."""
        output = None if self.closed else await self.outputs.get()
        if output is None:
            raise SlotClosed from self.failure
        return output

    def counters(self) -> dict[str, float]:
        return {"received": self.received, "processed": self.processed, "late": self.late,
                "replaced": self.replaced, "latency_ms": round(self.latency_ms, 1),
                "batch_ms": round(self.batch_ms, 1), "batch_size": self.batch_size}


class BatchScheduler:
    def __init__(self, process: Process, max_sessions: int, deadline_s: float = 0.25, max_batch: int | None = None):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.process = process
        self.max_sessions = max_sessions
        self.deadline_s = deadline_s
        self.max_batch = max_batch or max_sessions
        self.slots: list[Slot] = []
        self.batches = 0
        self.batch_started: float | None = None  # time.monotonic() of the batch in flight, if any
        self.failure: BaseException | None = None  # what the last batch raised (None once one succeeds)
        self._next = 0  # round-robin start, so that max_batch < sessions serves everyone in turn
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcnet-rt-model")

    def open(self, session: Any) -> Slot:
        if len(self.slots) >= self.max_sessions:
            raise ServerFull(f"the server is full: {len(self.slots)} of {self.max_sessions} sessions are in use; "
                             "try again when a caller has left")
        slot = Slot(session)
        self.slots.append(slot)
        return slot

    def close(self, slot: Slot) -> None:
        """Forget the slot and close its session; a batch in flight finishes without delivering to it."""
        if slot.closed:
            return
        slot.closed = True
        self.slots.remove(slot)
        slot.pending = None
        slot.controls.clear()
        self.release(slot.session)
        slot.session = None
        replace_latest(slot.outputs, None)

    def release(self, session: Any) -> None:
        """`session.close()` on the model thread, after any batch that still uses it."""
        self._executor.submit(session.close).add_done_callback(_log_failure)

    def submit(self, slot: Slot, frame: Any, tag: Any = None) -> None:
        """The session's newest camera frame; it replaces one still waiting."""
        if slot.closed:
            return
        slot.received += 1
        if slot.pending is not None:
            slot.replaced += 1
        slot.pending = (frame, time.monotonic(), tag)
        self._wake.set()

    def control(self, slot: Slot, change: Callable[[Any], None]) -> None:
        """Run change(session) between batches (a session is never changed while the model uses it)."""
        slot.controls.append(change)
        self._wake.set()

    async def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the model thread (e.g. preparing a new session's avatar), between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def run(self) -> None:
        """The batching loop; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._apply_controls()
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)
            if any(slot.pending is not None or slot.controls for slot in self.slots):
                self._wake.set()

    def stuck_s(self) -> float:
        """How long the batch in flight has run (0 when none): a model that stopped stepping shows here."""
        started = self.batch_started
        return 0.0 if started is None else time.monotonic() - started

    def shutdown(self) -> None:
        for slot in list(self.slots):
            self.close(slot)
        self._executor.shutdown(wait=True)

    def _apply_controls(self) -> None:
        for slot in self.slots:
            while slot.controls:
                change = slot.controls.pop(0)
                try:
                    change(slot.session)
                except Exception:
                    log.exception("a session control failed")

    def _take_batch(self) -> list[tuple[Slot, Any, float, Any]]:
        now = time.monotonic()
        count = len(self.slots)
        order = [self.slots[(self._next + i) % count] for i in range(count)]
        batch = []
        for slot in order:
            if slot.pending is None:
                continue
            if len(batch) == self.max_batch:
                break
            frame, arrived, tag = slot.pending
            slot.pending = None
            if now - arrived > self.deadline_s:
                slot.late += 1
                continue
            batch.append((slot, frame, arrived, tag))
        if batch and count:
            self._next = (self.slots.index(batch[-1][0]) + 1) % count
        return batch

    async def _run_batch(self, batch: list[tuple[Slot, Any, float, Any]]) -> None:
        slots = [entry[0] for entry in batch]
        sessions = [slot.session for slot in slots]
        frames = [entry[1] for entry in batch]
        started = self.batch_started = time.monotonic()
        try:
            outputs = await self.call(lambda: self.process(sessions, frames))
            if len(outputs) != len(batch):
                raise RuntimeError(f"process returned {len(outputs)} frames for a batch of {len(batch)}")
        except Exception as e:
            log.exception("a batch of %d frames failed; its sessions are closed", len(batch))
            self.failure = e
            for slot in slots:
                self._fail(slot, e)
            return
        finally:
            del sessions, frames
            self.batch_started = None
        done = time.monotonic()
        self.batches += 1
        self.failure = None
        for (slot, _, arrived, tag), image in zip(batch, outputs):
            if slot.closed:
                continue
            slot.processed += 1
            slot.latency_ms = (done - arrived) * 1000
            slot.batch_ms = (done - started) * 1000
            slot.batch_size = len(batch)
            replace_latest(slot.outputs, Output(image, tag, arrived, done, len(batch)))

    def _fail(self, slot: Slot, error: BaseException) -> None:
        """Close the slot of a session whose batch raised and tell its owner why."""
        if slot.closed:
            return
        slot.failure = error
        self.close(slot)
        if slot.on_failure is not None:
            slot.on_failure(error)


def _log_failure(done) -> None:
    if done.exception() is not None:
        log.error("closing a session failed", exc_info=done.exception())


def replace_latest(queue: asyncio.Queue, item: Any) -> None:
    """Put `item` in a one-place queue, dropping what it held."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
