"""Animate a still face with a driving video: the source is encoded once, driving frames go through in batches.

Both images are cropped to the face (`crop="auto"`: found by mcnet_rt.faces, the driving crop tracked and
stabilised), to their centre square (`centre`) or taken whole (`none`). A driving frame without a face holds the
last pose. With `paste_back` the output is the whole source image with the animated face in place. Every frame
goes through the same `Session` / `process_batch` as live and serve.

Motion transfer follows the released demo (`--relative --adapt_scale`): keypoint displacements since the reference
driving frame (the first with a face, or with `best_frame` the one whose face landmarks are closest to the
source's), scaled by the ratio of the keypoint hulls, are applied to the source keypoints. Absolute mode feeds
the driver's keypoints directly (it transfers the driver's face shape too, which is rarely wanted).
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import faces
from .engine import load_backend
from .errors import InputError
from .models import MCNet
from .pipeline.step import FrameStep
from .pipeline.session import Session, SessionOptions, process_batch
from .io.image import fit_square, read_image
from .io.messages import note
from .io.overlay import compose
from .io.video import VideoInfo, VideoWriter, even_size, probe_video, read_timed_frames
from .iterables import batches


@dataclass(frozen=True)
class AnimateOptions:
    relative: bool = True
    batch_size: int = 8
    panels: bool = False  # source | driving | result side by side instead of the result alone
    label: str | None = None  # text burned into every output frame (used to mark untrained weights)
    max_frames: int | None = None  # stop after this many driving frames
    max_seconds: float | None = None  # stop at this time of the driving video
    best_frame: bool = False
    backend: str = "eager"  # how the per-frame step runs (mcnet_rt.engine.BACKENDS)
    session: SessionOptions = SessionOptions()  # crop, paste-back, faces, motion scaling; its rate is the video's


class Animator:
    """Batches of face-centred driving frames at the model's size -> predictions, through a `Session` without
    cropping (evaluation's protocols); relative motion is measured from the first driving frame it sees."""

    def __init__(self, model: MCNet, source: np.ndarray, options: AnimateOptions,
                 dtype: torch.dtype = torch.float32):
        step = load_backend(options.backend, FrameStep(model, dtype, relative=options.relative))
        self.session = Session(model, source, SessionOptions(crop=faces.CropOptions("none"),
                                                             adapt_scale=options.session.adapt_scale), dtype, step=step)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return np.stack(process_batch([self.session] * len(frames), list(frames)))


def best_frame(source: np.ndarray, frames: Iterable[np.ndarray]) -> np.ndarray | None:
    """The frame whose normalised FaceMesh landmarks are closest to the source's (the released demo's
    --find_best_frame), or None when no frame shows a face."""
    mesh = faces.face_mesh()
    target = mesh(source)
    if target is None:
        raise InputError("best_frame: FaceMesh finds no face landmarks in the source image",
                         options=("best_frame",))
    target = faces.normalised_landmarks(target)
    best, distance = None, np.inf
    for frame in frames:
        points = mesh(frame)
        if points is not None and (d := float(np.sum((faces.normalised_landmarks(points) - target) ** 2))) < distance:
            best, distance = frame, d
    return best


def animate_video(model: MCNet, source_path: str | Path, driving_path: str | Path, output_path: str | Path,
                  options: AnimateOptions = AnimateOptions(), dtype: torch.dtype = torch.float32,
                  progress: bool = True) -> int:
    """Write `output_path` (H.264 MP4 with the driving video's audio); returns the number of frames written.

    Frames keep the driving video's timestamps, so a variable frame rate stays in sync with its audio.
    Nothing is left at `output_path` unless the whole video was written.
    """
    source = read_image(source_path)
    info = probe_video(driving_path)
    step = load_backend(options.backend, FrameStep(model, dtype, relative=options.relative))
    session = Session(model, source, replace(options.session, rate=float(info.fps)), dtype, step=step,
                      source_name=str(source_path))
    with contextlib.closing(session):  # it owns its face tracker's MediaPipe graphs
        if options.best_frame:
            reference = best_frame(source, (f for f, _ in limited(read_timed_frames(driving_path), options, info.fps)))
            if reference is None:
                raise InputError(f"{driving_path}: best_frame: no driving frame shows a face", options=("best_frame",))
            session.set_reference(reference)
        return _write_video(session, source, (source_path, driving_path), output_path, options, info, progress)


def _write_video(session: Session, source: np.ndarray, names: tuple, output_path: str | Path,
                 options: AnimateOptions, info: VideoInfo, progress: bool) -> int:
    source_path, driving_path = names
    frames = limited(read_timed_frames(driving_path), options, info.fps)
    first, first_time = next(frames)
    if options.session.crop.mode == "centre":  # say what the centre crop does to these inputs, before the progress bar
        for name, image, every in ((source_path, source, ""), (driving_path, first, " (every frame)")):
            if change := fit_square(image, session.size)[1]:
                note(f"note: {name}: {change}{every}")
    blank = np.zeros((session.output_size[1], session.output_size[0], 3), np.uint8)
    width, height = even_size(*compose(source, [first], [blank], options.panels, options.label)[0].shape[1::-1])
    total = min(filter(None, (info.num_frames, options.max_frames)), default=None)
    with VideoWriter(output_path, info.fps, width, height, audio_from=driving_path, time_base=info.time_base) \
            as writer, tqdm(total=total, unit="frame", desc="animate", disable=not progress) as bar:
        for batch in batches(itertools.chain([(first, first_time)], frames), options.batch_size):
            images = [frame for frame, _ in batch]
            results = process_batch([session] * len(images), images)
            for frame, (_, time) in zip(compose(source, images, results, options.panels, options.label), batch):
                writer.write(np.ascontiguousarray(frame[:height, :width]),
                             None if time is None or first_time is None else time - first_time)
                bar.update(1)
    if writer.audio_problem:
        note(f"note: {writer.audio_problem}")
    return writer.frames_written


def limited(frames: Iterator[tuple[np.ndarray, Fraction | None]], options: AnimateOptions, fps: Fraction):
    """The driving frames up to `max_frames` and before `max_seconds` (counted from the first frame)."""
    start = None
    for index, (frame, time) in enumerate(frames):
        if options.max_frames is not None and index >= options.max_frames:
            return
        if options.max_seconds is not None:
            start = time if start is None else start
            elapsed = index / fps if time is None or start is None else time - start
            if elapsed >= options.max_seconds:
                return
        yield frame, time
