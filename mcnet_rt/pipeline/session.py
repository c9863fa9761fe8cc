"""One caller's state around the per-frame step, and the one batched per-frame function that animate, live and
serve all run.

A `Session` is an avatar driven by one camera or video: the source image cropped to its face and prepared once,
the face tracker of the driving frames, the reference pose of relative motion (reset on demand), a One-Euro filter
on the driving keypoints, the last good pose (frames without a face hold it) and per-stage timings. It runs the
step it was built with (a backend's, `engine.load_backend`) in batches, and a private eager `FrameStep` of the same
model and precision for `process()` and `set_reference()`, so a reference is measured alike on every backend.

`process_batch(sessions, frames)` takes one frame per entry; the sessions share one step: each session crops its
frame (in list order, so one session may appear several times for consecutive frames, as animate batches a video);
the crops go through ONE `step.keypoints`; each session fixes its reference and filters its keypoints; ONE
`step.render` runs with the sessions' sources and references concatenated; each session pastes back / resizes its
output.

On a GPU the only waits for the device in a batch are the upload of the driving frames and the download of the
output frames: stages are timed with events read later (`stats.StageTimes.add_span`), the keypoints are smoothed on
the device, and the paste-back (its region, grid and mask) is prepared once per session. Fixing a new reference
pose reads its keypoints back once (the adaptive movement scale is a convex hull on the CPU).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import faces
from ..errors import InputError
from ..io.frames import to_tensor, to_uint8
from ..io.messages import note
from ..keypoints import Keypoints
from ..models import MCNet
from .source_store import load_or_prepare
from .stats import StageTimes, mark
from .step import FrameStep, MotionReference, reference_from_keypoints

# Keypoints live in [-1, 1]; a head turn moves them by about one unit per second. beta lets the cut-off rise with
# that speed so that motion follows with little lag while a still face stays steady.
KEYPOINT_BETA = 2.0
MAX_SMOOTHING = 10.0  # seconds: a longer time constant at rest would freeze the avatar for the whole call


def check_smoothing(seconds: float) -> float:
    """The keypoints' smoothing time constant, refused unless a finite number of seconds within the bound."""
    if not 0 <= seconds <= MAX_SMOOTHING:  # nan too
        raise InputError(f"smoothing must be a finite number of seconds from 0 to {MAX_SMOOTHING:g}, got {seconds}",
                         options=("smoothing",))
    return seconds


@dataclass(frozen=True)
class SessionOptions:
    """crop: what decides the avatar's and the driving frames' crops (`faces.CropOptions`: mode, margin, face,
    align). smoothing: seconds of One-Euro smoothing of the driving keypoints at rest (0 = off, at most
    MAX_SMOOTHING); rate: the expected frame rate in Hz (the filters' time step). output_size: (width, height);
    default the crop, or the source image with paste_back. detect_every: run the face detector on every n-th driving
    frame (the crop is held in between)."""

    crop: faces.CropOptions = faces.CropOptions()
    paste_back: bool = False
    output_size: tuple[int, int] | None = None
    adapt_scale: bool = True
    smoothing: float = 0.0
    rate: float = 30.0
    feather: float = 0.1
    detect_every: int = 1

    def __post_init__(self):
        if not isinstance(self.crop, faces.CropOptions):
            raise InputError(f"crop must be a faces.CropOptions, e.g. CropOptions(mode=\"centre\"), got "
                             f"{self.crop!r}", options=("crop",))
        check_smoothing(self.smoothing)
        if not 0 < self.rate < math.inf:  # nan too
            raise InputError(f"rate must be a finite number of frames per second > 0, got {self.rate}")
        if self.detect_every < 1:
            raise InputError(f"detect_every must be at least 1, got {self.detect_every}", options=("detect_every",))
        if self.output_size is not None and min(self.output_size) < 2:
            raise InputError(f"output size must be at least 2×2 pixels, got {self.output_size}",
                             options=("output_size",))


