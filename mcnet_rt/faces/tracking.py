"""Causal face tracking, frame by frame (live) or over a whole clip (prepare-data).

A face is trusted only when confirmed: a detection scoring at least `min_score` whose level crop FaceMesh also
finds a face in (BlazeFace alone fires on drawn faces and text, e.g. a cartoon title card at 0.6-0.7). While no
face is tracked, every frame runs the full-range detector on the frame plus ONE view of the finder's other upright
passes in turn (short-range, padded, each tile), so a close-up or a small face is found within a few frames
without any frame paying for all passes. The track then runs only the view that found it (a tile follows the
face) and follows the detection that
overlaps the previous box most, with a colour-histogram cue between overlapping candidates, so it stays with the
same person when a second one comes near; a frame without one reports no face (None), and after `lost_after` such
frames the track ends. The next face confirmed is then the most like the lost one, or, for a first face, the one
`choice` picks (see finding.choose). Nothing is held or invented: a frame reports a face only where the detector
saw one, or, with `detect_every` > 1, the last seen box marked `detected=False`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .crop import CropTransform, square_from_box
from .detection import Detection, FaceDetector
from .finding import TILE, UPRIGHT, FaceFinder, check_choice, choose, iou, views
from .one_euro import OneEuroFilter

ALIGNS = ("roll", "none")
APPEARANCE_EVERY = 15  # frames between updates of the tracked face's colour histogram
APPEARANCE_WEIGHT = 0.5  # of the histogram correlation against IoU when several detections overlap the track


def appearance(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """A cheap identity cue: the hue-saturation histogram of the middle of the face box (skin, hair, glasses),
    compared by correlation; None when the box is outside the frame."""
    x, y, w, h = box
    x0, y0 = int(max(0, x + 0.2 * w)), int(max(0, y + 0.1 * h))
    x1, y1 = int(min(frame.shape[1], x + 0.8 * w)), int(min(frame.shape[0], y + 0.9 * h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    patch = cv2.cvtColor(cv2.resize(frame[y0:y1, x0:x1], (24, 24), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([patch], [0, 1], None, [12, 6], [0, 180, 0, 256])
    return cv2.normalize(histogram, histogram).flatten()


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Correlation of two appearance histograms (1: alike); 0 when either is missing."""
    return 0.0 if a is None or b is None else float(cv2.compareHist(a, b, cv2.HISTCMP_CORREL))


@dataclass(frozen=True)
class Track:
    """The tracked face in one frame."""

    detection: Detection
    square: np.ndarray  # (3,) crop square (cx, cy, side) in frame pixels, steadied if the tracker steadies
    frame_size: tuple[int, int]  # (height, width)
    detected: bool  # False: carried from the last detection (detect_every > 1), not seen in this frame
    roll: float = 0.0  # radians the crop turns to level the face (0 with align="none"), steadied with the square

    def crop(self, out_size: int, inside: bool = True) -> CropTransform:
        return CropTransform.from_square(self.square, self.frame_size, out_size, inside, self.roll)


