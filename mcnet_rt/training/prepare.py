"""`mcnet-rt prepare-data`: raw face videos -> the VoxCeleb training layout (root/{train,test}/<id>#<video>.mp4/
folders of PNG frames), cropped to a square around the face track at a fixed size.

The face is found in every frame with MediaPipe's face detector (its model ships in the mediapipe wheel); the
track follows the box that overlaps the previous one most. Frames without a detection are filled in from their
neighbours, then the box centre and size are smoothed over time so that the crop does not jitter. Videos that
cannot be read or show a face in too few frames are skipped and reported; they never stop the run.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import InputError
from ..io.video import read_frames

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclass(frozen=True)
class PrepareOptions:
    size: int = 256
    margin: float = 0.4  # the square's side is the face box's larger side × (1 + 2·margin)
    max_frames: int = 0  # per video; 0: all
    test_fraction: float = 0.0  # of the identities, held out in test/
    min_face_fraction: float = 0.5  # skip videos with a face in fewer of their frames
    smooth_frames: int = 15  # moving-average window over the box track


@dataclass
class PrepareReport:
    written: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def find_videos(raw_dir: Path) -> list[Path]:
    return sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def identity_and_name(raw_dir: Path, video: Path) -> tuple[str, str]:
    """The identity is the first sub-folder under RAW_DIR (raw_dir/<id>/…/clip.mp4), else the file's stem."""
    parts = video.relative_to(raw_dir).parts
    clean = lambda s: s.replace("#", "_")  # noqa: E731 - '#' separates the identity in the layout
    identity = clean(parts[0] if len(parts) > 1 else video.stem)
    return identity, f"{identity}#{clean(video.stem)}.mp4"


def is_test_identity(identity: str, fraction: float) -> bool:
    """A stable split: the same identity lands in the same split whatever else is in the folder."""
    digest = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def face_track(video: Path, max_frames: int) -> tuple[list[np.ndarray | None], tuple[int, int]]:
    """Per frame the tracked face box (x, y, w, h) in pixels, or None; and the frame (height, width)."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter would break the progress bar
    import mediapipe as mp

    boxes, previous, shape = [], None, (0, 0)
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as detector:
        for frame in read_frames(video):
            shape = frame.shape[:2]
            h, w = shape
            result = detector.process(frame)
            found = [np.array([d.location_data.relative_bounding_box.xmin * w,
                               d.location_data.relative_bounding_box.ymin * h,
                               d.location_data.relative_bounding_box.width * w,
                               d.location_data.relative_bounding_box.height * h])
                     for d in (result.detections or [])]
            if found:
                key = (lambda b: _iou(b, previous)) if previous is not None else (lambda b: b[2] * b[3])
                previous = max(found, key=key)
                boxes.append(previous)
            else:
                boxes.append(None)
            if max_frames and len(boxes) >= max_frames:
                break
    return boxes, shape


def smooth_squares(boxes: list[np.ndarray | None], margin: float, window: int) -> np.ndarray:
    """(N, 3) crop squares (centre x, centre y, side): gaps interpolated, then a centred moving average."""
    known = np.array([i for i, b in enumerate(boxes) if b is not None])
    raw = np.array([[b[0] + b[2] / 2, b[1] + b[3] / 2, max(b[2], b[3]) * (1 + 2 * margin)]
                    for b in boxes if b is not None])
    frames = np.arange(len(boxes))
    track = np.stack([np.interp(frames, known, raw[:, k]) for k in range(3)], axis=1)
    window = max(1, min(window, len(boxes)))
    padded = np.pad(track, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(3)], axis=1)


def crop_square(frame: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """The square (cx, cy, side) of the frame, edge-padded where it leaves the frame, resized to size×size."""
    cx, cy, side = square
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    if pad:
        frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = frame[y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC if s < size else Image.BOX))


def prepare_video(video: Path, target: Path, options: PrepareOptions) -> None:
    """Write one video's cropped frames to `target` (a folder, created whole or not at all)."""
    boxes, _ = face_track(video, options.max_frames)
    found = sum(b is not None for b in boxes)
    if found < max(1, options.min_face_fraction * len(boxes)):
        raise InputError(f"no face found in {len(boxes) - found} of {len(boxes)} frames")
    squares = smooth_squares(boxes, options.margin, options.smooth_frames)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for i, frame in enumerate(read_frames(video)):
            if i >= len(squares):
                break
            Image.fromarray(crop_square(frame, squares[i], options.size)).save(partial / f"{i:07d}.png")
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def prepare_dataset(raw_dir: str | Path, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
                    progress: bool = True) -> PrepareReport:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise InputError(f"{raw_dir}: folder of raw videos not found")
    if options.size < 32 or not 0 <= options.test_fraction < 1 or options.margin < 0:
        raise InputError(f"prepare-data: need --size >= 32, 0 <= --test-fraction < 1 and --margin >= 0, got "
                         f"{options.size}, {options.test_fraction}, {options.margin}")
    videos = find_videos(raw_dir)
    if not videos:
        raise InputError(f"{raw_dir}: no videos found ({', '.join(VIDEO_SUFFIXES)})")
    for split in ("train", "test"):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    bar = tqdm(videos, unit="video", disable=not progress, dynamic_ncols=True)
    for video in bar:
        identity, name = identity_and_name(raw_dir, video)
        target = out_dir / ("test" if is_test_identity(identity, options.test_fraction) else "train") / name
        bar.set_postfix_str(name, refresh=False)
        if target.is_dir():
            report.existing.append(target)
            continue
        try:
            prepare_video(video, target, options)
            report.written.append(target)
        except (InputError, OSError) as e:
            reason = str(e).removeprefix(f"{video}: ")
            report.skipped.append((video, reason))
            bar.write(f"skipped {video}: {reason}")
    return report