def frame_crop(mode: str, frame_size: tuple[int, int], size: int) -> faces.CropTransform:
    """The crop of a frame for the face-independent modes: its centre square (centre) or all of it (none)."""
    height, width = frame_size
    if mode == "centre":
        return faces.CropTransform.from_square(np.array([width / 2, height / 2, min(height, width)]), frame_size,
                                               size)
    matrix = np.array([[size / width, 0.0, 0.0], [0.0, size / height, 0.0]])
    return faces.CropTransform(matrix, (height, width), size)


class NoSourceFace(InputError):
    """crop=auto found no face in the source image (the server words its own advice for the page)."""


# The smallest face width (pixels) found in the tests (a photo shrunk into an 800-pixel scene, tiled pass).
MIN_FACE_PIXELS = 40


def source_crop(image: np.ndarray, crop: faces.CropOptions, size: int, name: str) -> faces.CropTransform:
    """The crop of the avatar image; with mode auto its face must be found (a clear error otherwise) and the
    choice among several is said on stderr (one line)."""
    if crop.mode != "auto":
        return frame_crop(crop.mode, image.shape[:2], size)
    with contextlib.closing(faces.FaceFinder()) as finder:
        found = finder.find(image)
    if not found.faces:
        raise NoSourceFace(f"{name}: no face found after upright, rotated, padded and tiled passes "
                           f"({', '.join(found.passes)}; MediaPipe BlazeFace, confirmed by FaceMesh); use a photo "
                           f"where the face is clearly visible and at least {MIN_FACE_PIXELS} pixels wide, or "
                           'crop="centre" to use the centre of the image as it is', options=("crop",))
    try:
        index, why = faces.choose(found.faces, crop.face, image.shape[:2])
    except ValueError as e:
        raise InputError(f"{name}: {e}; face must be a number from 1 to {len(found.faces)}, or largest, centre, "
                         "left or right", options=("face",)) from None
    face = found.faces[index]
    roll = face.roll if crop.align == "roll" else 0.0
    note(f"{name}: face {index + 1} of {len(found.faces)} from the left ({why}; the face setting chooses another), "
         f"{face.box[2]:.0f} px wide, turned {np.degrees(roll):.0f}°")
    return faces.CropTransform.from_box(face.box, image.shape[:2], crop.margin, size, roll=roll)


def _is_identity(transform: faces.CropTransform) -> bool:
    return transform.frame_size == (transform.out_size,) * 2 and np.allclose(transform.matrix, np.eye(2, 3))


