"""Live frame sources: a camera through OpenCV, or a video file / network stream through PyAV played at its own
rate. Both yield (H, W, 3) uint8 RGB frames until the stream ends or `stop` is set.

A camera that stops delivering frames (unplugged, taken by another program) is reopened with growing pauses and
a message each time; a camera that cannot be opened at all is an InputError (one line, exit 2).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from mcnet_rt.errors import InputError
from mcnet_rt.io.inputs import check_input, is_url
from mcnet_rt.io.messages import note
from mcnet_rt.io.video import STREAM_TIMEOUT, probe_video, read_timed_frames


class CameraCapture:
    """Frames of camera `index`. `open_camera` makes a cv2.VideoCapture-like object (isOpened, read, release,
    get); after a failed read the camera is reopened up to `retries` times, `backoff` × 2^n seconds apart."""

    def __init__(self, index: int, open_camera: Callable = cv2.VideoCapture, retries: int = 5,
                 backoff: float = 0.5, report: Callable[[str], None] = note):
        self.index, self.open_camera, self.retries, self.backoff, self.report = index, open_camera, retries, \
            backoff, report
        cv2.setLogLevel(2)  # errors only: OpenCV's warnings about a missing camera would bury our one-line message
        self.camera = self._open()
        if self.camera is None:
            where = f" (/dev/video{index} does not exist)" if sys.platform == "linux" and \
                not os.path.exists(f"/dev/video{index}") else ""
            raise InputError(f"camera {index}: cannot be opened{where}; choose another camera, or a video file or "
                             "stream as the input", options=("camera", "input"))
        self.rate = float(self.camera.get(cv2.CAP_PROP_FPS) or 30.0)

    def _open(self):
        camera = self.open_camera(self.index)
        if camera.isOpened():
            return camera
        camera.release()
        return None

    def frames(self, stop: threading.Event) -> Iterator[np.ndarray]:
        failures = 0
        while not stop.is_set():
            ok, bgr = self.camera.read() if self.camera is not None else (False, None)
            if ok:
                failures = 0
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                continue
            failures += 1
            if failures > self.retries:
                raise InputError(f"camera {self.index}: lost; no frame after {self.retries} retries")
            delay = self.backoff * 2 ** (failures - 1)
            self.report(f"camera {self.index}: no frame; reopening in {delay:.1f} s (retry {failures} of "
                        f"{self.retries})")
            if self.camera is not None:
                self.camera.release()
            if stop.wait(delay):
                return
            self.camera = self._open()

    def close(self) -> None:
        if self.camera is not None:
            self.camera.release()


class StreamCapture:
    """Frames of a video file or network stream, paced at the stream's own timestamps (as a camera would deliver
    them) unless `pace` is False; with `loop` a file starts again at its end. A stream that does not answer within
    `timeout` seconds, to connect or for more data, ends in an InputError."""

    def __init__(self, source: str, pace: bool = True, loop: bool = False, timeout: float = STREAM_TIMEOUT):
        self.source, self.pace, self.loop, self.timeout = check_input(source), pace, loop, timeout
        self.rate = 30.0 if is_url(self.source) else float(probe_video(self.source).fps)

    def frames(self, stop: threading.Event) -> Iterator[np.ndarray]:
        start = time.perf_counter()
        offset = 0.0  # seconds of the earlier loops
        while True:
            last, first = 0.0, None
            for frame, stamp in read_timed_frames(self.source, self.timeout):
                if stop.is_set():
                    return
                if stamp is not None:
                    first = float(stamp) if first is None else first
                    last = float(stamp) - first
                if self.pace and stop.wait(max(0.0, start + offset + last - time.perf_counter())):
                    return
                yield frame
            if not self.loop:
                return
            offset += last + 1 / self.rate

    def close(self) -> None:
        pass
