"""Causal face tracking, frame by frame (live) or over a whole clip (prepare-data).

A face is trusted only when confirmed: a detection scoring at least `min_score` whose crop FaceMesh also finds a
face in (BlazeFace alone fires on drawn faces and text, e.g. a cartoon title card at 0.6-0.7). The track then
follows the detection (of any score the detector reports) that overlaps the previous box most; a frame without one
reports no face (None), and after `lost_after` such frames the track ends, so a new face must be confirmed again.
Nothing is held or invented: a frame reports a face only where the detector saw one, or, with `detect_every` > 1,
the last seen box marked `detected=False`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .crop import CropTransform, crop_frame, square_from_box
from .detection import Detection, FaceDetector
from .landmarks import face_mesh
from .one_euro import OneEuroFilter

CONFIRM_SIZE = 192  # pixels of the crop that FaceMesh checks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9))


@dataclass(frozen=True)
class Track:
    """The tracked face in one frame."""

    detection: Detection
    square: np.ndarray  # (3,) crop square (cx, cy, side) in frame pixels, smoothed if the tracker smooths
    frame_size: tuple[int, int]  # (height, width)
    detected: bool  # False: carried from the last detection (detect_every > 1), not seen in this frame

    def crop(self, out_size: int, inside: bool = True) -> CropTransform:
        return CropTransform.from_square(self.square, self.frame_size, out_size, inside)


class FaceTracker:
    """`tracker.update(frame)` -> Track or None, one (H, W, 3) uint8 RGB frame at a time; `reset()` starts over;
    `close()` when done (the detector's graph holds native threads and memory that the garbage collector does not
    free)."""

    def __init__(self, margin: float = 0.4, min_score: float = 0.75, confirm_with_mesh: bool = True,
                 min_iou: float = 0.2, lost_after: int = 5, detect_every: int = 1,
                 smoothing: OneEuroFilter | None = None, detector: FaceDetector | None = None):
        if detect_every < 1 or lost_after < 0:
            raise ValueError(f"need detect_every >= 1 and lost_after >= 0, got {detect_every}, {lost_after}")
        self.margin, self.min_score, self.confirm_with_mesh = margin, min_score, confirm_with_mesh
        self.min_iou, self.lost_after, self.detect_every = min_iou, lost_after, detect_every
        self.smoothing = smoothing
        self._owns_detector = detector is None
        self.detector = detector or FaceDetector(min_score=min(0.5, min_score))
        self.reset()

    def close(self) -> None:
        """Release the MediaPipe graph of the detector this tracker made (a detector passed in stays its owner's
        to close); idempotent."""
        if self._owns_detector:
            self.detector.close()

    def reset(self) -> None:
        self._last: Track | None = None
        self._missed = 0
        self._since_detection = 0
        if self.smoothing:
            self.smoothing.reset()

    def _confirmed(self, frame: np.ndarray, detection: Detection) -> bool:
        """FaceMesh finds a face centred inside the detection box, in a crop around it."""
        if not self.confirm_with_mesh:
            return True
        transform = CropTransform.from_box(detection.box, frame.shape[:2], 0.5, CONFIRM_SIZE, inside=False)
        mesh = face_mesh()(crop_frame(frame, transform))
        if mesh is None:
            return False
        centre = transform.to_frame(mesh[None, :, :2].mean(axis=1, keepdims=True))[0, 0]
        x, y, w, h = detection.box
        return bool(x <= centre[0] <= x + w and y <= centre[1] <= y + h)

    def _match(self, frame: np.ndarray, detections: list[Detection]) -> Detection | None:
        if self._last is not None:  # a face already confirmed: any detection that overlaps it continues it
            previous = self._last.detection.box
            overlaps = [(iou(d.box, previous), d) for d in detections]
            overlaps = [(o, d) for o, d in overlaps if o >= self.min_iou]
            return max(overlaps, key=lambda od: od[0])[1] if overlaps else None
        # best score first: the first that FaceMesh confirms starts the track
        for detection in (d for d in detections if d.score >= self.min_score):
            if self._confirmed(frame, detection):
                return detection
        return None

    def update(self, frame: np.ndarray, dt: float | None = None) -> Track | None:
        """The face in this frame, or None. `dt`: seconds since the previous frame, for the smoothing."""
        if self._last is not None and self._since_detection + 1 < self.detect_every:
            self._since_detection += 1
            return Track(self._last.detection, self._last.square, self._last.frame_size, detected=False)
        self._since_detection = 0
        detection = self._match(frame, self.detector(frame))
        if detection is None:
            self._missed += 1
            if self._missed > self.lost_after:
                self.reset()
            return None
        self._missed = 0
        square = square_from_box(detection.box, self.margin)
        if self.smoothing:
            square = self.smoothing(square, dt)
        self._last = Track(detection, square, tuple(frame.shape[:2]), detected=True)
        return self._last


def face_runs(tracks: list[Track | None], min_length: int = 1) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of consecutive frames with a face, at least min_length long."""
    runs, start = [], None
    for i, track in enumerate([*tracks, None]):
        if track is not None and start is None:
            start = i
        elif track is None and start is not None:
            if i - start >= min_length:
                runs.append((start, i))
            start = None
    return runs


def smooth_squares(squares: np.ndarray, window: int) -> np.ndarray:
    """(N, 3) squares averaged over a centred window (edges repeated): offline, so the crop does not lag."""
    window = max(1, min(window, len(squares)))
    padded = np.pad(squares, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(squares.shape[1])], axis=1)


def track_clip(frames: Iterable[np.ndarray], tracker: FaceTracker,
               smooth_frames: int = 15) -> tuple[list[np.ndarray | None], tuple[int, int]]:
    """The whole-clip mode: per frame the crop square, smoothed within each run of face frames, or None where the
    tracker saw no face; and the frame (height, width). The tracker should not smooth itself."""
    tracker.reset()
    tracks, size = [], (0, 0)
    for frame in frames:
        size = frame.shape[:2]
        tracks.append(tracker.update(frame))
    squares: list[np.ndarray | None] = [None] * len(tracks)
    for start, stop in face_runs(tracks):
        smoothed = smooth_squares(np.stack([t.square for t in tracks[start:stop]]), smooth_frames)
        squares[start:stop] = list(smoothed)
    return squares, size