class Session:
    """One avatar (`source_image`, (H, W, 3) uint8 RGB) driven by one stream of frames; see the module doc.

    `process(frame)` returns the output frame (uint8 RGB); `reset_reference()` makes the next frame with a face the
    reference pose (the avatar then shows its source pose); `set_smoothing(seconds)`; `stats()`; `close()` when
    done (it owns its face tracker's MediaPipe graphs). `step`: what `process_batch` runs (a backend's step over
    this model at `dtype`; default the session's eager step). With `cache_dir` the prepared source is kept on disk,
    keyed by the image's and the weights' hashes.
    """

    def __init__(self, model: MCNet, source_image: np.ndarray, options: SessionOptions = SessionOptions(),
                 dtype: torch.dtype = torch.float32, step=None, cache_dir: str | Path | None = None,
                 source_name: str = "source image"):
        self.model = model
        self.options = options
        self.dtype = dtype
        # process() and set_reference() run eager, in the step's motion mode (an exported step states none: relative)
        self.eager = FrameStep(model, dtype, relative=getattr(step, "relative", True))
        self.step = self.eager if step is None else step
        self.device = next(model.parameters()).device
        self.size = model.config.image_size
        self.source_image = source_image
        self.source_transform, self.source = load_or_prepare(
            model, source_image, lambda: source_crop(source_image, options.crop, self.size, source_name),
            options.crop, dtype, cache_dir)
        self.source_full = to_tensor(source_image[None], self.device) if options.paste_back else None
        # The source transform never changes: its paste-back is prepared once.
        self.paste_back = self.source_transform.paste_back(options.feather, self.source_full) \
            if options.paste_back else None
        self.tracker = faces.FaceTracker(margin=options.crop.margin, detect_every=options.detect_every,
                                         steadying=faces.OneEuroFilter(rate=options.rate), choice=options.crop.face,
                                         align=options.crop.align) \
            if options.crop.mode == "auto" else None
        self.keypoint_filter: faces.OneEuroFilter | None = None
        self.set_smoothing(options.smoothing)
        self.reference: MotionReference | None = None
        self.pose: Keypoints | None = None  # the last good (filtered) driving keypoints
        self._reset_requested = False
        self.frames = 0
        self.no_face_frames = 0
        self.times = StageTimes()

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        if self.options.output_size is not None:
            return self.options.output_size
        if self.options.paste_back:
            return self.source_image.shape[1], self.source_image.shape[0]
        return self.size, self.size

    def reset_reference(self) -> None:
        """The next frame with a face becomes the reference pose (safe to call from another thread or a signal
        handler: it takes effect at the next frame)."""
        self._reset_requested = True

    def set_reference(self, frame: np.ndarray) -> None:
        """Make `frame` (a driving frame with a face) the reference pose now (animate's best frame), measured
        by the eager step whatever step the batches run."""
        crop = self._crop(frame)
        if self.tracker is not None:
            self.tracker.reset()
        if crop is None:
            raise InputError("the chosen reference frame has no face")
        with torch.no_grad():
            keypoints = self.eager.keypoints(crop)
        self.reference = reference_from_keypoints(self.source, keypoints, self.options.adapt_scale)

    def set_smoothing(self, seconds: float) -> None:
        """One-Euro smoothing of the driving keypoints: seconds of time constant at rest, 0 = off."""
        check_smoothing(seconds)
        self.keypoint_filter = faces.OneEuroFilter(min_cutoff=1 / (2 * np.pi * seconds), beta=KEYPOINT_BETA,
                                                   rate=self.options.rate) if seconds > 0 else None

    def process(self, frame: np.ndarray) -> np.ndarray:
        """The output frame for one driving frame, by the eager step."""
        return _process(self.eager, [self], [frame])[0]

    def close(self) -> None:
        """Release the face tracker's graphs (native threads and tens of MB each); idempotent."""
        if self.tracker is not None:
            self.tracker.close()

    def stats(self) -> dict:
        """Frames seen, frames without a face, and per-stage milliseconds (p50/p95/p99/mean over a recent window)."""
        return {"frames": self.frames, "no_face_frames": self.no_face_frames, "stages": self.times.summary()}

    def _crop(self, frame: np.ndarray) -> torch.Tensor | None:
        """The (1, 3, S, S) driving crop, or None when the frame shows no face."""
        if self.tracker is not None:
            track = self.tracker.update(frame)
            if track is None:
                return None
            transform = track.crop(self.size)
        else:
            transform = frame_crop(self.options.crop.mode, frame.shape[:2], self.size)
        image = to_tensor(frame[None], self.device)
        return image if _is_identity(transform) else transform.crop(image)

    def _observe(self, keypoints: Keypoints) -> Keypoints:
        """Fix the reference if there is none, filter the keypoints; they become the pose held by no-face frames."""
        if self._reset_requested or self.reference is None:
            self._reset_requested = False
            self.reference = reference_from_keypoints(self.source, keypoints, self.options.adapt_scale)
            if self.keypoint_filter is not None:
                self.keypoint_filter.reset()
        if self.keypoint_filter is not None:  # on the device: nothing is read back
            smooth = self.keypoint_filter(torch.cat([keypoints.value.flatten(), keypoints.jacobian.flatten()]))
            count = keypoints.value.numel()
            keypoints = Keypoints(smooth[:count].view_as(keypoints.value), smooth[count:].view_as(keypoints.jacobian))
        self.pose = keypoints
        return keypoints

    def _finish(self, face: torch.Tensor) -> np.ndarray:
        """The output frame for a (1, 3, S, S) face: pasted back into the avatar image and/or resized."""
        image = self.paste_back(face, self.source_full) if self.paste_back is not None else face
        if self.options.output_size is not None:
            width, height = self.options.output_size
            if tuple(image.shape[-2:]) != (height, width):
                image = F.interpolate(image, size=(height, width), mode="bilinear", antialias=True,
                                      align_corners=False)
        return to_uint8(image)[0]


