"""Video in and out through PyAV (FFmpeg), with errors that name the file instead of FFmpeg tracebacks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcnet_rt.errors import InputError
from mcnet_rt.io.atomic import atomic_output, write_failed
from mcnet_rt.io.inputs import check_input, is_url

if TYPE_CHECKING:
    import av

# Name endings taken as videos when a folder is searched for inputs (prepare-data, evaluate); what can be written is
# outputs.VIDEO_EXTENSIONS.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
# Audio codecs copied into the output untouched. The MP4 muxer also accepts PCM, Vorbis and others,
# but common players do not play those from MP4, so everything else is re-encoded to AAC.
_REMUX_AUDIO = {"aac", "mp3"}


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as displayed, i.e. after the rotation the container asks for
    height: int
    fps: Fraction
    num_frames: int  # as the container header states it; 0 when it does not say
    has_audio: bool
    time_base: Fraction  # unit of its video timestamps; writing in the same unit keeps them exact


def _pyav():
    """PyAV, imported when a video is first opened or written: everything else in mcnet_rt (the model, the ops, the
    benchmarks) runs where PyAV is not installed."""
    try:
        import av
    except ImportError as e:
        raise InputError("reading or writing video needs PyAV, which is not installed: pip install av==18.1.0") from e
    return av


# Seconds a network stream may take to connect, and then to deliver more data, before it counts as lost: a
# server that accepts and never answers must not hang the reader (nor a stop request waiting for it).
STREAM_TIMEOUT = 10.0


def _open(path: Path | str, timeout: float = STREAM_TIMEOUT) -> av.container.InputContainer:
    """A file (checked first) or a network stream URL (with `timeout`), opened for reading."""
    av = _pyav()
    path = check_input(path)
    try:
        # Titles and comments in Latin-1 are common in camera files; they must not stop the video being read.
        return av.open(str(path), metadata_errors="ignore", timeout=timeout if is_url(path) else None)
    except av.ExitError:
        raise InputError(f"{path}: no answer within {timeout:g} s") from None
    except av.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({e.strerror or e})") from e


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    # FFmpeg opens a still image as a one-frame video; as a driving video it is always a mistake.
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise InputError(f"{path}: is a still image, not a video")
    if not container.streams.video:
        raise InputError(f"{path}: has no video stream")
    return container.streams.video[0]


def _decode(path: Path, container: av.container.InputContainer) -> Iterator[tuple[np.ndarray, Fraction | None]]:
    av = _pyav()
    stream = _video_stream(path, container)
    stream.thread_type = "AUTO"
    frames = container.decode(stream)
    index = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except av.ExitError:  # the read timeout of a network stream
            raise InputError(f"{path}: no data for {container.read_timeout:g} s after frame {index}") from None
        except av.FFmpegError as e:
            raise InputError(f"{path}: cannot decode frame {index} ({e.strerror or e})") from e
        rgb = frame.to_ndarray(format="rgb24")
        # Phones store portrait video as landscape plus a rotation flag; a sideways face breaks the model.
        quarter_turns = round(frame.rotation / 90) % 4
        time = None if frame.pts is None else frame.pts * frame.time_base
        yield (np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb), time
        index += 1
    if index == 0:
        raise InputError(f"{path}: contains no video frames")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Describe a video, decoding its first frame so that an unusable file fails here, before any work."""
    path = check_input(path)
    with _open(path) as container:
        stream = _video_stream(path, container)
        fps = stream.average_rate or stream.guessed_rate
        if not fps:
            raise InputError(f"{path}: frame rate unknown")
        height, width = next(_decode(path, container))[0].shape[:2]
        return VideoInfo(width, height, Fraction(fps), stream.frames, bool(container.streams.audio),
                         Fraction(stream.time_base or 1 / Fraction(fps)))


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield every frame as an (H, W, 3) uint8 RGB array, in display order and upright."""
    for frame, _ in read_timed_frames(path):
        yield frame


def read_timed_frames(path: str | os.PathLike, timeout: float = STREAM_TIMEOUT) \
        -> Iterator[tuple[np.ndarray, Fraction | None]]:
    """Like read_frames, with each frame's presentation time in seconds (None where the file gives none), so
    that a variable-frame-rate video keeps its timing. `path` may be a network stream URL, given up after
    `timeout` seconds without an answer."""
    path = check_input(path)
    with _open(path, timeout) as container:
        yield from _decode(path, container)


def even_size(width: int, height: int) -> tuple[int, int]:
    """The largest even size within width × height (yuv420p needs even sides; writers drop the odd last
    row/column)."""
    return width - width % 2, height - height % 2


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p, the format every player decodes), optionally with sound.

    Use as a context manager: the file appears at `path` only when the block completes, so an
    interrupted run leaves nothing behind. The audio of `audio_from`, if it has any, is added at the
    end and cut to the length of the video, aligned so that frame 0 meets the start of that file's video.
    `has_audio` tells whether it had sound to copy; `audio_problem` says why sound that was there was
    dropped (no decoder for its codec, or corrupt), as a note for the user.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Fraction | int | float,
        width: int,
        height: int,
        audio_from: str | os.PathLike | None = None,
        time_base: Fraction | None = None,
    ):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width and height must be positive and even for yuv420p, got {width}×{height}")
        self.fps = Fraction(fps).limit_denominator(65535)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.time_base = time_base or 1 / self.fps  # of the frame times given to write()
        self.path = Path(path)
        self.width = width
        self.height = height
        self.audio_from = None if audio_from is None else Path(audio_from)
        self.has_audio = False
        self.audio_problem: str | None = None
        self.frames_written = 0
        self._last_pts = -1
        self._end = Fraction(0)  # seconds from frame 0 to the end of the last frame written

    def __enter__(self) -> "VideoWriter":
        av = _pyav()
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path))
            try:
                self._out = stack.enter_context(av.open(str(tmp), "w"))
                self._video = self._out.add_stream("libx264", rate=self.fps, options={"crf": "18"})
            except ValueError as e:
                raise InputError(f"{self.path}: cannot write a video with this file extension ({e})") from e
            except OSError as e:
                raise write_failed(self.path, e) from None
            self._video.codec_context.time_base = self.time_base
            self._video.width = self.width
            self._video.height = self.height
            self._video.pix_fmt = "yuv420p"
            self._src = self._audio = None
            if self.audio_from is not None:
                self._add_audio_stream(stack.enter_context(_open(self.audio_from)))
            try:
                self._out.start_encoding()  # creates the file now, not at the encoder's first packet
            except OSError as e:
                raise write_failed(self.path, e) from None
            self._stack = stack.pop_all()
        return self

    def _add_audio_stream(self, src: av.container.InputContainer) -> None:
        av = _pyav()
        if not src.streams.audio:
            return
        audio = src.streams.audio[0]
        if audio.codec_context is None:
            self.audio_problem = f"{self.audio_from}: its audio codec cannot be decoded; the output has no sound"
            return
        self._src = src
        self._remux_audio = audio.codec_context.codec.canonical_name in _REMUX_AUDIO
        if self._remux_audio:
            self._audio = self._out.add_stream_from_template(audio)
        else:
            # AAC takes 13 sample rates; others (a webcam's 11024 Hz) are resampled to the nearest one above.
            rates = sorted(av.codec.Codec("aac", "w").audio_rates)
            rate = next((r for r in rates if r >= audio.rate), rates[-1])
            self._audio = self._out.add_stream("aac", rate=rate)
            self._audio.layout = "mono" if audio.channels == 1 else "stereo"
        self.has_audio = True

    def write(self, frame: np.ndarray, time: Fraction | None = None) -> None:
        """Add a frame; `time` (seconds since the first frame) keeps the input's timing, else frames are 1/fps
        apart. Times that do not increase are moved just after the previous frame."""
        expected = (self.height, self.width, 3)
        if not isinstance(frame, np.ndarray) or frame.shape != expected or frame.dtype != np.uint8:
            got = (frame.shape, frame.dtype) if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"expected a {expected} uint8 RGB frame, got {got}")
        av = _pyav()
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        if time is None:
            time = self._end
        video_frame.pts = self._last_pts = max(round(time / self.time_base), self._last_pts + 1)
        video_frame.time_base = self.time_base
        self._end = self._last_pts * self.time_base + 1 / self.fps
        try:
            self._out.mux(self._video.encode(video_frame))
        except OSError as e:  # a full disk shows here, at the first failed write, not after the whole run
            raise write_failed(self.path, e) from None
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is not None:
            return self._stack.__exit__(exc_type, exc, tb)
        try:
            with self._stack:
                self._out.mux(self._video.encode(None))
                if self._audio is not None:
                    self._copy_audio()
        except OSError as e:
            raise write_failed(self.path, e) from None
        return None

    def _copy_audio(self) -> None:
        src = self._src.streams.audio[0]
        start = _start_seconds(self._src, src)
        end = start + self._end
        shift = round(start / src.time_base)
        if self._remux_audio:
            for packet in self._src.demux(src):
                if packet.dts is None:
                    continue
                begin = (packet.dts if packet.pts is None else packet.pts) * src.time_base
                if begin >= end:
                    break
                if begin + (packet.duration or 0) * src.time_base <= start:
                    continue
                packet.dts -= shift
                if packet.pts is not None:
                    packet.pts -= shift
                packet.stream = self._audio
                self._out.mux(packet)
            return
        for frame in self._decoded_audio(src):
            begin = frame.pts * src.time_base
            if begin >= end:
                break
            if begin + Fraction(frame.samples, frame.sample_rate) <= start:
                continue
            frame.pts -= shift
            self._out.mux(self._audio.encode(frame))
        self._out.mux(self._audio.encode(None))

    def _decoded_audio(self, src: av.AudioStream) -> Iterator[av.AudioFrame]:
        """The source's audio frames up to the first one that cannot be decoded (noted, not fatal)."""
        av = _pyav()
        frames = self._src.decode(src)
        while True:
            try:
                yield next(frames)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self.audio_problem = f"{self.audio_from}: its audio is corrupt ({e.strerror or e}); the sound stops there"
                return


def _start_seconds(container: av.container.InputContainer, audio: av.AudioStream) -> Fraction:
    """Time of the source's first video frame (else of its audio), which the output's frame 0 stands for."""
    for stream in (*container.streams.video[:1], audio):
        if stream.start_time is not None:
            return stream.start_time * stream.time_base
    return Fraction(0)
