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


# --- face photos as users bring them ------------------------------------------------------------------------------
# Each transformation of a real photo returns the new image and the 2×3 affine that took the photo's pixels there,
# so a face located once in the upright original is known in every variant (benchmarks/faces.py and test_faces).


def warp(photo: np.ndarray, matrix: np.ndarray, size: tuple[int, int],
         background: np.ndarray | None = None) -> np.ndarray:
    """`photo` under the pixel map `matrix` (continuous coordinates, pixel i covers [i, i + 1)) on a (width, height)
    canvas, over `background` (a photo of that size) or black."""
    import cv2

    from mcnet_rt.faces.crop import opencv_matrix

    shifted = opencv_matrix(matrix)
    out = cv2.warpAffine(photo, shifted, size, flags=cv2.INTER_AREA if matrix[0, 0] < 1 else cv2.INTER_LINEAR)
    if background is None:
        return out
    covered = cv2.warpAffine(np.full(photo.shape[:2], 255, np.uint8), shifted, size) > 127
    return np.where(covered[..., None], out, background)


def similarity(centre_from: np.ndarray, centre_to: np.ndarray, scale: float = 1.0, degrees: float = 0.0) -> np.ndarray:
    """2×3: scale and turn (counter-clockwise on screen) about centre_from, which lands on centre_to."""
    angle = np.radians(degrees)
    rotation = scale * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    return np.concatenate([rotation, (np.asarray(centre_to) - rotation @ np.asarray(centre_from))[:, None]], 1)


def turned(photo: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole photo turned on a canvas that holds it (black corners, as an editor's rotate-and-expand)."""
    height, width = photo.shape[:2]
    angle = np.radians(degrees)
    size = (int(np.ceil(abs(width * np.cos(angle)) + abs(height * np.sin(angle)))),
            int(np.ceil(abs(width * np.sin(angle)) + abs(height * np.cos(angle)))))
    matrix = similarity(np.array([width, height]) / 2, np.array(size) / 2, 1.0, degrees)
    return warp(photo, matrix, size), matrix


def close_up(photo: np.ndarray, centre: np.ndarray, face_width: float, degrees: float = 0.0,
             size: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """A selfie: the face filling a size² frame (its width 0.8 of the frame), head tilted by `degrees`."""
    matrix = similarity(centre, np.array([size / 2, size / 2]), 0.8 * size / face_width, degrees)
    return warp(photo, matrix, (size, size)), matrix


def shrunk(photo: np.ndarray, centre: np.ndarray, face_width: float, fraction: float, background: np.ndarray,
           ) -> tuple[np.ndarray, np.ndarray]:
    """The photo made small in a larger scene (`background`, whose size the result takes): the face `fraction`
    of the scene's width, off-centre as at a pool table."""
    height, width = background.shape[:2]
    matrix = similarity(centre, np.array([0.35 * width, 0.45 * height]), fraction * width / face_width)
    return warp(photo, matrix, (width, height), background), matrix


def darkened(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An underexposed shot: a third of the light, a little gamma."""
    dark = 255 * ((photo / 255.0) ** 1.3) * 0.35
    return dark.round().astype(np.uint8), np.eye(2, 3)


def mirrored(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = photo.shape[1]
    return np.ascontiguousarray(photo[:, ::-1]), np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0]])


def side_by_side(left: np.ndarray, right: np.ndarray, right_scale: float = 0.7,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two photos next to each other, the right one smaller (`right_scale` of the left's height) and centred
    vertically; the two affines of left's and right's pixels."""
    height = left.shape[0]
    scale = right_scale * height / right.shape[0]
    right_width = int(round(right.shape[1] * scale))
    size = (left.shape[1] + right_width, height)
    to_left = np.eye(2, 3)
    to_right = np.array([[scale, 0.0, left.shape[1]], [0.0, scale, (height - right.shape[0] * scale) / 2]])
    canvas = warp(left, to_left, size)
    return warp(right, to_right, size, canvas), to_left, to_right


def exif_rotated_jpeg(photo: np.ndarray, path: Path, orientation: int) -> Path:
    """A JPEG stored sideways with EXIF orientation 6 or 8 (as phones write them): a viewer shows `photo`."""
    stored = np.rot90(photo, k={6: 1, 8: -1}[orientation])  # 6: the viewer turns it 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=92)
    return path
