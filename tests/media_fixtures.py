"""Small generated media for the hostile-input and fuzz tests: a face-sized image, short videos with the
properties real files have (variable frame rate, odd audio, Latin-1 metadata, audio with no decoder)."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", exc_type=ImportError)  # absent from some GPU images; the modules using these fixtures are skipped there

SIZE = 64


def pattern(index: int, size: int = SIZE) -> np.ndarray:
    """A moving gradient: every frame differs, and compresses to a few hundred bytes."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([(x * 4 + index * 9) % 256, (y * 4) % 256, np.full_like(x, 128)], -1).astype(np.uint8)


def write_image(path: Path, size: int = SIZE) -> Path:
    Image.fromarray(pattern(0, size)).save(path)
    return path


def write_video(path: Path, gaps_ms: list[int] | None = None, frames: int = 6, audio: str | None = None,
                audio_rate: int = 16000, title: str | None = None) -> Path:
    """H.264 (or MJPEG in .avi) frames at 25 fps, or at the given gaps in milliseconds (variable frame rate), with
    an optional mono audio track of codec `audio` ("aac", "pcm_u8", "pcm_s16le") covering the video."""
    gaps_ms = gaps_ms or [40] * frames
    with av.open(str(path), "w") as c:
        if title:
            c.metadata["title"] = title
        codec = "mjpeg" if path.suffix == ".avi" else "libx264"
        video = c.add_stream(codec, rate=25)
        video.width = video.height = SIZE
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        sound = None
        if audio:
            sound = c.add_stream(audio, rate=audio_rate)
            sound.layout = "mono"
        time = 0
        for index, gap in enumerate(gaps_ms):
            frame = av.VideoFrame.from_ndarray(pattern(index), format="rgb24")
            frame.pts, frame.time_base = time, Fraction(1, 1000)
            c.mux(video.encode(frame))
            time += gap
        c.mux(video.encode(None))
        if sound is not None:
            samples_per_frame = 1024
            fmt = "u8" if audio == "pcm_u8" else "s16" if audio == "pcm_s16le" else "fltp"
            dtype = {"u8": np.uint8, "s16": np.int16, "fltp": np.float32}[fmt]
            for k in range(time * audio_rate // 1000 // samples_per_frame + 1):
                chunk = (np.sin(np.arange(samples_per_frame) / 5) * (40 if fmt == "u8" else 0.3)).astype(np.float32)
                chunk = chunk + 128 if fmt == "u8" else chunk * 30000 if fmt == "s16" else chunk
                frame = av.AudioFrame.from_ndarray(chunk.astype(dtype)[None], format=fmt, layout="mono")
                frame.sample_rate, frame.pts = audio_rate, k * samples_per_frame
                c.mux(sound.encode(frame))
            c.mux(sound.encode(None))
    return path


def patch_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Replace `old` by `new` (same length) once, to make what writers refuse to write."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) >= 1, (old, path)
    path.write_bytes(data.replace(old, new, 1))
    return path


def latin1_title_video(path: Path) -> Path:
    """An MP4 whose title is Latin-1, not UTF-8 ('café' as old editors and cameras write it)."""
    return patch_bytes(write_video(path, title="caf\u00e9!"), "caf\u00e9!".encode(), b"caf\xe9!!")


def undecodable_audio_video(path: Path) -> Path:
    """A MOV whose audio track has a codec tag FFmpeg does not know; its video is fine."""
    return patch_bytes(write_video(path, audio="pcm_s16le"), b"sowt", b"zzzz")