def _cat(parts: list[tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
    return [torch.cat(column) for column in zip(*parts)]


def _inputs(step: FrameStep, sessions: list[Session], references: list[MotionReference]) -> list[torch.Tensor]:
    """The step's source and reference inputs: one session's own (batch 1, broadcast by the step) when a batch
    is one session's consecutive frames with one reference, else every entry's concatenated."""
    if all(s is sessions[0] for s in sessions) and all(r is references[0] for r in references):
        return list(step.inputs(sessions[0].source, references[0]))
    return _cat([step.inputs(s.source, r) for s, r in zip(sessions, references)])


def process_batch(sessions: list[Session], frames: list[np.ndarray]) -> list[np.ndarray]:
    """The output frame of each (session, frame) pair, through the one step the sessions share; see the module
    doc. A session whose frame shows no face holds its last pose; before its first face it shows its source crop
    unchanged."""
    if len(sessions) != len(frames):
        raise ValueError(f"process_batch: {len(sessions)} sessions but {len(frames)} frames")
    if any(session.step is not sessions[0].step for session in sessions):
        raise ValueError("process_batch: the sessions run different steps; build the sessions of one batch with "
                         "one step (Session(..., step=step))")
    return _process(sessions[0].step, sessions, frames)


@torch.no_grad()
def _process(step, sessions: list[Session], frames: list[np.ndarray]) -> list[np.ndarray]:
    """`process_batch` through `step`."""
    device = sessions[0].device
    crops = []
    for session, frame in zip(sessions, frames):
        start = mark(device)
        crops.append(session._crop(frame))
        session.times.add_span("crop", start, mark(device))
        session.frames += 1
        session.no_face_frames += crops[-1] is None
    seen = [i for i, crop in enumerate(crops) if crop is not None]
    start_keypoints = mark(device)
    found = step.keypoints(torch.cat([crops[i] for i in seen])) if seen else None
    keypoints_at = mark(device)
    poses: list[Keypoints | None] = []
    references: list[MotionReference | None] = []
    for i, session in enumerate(sessions):  # in list order: a session's reference and filter follow its frames
        if i in seen:
            j = seen.index(i)
            session._observe(Keypoints(found.value[j:j + 1], found.jacobian[j:j + 1]))
            session.times.add_span("keypoints", start_keypoints, keypoints_at)
        poses.append(session.pose)
        references.append(session.reference)
    posed = [i for i, pose in enumerate(poses) if pose is not None]
    start_render = mark(device)
    rendered = step.render(*_cat([tuple(poses[i]) for i in posed]),
                           *_inputs(step, [sessions[i] for i in posed], [references[i] for i in posed])) \
        if posed else None
    rendered_at = mark(device)
    outputs = []
    for i, session in enumerate(sessions):
        start = mark(device)
        if i in posed:
            j = posed.index(i)
            outputs.append(session._finish(rendered[j:j + 1]))
            session.times.add_span("render", start_render, rendered_at)
        else:
            outputs.append(session._finish(session.source.image))
        session.times.add_span("output", start, mark(device))
    return outputs
