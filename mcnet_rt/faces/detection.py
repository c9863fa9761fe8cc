"""Face detection with MediaPipe's BlazeFace models, full-range (faces up to about 5 m from the camera) and
short-range (faces within about 2 m, e.g. a close-up): both ship in the mediapipe wheel, nothing is downloaded. And
the silencing of MediaPipe's C++ logging."""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from .crop import apply_affine


_redirect = threading.Lock()


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ logging (TensorFlow Lite, absl) that MediaPipe prints to file descriptor 2: it would break
    progress bars and the CLI's one-line errors. Process-wide while it lasts (other threads' errors too), so only
    for the calls that log (`QuietGraph`); one redirect at a time, or two would restore each other's devnull."""
    with _redirect:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class QuietGraph:
    """A MediaPipe graph (a solution) silenced where it logs, from its own threads: while it opens its calculators
    (on its threads, after its constructor returns; a call waits for them), so it is built and run once on a blank
    frame inside one silenced window, and on its first real call (the first face). Later calls leave fd 2 alone: a
    live or serve run's stderr is not redirected every frame."""

    def __init__(self, build):
        """`build()` makes the graph."""
        with quiet_stderr():
            self.graph = build()
            self.graph.process(np.zeros((64, 64, 3), np.uint8))
        self._warm = False

    def process(self, image: np.ndarray):
        if self._warm:
            return self.graph.process(image)
        self._warm = True
        with quiet_stderr():
            return self.graph.process(image)

    def close(self) -> None:
        """Stop the graph's threads and free its memory (tens of MB); idempotent."""
        if self.graph is not None:
            self.graph.close()
            self.graph = None


def import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    with quiet_stderr():
        import mediapipe as mp
    return mp


@dataclass(frozen=True)
class Detection:
    """One face in frame pixels (the frame spans [0, W] × [0, H])."""

    box: np.ndarray  # (4,) x, y, w, h
    score: float
    keypoints: np.ndarray  # (6, 2): right eye, left eye, nose tip, mouth centre, right ear, left ear

    @property
    def roll(self) -> float:
        """The eye line's angle in the frame (radians, clockwise on screen; 0 for an upright face)."""
        (rx, ry), (lx, ly) = self.keypoints[0], self.keypoints[1]
        return float(np.arctan2(ly - ry, lx - rx))

    @property
    def frontal(self) -> float:
        """1 for a face looking at the camera, falling to 0 as the nose reaches an eye (a profile)."""
        eyes = self.keypoints[1] - self.keypoints[0]
        span = float(np.hypot(*eyes))
        if span == 0:
            return 0.0
        along = float(np.dot(self.keypoints[2] - self.keypoints[:2].mean(0), eyes)) / span
        return max(0.0, 1.0 - abs(along) / (span / 2))

    def mapped(self, matrix: np.ndarray, score: float | None = None) -> "Detection":
        """This detection moved by a (2, 3) affine (from the image it was found in to the frame): keypoints
        exactly, the box as the upright bounds of its mapped corners."""
        x, y, w, h = self.box
        corners = apply_affine(matrix, np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]]))
        low, high = corners.min(0), corners.max(0)
        return Detection(np.array([*low, *(high - low)]), self.score if score is None else score,
                         apply_affine(matrix, self.keypoints))


MODELS = {"full": 1, "short": 0}  # MediaPipe's model_selection


class FaceDetector:
    """`detector(frame)` -> the faces in an (H, W, 3) uint8 RGB frame, best score first. `min_score` is the
    model's own threshold; the tracker asks for more before it trusts a face. `model`: full or short range."""

    def __init__(self, min_score: float = 0.5, model: str = "full"):
        mp = import_mediapipe()
        self.model = model
        self._model = QuietGraph(lambda: mp.solutions.face_detection.FaceDetection(
            model_selection=MODELS[model], min_detection_confidence=min_score))

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
        found = self._model.process(frame).detections or []
        height, width = frame.shape[:2]
        scale = np.array([width, height])
        faces = []
        for d in found:
            b = d.location_data.relative_bounding_box
            box = np.array([b.xmin * width, b.ymin * height, b.width * width, b.height * height])
            points = np.array([(p.x, p.y) for p in d.location_data.relative_keypoints]) * scale
            faces.append(Detection(box, float(d.score[0]), points))
        return sorted(faces, key=lambda f: -f.score)

    def close(self) -> None:
        self._model.close()
