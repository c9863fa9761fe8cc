"""The threaded live runner: a capture thread, the inference stage (the calling thread), an output thread.

Between stages sits a `LatestSlot`, a hand-over of one item: a stage that is slower than the one before it gets
the newest frame, and the frames it had no time for are dropped and counted, never queued. Latency therefore
stays at about one frame per stage and memory is bounded however long the run is.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..io.atomic import interrupts_held
from ..io.overlay import burn_label
from .session import Session, process_batch
from .stats import StageTimes, percentiles


class LatestSlot:
    """One item handed from a producer thread to a consumer: `put` replaces an item not yet taken (`dropped`
    counts those); `get` waits for an item and returns None once the slot is closed and empty."""

    def __init__(self):
        self._ready = threading.Condition()
        self._item = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item, wait: bool = False) -> None:
        """Hand over `item`; with `wait`, first wait until the previous one was taken (nothing is dropped)."""
        with self._ready:
            while wait and self._full and not self._closed:
                self._ready.wait(0.1)
            self.dropped += self._full
            self._item, self._full = item, True
            self._ready.notify()

    def get(self):
        with self._ready:
            while not self._full:
                if self._closed:
                    return None
                self._ready.wait(0.1)  # a timeout, so that Ctrl-C reaches a waiting main thread
            item, self._item, self._full = self._item, None, False
            self._ready.notify_all()
            return item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


# The most a stop waits for the output thread to finish the frame it is writing, and for the capture thread (which
# a stream that does not answer can hold): with the clean-up after them, `live` ends within 5 s of a stop.
OUTPUT_SECONDS, CAPTURE_SECONDS = 2.0, 1.0


@dataclass
class _Frame:
    index: int  # capture order
    captured: float  # perf_counter() when captured
    image: np.ndarray


@dataclass
class LiveRunner:
    """Runs `capture` (CameraCapture / StreamCapture-like: frames(stop), close(), rate) through `session` into
    `sink` (write(frame, seconds), close()). `overlay` draws fps and per-stage ms on the output; `label` is burned
    into every output frame (untrained weights). `max_frames` stops after that many captured frames. `lossless`
    makes each stage wait for the next instead of dropping (a file read with --no-pace: as fast as the pipeline
    goes, every frame)."""

    session: Session
    capture: object
    sink: object
    overlay: bool = False
    label: str | None = None
    max_frames: int | None = None
    lossless: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    output_indices: list[int] = field(default_factory=list)  # capture index of every frame written, in order

    def __post_init__(self):
        self.inputs, self.outputs = LatestSlot(), LatestSlot()
        self.times = StageTimes()
        self.captured = self.processed = self.written = 0
        self._errors: list[BaseException] = []
        self._first_captured: float | None = None  # capture time of the first frame written: the file's zero
        self._first_written: float | None = None
        self._last_written: float | None = None

    def reset_reference(self) -> None:
        """The next frame with a face becomes the reference pose (thread- and signal-safe)."""
        self.session.reset_reference()

    def run(self) -> dict:
        """Run until the input ends, `stop` is set, or Ctrl-C / SIGTERM (raised as KeyboardInterrupt in this
        thread): the threads are then stopped and the sink closed (removed if the run failed or wrote nothing).
        Returns `stats()`."""
        threads = [threading.Thread(target=self._guard, args=(self._capture_loop,), name="capture", daemon=True),
                   threading.Thread(target=self._guard, args=(self._output_loop,), name="output", daemon=True)]
        for thread in threads:
            thread.start()
        failure = None
        try:
            self._inference_loop()
        except KeyboardInterrupt:
            pass  # a requested stop: the sink is closed below, the recording kept
        except BaseException as e:
            failure = e
            raise
        finally:
            with interrupts_held():
                self._shut_down(threads, failure)
        if self._errors:
            raise self._errors[0]
        return self.stats()

    def _shut_down(self, threads: list[threading.Thread], failure: BaseException | None) -> None:
        """Stop the threads, waiting OUTPUT_SECONDS at most in all, CAPTURE_SECONDS for the capture: a capture
        blocked in a stream that does not answer is left behind (a daemon thread, ended by its timeout or the
        process's exit)."""
        self.stop.set()
        self.inputs.close()
        self.outputs.close()
        capture, output = threads
        started = time.monotonic()
        output.join(OUTPUT_SECONDS)  # the sink is closed below: not under a write in progress
        capture.join(max(0.0, started + CAPTURE_SECONDS - time.monotonic()))
        if not capture.is_alive():  # a camera must not be released under a read in progress
            self.capture.close()
        failure = failure or (self._errors[0] if self._errors else None)
        abort = getattr(self.sink, "abort", None)
        if failure is not None and abort is not None:
            abort(failure)
        else:
            self.sink.close()

    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as e:  # reported by run() in the main thread
            self._errors.append(e)
            self.stop.set()
        finally:
            self.inputs.close()

    def _capture_loop(self) -> None:
        for image in self.capture.frames(self.stop):
            self.inputs.put(_Frame(self.captured, time.perf_counter(), image), wait=self.lossless)
            self.captured += 1
            if self.max_frames is not None and self.captured >= self.max_frames:
                break

    def _inference_loop(self) -> None:
        while (frame := self.inputs.get()) is not None:
            if self._errors:
                return
            start = time.perf_counter()
            frame.image = process_batch([self.session], [frame.image])[0]
            self.times.add("inference", (time.perf_counter() - start) * 1e3)
            self.processed += 1
            self.outputs.put(frame, wait=self.lossless)
        self.outputs.close()

    def _output_loop(self) -> None:
        while (frame := self.outputs.get()) is not None:
            start = time.perf_counter()
            image = frame.image
            if self.label:
                image = burn_label(image, self.label)
            if self.overlay:
                image = burn_label(image, self.overlay_text(), bottom=True, colour=(255, 255, 255))
            if self._first_captured is None:
                self._first_captured = frame.captured
            self.sink.write(image, frame.captured - self._first_captured)
            now = time.perf_counter()
            self.times.add("sink", (now - start) * 1e3)
            self.times.add("latency", (now - frame.captured) * 1e3)
            if self._first_written is None:
                self._first_written = now
            self._last_written = now
            self.written += 1
            self.output_indices.append(frame.index)
            if len(self.output_indices) > 10_000:  # bounded: keep the recent order only
                del self.output_indices[:5_000]

    def fps(self) -> float:
        if self.written < 2:
            return 0.0
        return (self.written - 1) / max(1e-9, self._last_written - self._first_written)

    def overlay_text(self) -> str:
        stages = self.session.times
        parts = " ".join(f"{name} {stages.last(name):.0f}" for name in ("crop", "keypoints", "render", "output"))
        return (f"{self.fps():.1f} fps | ms: {parts} sink {self.times.last('sink'):.0f} | "
                f"latency {self.times.last('latency'):.0f} ms | dropped {self.inputs.dropped + self.outputs.dropped}")

    def stats(self) -> dict:
        """Counts, fps, capture->output latency percentiles and per-stage times (ms)."""
        session = self.session.stats()
        return {"frames_captured": self.captured, "frames_processed": self.processed, "frames_output": self.written,
                "dropped_before_inference": self.inputs.dropped, "dropped_before_output": self.outputs.dropped,
                "no_face_frames": session["no_face_frames"], "fps": self.fps(),
                "latency": percentiles(self.times.samples.get("latency", [])),
                "stages": {**session["stages"], **{k: v for k, v in self.times.summary().items() if k != "latency"}}}

