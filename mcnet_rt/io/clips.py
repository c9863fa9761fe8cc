"""Clips as the datasets store them: a video file, or a folder of its frames as PNG (or JPG) images."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .image import read_image
from .video import read_frames


def frame_files(video: Path) -> list[Path]:
    """The frames of a frame folder in order: its PNG images, or its JPG images when it has no PNG."""
    frames = sorted(p for p in video.iterdir() if p.suffix.lower() == ".png")
    return frames or sorted(p for p in video.iterdir() if p.suffix.lower() == ".jpg")


def clip_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video file, or of a folder of PNG/JPG frames (the layout `prepare-data` writes)."""
    if path.is_dir():
        return (read_image(frame) for frame in frame_files(path))
    return read_frames(path)