class FaceTracker:
    """`tracker.update(frame)` -> Track or None, one (H, W, 3) uint8 RGB frame at a time; `reset()` starts over
    (and forgets the person); `close()` closes the models' graphs. align: roll (level the crop by the eyes) or
    none; choice: which face starts a track when several are found (finding.choose)."""

    def __init__(self, margin: float = 0.4, min_score: float = 0.75, confirm_with_mesh: bool = True,
                 min_iou: float = 0.2, lost_after: int = 5, detect_every: int = 1,
                 steadying: OneEuroFilter | None = None, detector: FaceDetector | None = None,
                 choice: str = "largest", align: str = "roll"):
        if detect_every < 1 or lost_after < 0:
            raise ValueError(f"need detect_every >= 1 and lost_after >= 0, got {detect_every}, {lost_after}")
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")
        self.margin, self.min_score, self.confirm_with_mesh = margin, min_score, confirm_with_mesh
        self.min_iou, self.lost_after, self.detect_every = min_iou, lost_after, detect_every
        self.choice, self.align = check_choice(choice), align
        self.steadying = steadying
        self.finder = FaceFinder(min_score, detector)
        self.detector = self.finder.detector("full")
        self._identity: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self._identity = None
        self._restart()

    def _restart(self) -> None:
        """End the track but remember the person, so that the next face confirmed is the most like them."""
        self._last: Track | None = None
        self._view: tuple[str, str, CropTransform | None] = ("full", "frame", None)  # model, pass, view
        self._missed = 0
        self._since_detection = 0
        self._searches = 0
        self._seen = 0
        if self.steadying:
            self.steadying.reset()

    def close(self) -> None:
        """Close the graphs of the detectors this tracker made (the garbage collector does not free their native
        threads and memory; a detector passed in stays its owner's to close); idempotent."""
        self.finder.close()

    def _search(self, frame: np.ndarray) -> Detection | None:
        """No face tracked: the full-range detector and one view of the other upright passes in turn; of the
        confirmed faces the one most like the lost person, else the one `choice` picks."""
        others = [(model, view, t) for model, view in UPRIGHT[1:] for t in views(view, frame.shape[:2])]
        look_too = others[self._searches % len(others)]  # short-range first, then padded (close-ups), then tiles
        self._searches += 1
        for look in (("full", "frame", None), look_too):
            detections = [d for d in self.finder.look(frame, look[0], look[2]) if d.score >= self.min_score]
            faces = [c for d in detections if (c := self._confirmed(frame, d)) is not None]
            if faces:
                self._view = look
                if self._identity is not None:
                    return max(faces, key=lambda d: similarity(self._identity, appearance(frame, d.box)))
                faces.sort(key=lambda d: d.box[0] + d.box[2] / 2)
                # face N of the avatar photo: a camera showing fewer people drives with its largest face
                choice = "largest" if self.choice.isdigit() and int(self.choice) > len(faces) else self.choice
                return faces[choose(faces, choice, frame.shape[:2])[0]]
        return None

    def _confirmed(self, frame: np.ndarray, detection: Detection) -> Detection | None:
        return self.finder.confirm(frame, detection) if self.confirm_with_mesh else detection

    def _follow(self, frame: np.ndarray) -> Detection | None:
        """A face tracked: the detection of its pass that overlaps it most (IoU, plus appearance when several
        overlap)."""
        previous = self._last.detection.box
        model, view, transform = self._view
        if view == "tiles":  # the tile moves with the face
            tile = TILE * max(frame.shape[:2])
            transform = CropTransform.from_square(np.array([*previous[:2] + previous[2:] / 2, tile]),
                                                  frame.shape[:2], transform.out_size, inside=False)
        overlaps = [(o, d) for d in self.finder.look(frame, model, transform)
                    if (o := iou(d.box, previous)) >= self.min_iou]
        if len(overlaps) > 1 and self._identity is not None:
            return max(overlaps, key=lambda od: od[0] + APPEARANCE_WEIGHT * similarity(
                self._identity, appearance(frame, od[1].box)))[1]
        return max(overlaps, key=lambda od: od[0])[1] if overlaps else None

    def _remember(self, frame: np.ndarray, detection: Detection) -> None:
        """Keep the person's appearance current (every APPEARANCE_EVERY frames: it changes slowly)."""
        if self._identity is None or self._seen % APPEARANCE_EVERY == 0:
            current = appearance(frame, detection.box)
            if current is not None:
                self._identity = current if self._identity is None else 0.8 * self._identity + 0.2 * current
        self._seen += 1

    def update(self, frame: np.ndarray, dt: float | None = None) -> Track | None:
        """The face in this frame, or None. `dt`: seconds since the previous frame, for the steadying."""
        if self._last is not None and self._since_detection + 1 < self.detect_every:
            self._since_detection += 1
            last = self._last
            return Track(last.detection, last.square, last.frame_size, detected=False, roll=last.roll)
        self._since_detection = 0
        detection = self._follow(frame) if self._last is not None else self._search(frame)
        if detection is None:
            self._missed += 1
            if self._missed > self.lost_after:
                self._restart()
            return None
        self._missed = 0
        self._remember(frame, detection)
        roll = detection.roll if self.align == "roll" else 0.0
        if self._last is not None:  # no jump of 2π between -179° and 179°
            roll = self._last.roll + float(np.angle(np.exp(1j * (roll - self._last.roll))))
        state = np.array([*square_from_box(detection.box, self.margin), roll])
        if self.steadying:
            state = self.steadying(state, dt)
        self._last = Track(detection, state[:3], tuple(frame.shape[:2]), detected=True, roll=float(state[3]))
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


def steady_squares(squares: np.ndarray, window: int) -> np.ndarray:
    """(N, 3) squares averaged over a centred window (edges repeated): offline, so the crop does not lag."""
    window = max(1, min(window, len(squares)))
    padded = np.pad(squares, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(squares.shape[1])], axis=1)


def track_clip(frames: Iterable[np.ndarray], tracker: FaceTracker,
               steady_frames: int = 15) -> tuple[list[np.ndarray | None], tuple[int, int]]:
    """The whole-clip mode: per frame the crop square, steadied within each run of face frames, or None where the
    tracker saw no face; and the frame (height, width). The tracker should not steady itself."""
    tracker.reset()
    tracks, size = [], (0, 0)
    for frame in frames:
        size = frame.shape[:2]
        tracks.append(tracker.update(frame))
    squares: list[np.ndarray | None] = [None] * len(tracks)
    for start, stop in face_runs(tracks):
        steadied = steady_squares(np.stack([t.square for t in tracks[start:stop]]), steady_frames)
        squares[start:stop] = list(steadied)
    return squares, size
