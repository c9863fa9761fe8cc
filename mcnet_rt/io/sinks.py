"""Where live output frames go: a virtual camera (for video calls), an MP4 file, or nowhere (benchmarks).

Every sink has `write(frame, seconds)` (seconds since the first frame) and `close()`. The file sink keeps real
timestamps and is closed cleanly when the run is stopped (Ctrl-C, SIGTERM), so the recording stays playable.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from mcnet_rt.errors import InputError
from mcnet_rt.io.outputs import VIDEO_EXTENSIONS, check_output_file
from mcnet_rt.io.video import VideoWriter, even_size

VIRTUAL_CAMERA = "virtual-camera"

_BACKEND_HELP = {
    "linux": "the v4l2loopback kernel module (sudo apt install v4l2loopback-dkms; "
             "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=mcnet-rt)",
    "darwin": "OBS Studio (28 or newer), with its Virtual Camera started once",
    "win32": "OBS Studio (28 or newer), with its Virtual Camera started once",
}


class NullSink:
    """Discards frames (benchmarks, dry runs)."""

    def write(self, frame: np.ndarray, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class FileSink:
    """H.264 MP4 with the frames' real times (millisecond time base). Odd sizes lose their last row/column
    (yuv420p needs even sizes). The file is begun at the first frame and appears at `path` when the sink is
    closed: a run that wrote no frame, or failed (`abort`), leaves nothing behind."""

    def __init__(self, path: str, width: int, height: int, rate: float):
        self.path, self.rate = path, Fraction(rate).limit_denominator(1001)
        self.width, self.height = even_size(width, height)
        self._writer: VideoWriter | None = None

    def write(self, frame: np.ndarray, seconds: float) -> None:
        if self._writer is None:
            self._writer = VideoWriter(self.path, self.rate, self.width, self.height,
                                       time_base=Fraction(1, 1000)).__enter__()
        self._writer.write(np.ascontiguousarray(frame[:self.height, :self.width]),
                           Fraction(seconds).limit_denominator(1000))

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.__exit__(None, None, None)

    def abort(self, error: BaseException) -> None:
        """Remove the partial file (the run failed, as opposed to being stopped)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.__exit__(type(error), error, error.__traceback__)


class VirtualCameraSink:
    """A virtual webcam that video-call programs can pick; `open_camera` is pyvirtualcam.Camera (replaceable in
    tests: no virtual camera device exists on machines without the backend)."""

    def __init__(self, width: int, height: int, rate: float, open_camera: Callable | None = None):
        if open_camera is None:
            import pyvirtualcam

            open_camera = pyvirtualcam.Camera
        try:
            self._camera = open_camera(width=width, height=height, fps=rate)
        except RuntimeError as e:
            backend = _BACKEND_HELP.get(sys.platform, "a pyvirtualcam backend")
            raise InputError(f"virtual camera: no backend available ({str(e).splitlines()[0]}); it needs "
                             f"{backend}. Or write the output to a video file (FILE.mp4) or to null",
                             options=("output",)) from None
        self.device = getattr(self._camera, "device", "virtual camera")

    def write(self, frame: np.ndarray, seconds: float) -> None:
        self._camera.send(frame)

    def close(self) -> None:
        self._camera.close()


def check_sink(spec: str, overwrite: bool = False, inputs: tuple[str, ...] = ()) -> None:
    """Refuse an unusable output (`spec` as for `open_sink`) before any model work."""
    if spec not in (VIRTUAL_CAMERA, "null"):
        check_output_file(spec, VIDEO_EXTENSIONS, inputs, overwrite)


def open_sink(spec: str, width: int, height: int, rate: float):
    """The sink named by `spec`: virtual-camera, null, or a video file name."""
    if spec == VIRTUAL_CAMERA:
        return VirtualCameraSink(width, height, rate)
    if spec == "null":
        return NullSink()
    return FileSink(spec, width, height, rate)
