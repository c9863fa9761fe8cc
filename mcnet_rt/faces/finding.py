"""Finding every clear face in a frame, and choosing the one to animate.

BlazeFace sees a face well only over a range of sizes and rolls: the full-range model under-scores a face that
fills the frame, misses faces a few percent of the frame wide, and neither model finds a head turned much past
45°. A search therefore runs passes, each one model on views of the frame: the frame itself, the frame shrunk into
a larger canvas (a close-up), overlapping tiles of it enlarged (small faces), and, when nothing upright is found,
the frame turned by 90°, 180° and 270°. Detections are mapped back to the frame and merged (overlapping ones keep
the best score); a face is trusted only when it scores at least `min_score` and FaceMesh confirms it in a level
crop around it (BlazeFace alone fires on animals, drawn faces and text).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .crop import CropTransform, crop_frame
from .detection import Detection, FaceDetector
from .landmarks import face_mesh

CONFIRM_SIZE = 192  # pixels of the level crop that FaceMesh checks
VIEW_SIZE = 384  # pixels of a padded, tiled or turned view (the models themselves run at 128 or 192)
PADDING = 1.8  # the padded view's canvas side, in frame sides
TILE = 0.4  # a tile's side, in frame sides (so faces are 2.5 times larger in a tile)
MERGE_IOU = 0.3
# Eye centres in FaceMesh's 478 landmarks: (outer, inner) corners of the person's right and left eye.
MESH_EYES = ((33, 133), (263, 362))
UPRIGHT = (("full", "frame"), ("short", "frame"), ("full", "padded"), ("full", "tiles"))
TURNS = (90, 180, 270)
CHOICES = ("largest", "centre", "left", "right")


def views(view: str, frame_size: tuple[int, int]) -> list[CropTransform | None]:
    """The views of one pass as transforms frame -> view (None: the frame itself)."""
    height, width = frame_size
    side = max(height, width)
    if view == "frame":
        return [None]
    if view == "padded":
        return [CropTransform.from_square(np.array([width / 2, height / 2, PADDING * side]), frame_size, VIEW_SIZE,
                                          inside=False)]
    if view == "tiles":
        tile = TILE * side
        starts = [np.linspace(0, max(0.0, extent - tile), max(1, math.ceil((extent - tile) / (0.75 * tile)) + 1))
                  for extent in (width, height)]
        return [CropTransform.from_square(np.array([x + tile / 2, y + tile / 2, tile]), frame_size, VIEW_SIZE,
                                          inside=False) for y in starts[1] for x in starts[0]]
    turn = math.radians(int(view))  # the frame turned: a face lying at this roll comes out upright
    return [CropTransform.from_square(np.array([width / 2, height / 2, side]), frame_size, min(side, 2 * VIEW_SIZE),
                                      inside=False, roll=turn)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9))


def merge(detections: list[Detection]) -> list[Detection]:
    """One detection per face, best score first: of overlapping detections the best-scoring one stays."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(iou(detection.box, k.box) < MERGE_IOU for k in kept):
            kept.append(detection)
    return kept


@dataclass(frozen=True)
class Found:
    """The faces a search found (confirmed, left to right) and what it tried."""

    faces: list[Detection]
    passes: list[str]


class FaceFinder:
    """`finder.find(frame)` -> Found; `finder.detect(frame, passes)` -> merged unconfirmed detections;
    `finder.confirm(frame, detection)` -> the detection with FaceMesh's eyes, or None. `close()` closes the
    models' graphs."""

    def __init__(self, min_score: float = 0.75, detector: FaceDetector | None = None):
        self.min_score = min_score
        self._borrowed = detector  # a full-range detector passed in stays its owner's to close
        self.detectors = {"full": detector or FaceDetector(min_score=min(0.5, min_score), model="full")}

    def detector(self, model: str) -> FaceDetector:
        """The full- or short-range detector (the short-range one is built on first use)."""
        if model == "short" and "short" not in self.detectors:
            self.detectors["short"] = FaceDetector(min_score=min(0.5, self.min_score), model="short")
        return self.detectors[model]

    def look(self, frame: np.ndarray, model: str, transform: CropTransform | None = None) -> list[Detection]:
        """`model` on one view of the frame (None: the frame itself), detections in frame pixels."""
        if transform is None:
            return self.detector(model)(frame)
        return [d.mapped(transform.inverse)
                for d in self.detector(model)(crop_frame(frame, transform, quick=True))]

    def run(self, frame: np.ndarray, model: str, view: str) -> list[Detection]:
        """One pass: `model` on each view of `view`, detections in frame pixels."""
        return [d for transform in views(view, frame.shape[:2]) for d in self.look(frame, model, transform)]

    def confirm(self, frame: np.ndarray, detection: Detection) -> Detection | None:
        """FaceMesh finds a face centred inside the detection box in a level crop around it: the detection with
        its eye keypoints moved to FaceMesh's eye centres (a steadier roll), else None."""
        transform = CropTransform.from_box(detection.box, frame.shape[:2], 0.5, CONFIRM_SIZE, inside=False,
                                           roll=detection.roll)
        mesh = face_mesh()(crop_frame(frame, transform, quick=True))
        if mesh is None:
            return None
        points = transform.to_frame(mesh[:, :2])
        centre = points.mean(axis=0)
        x, y, w, h = detection.box
        if not (x <= centre[0] <= x + w and y <= centre[1] <= y + h):
            return None
        eyes = np.array([points[list(pair)].mean(axis=0) for pair in MESH_EYES])
        return replace(detection, keypoints=np.concatenate([eyes, detection.keypoints[2:]]))

    def confirmed(self, frame: np.ndarray, detections: list[Detection]) -> list[Detection]:
        return [c for d in detections if d.score >= self.min_score and (c := self.confirm(frame, d)) is not None]

    def find(self, frame: np.ndarray) -> Found:
        """Every confirmed face, left to right: upright passes first, turned ones only when those find none."""
        tried, faces = [], []
        for plan in (UPRIGHT, [(model, str(turn)) for model in ("full", "short") for turn in TURNS]):
            detections = []
            for model, view in plan:
                detections += self.run(frame, model, view)
                tried.append(f"{model}-range {view}")
            faces = self.confirmed(frame, merge(detections))
            if faces:
                break
        return Found(sorted(faces, key=lambda d: d.box[0] + d.box[2] / 2), tried)

    def close(self) -> None:
        """Close the graphs of the detectors this finder made; idempotent."""
        for detector in self.detectors.values():
            if detector is not self._borrowed:
                detector.close()


def check_choice(choice: str) -> str:
    """`choice` if it is one of CHOICES or a face number (1 = leftmost), else ValueError."""
    if choice in CHOICES or (choice.isdigit() and int(choice) >= 1):
        return choice
    raise ValueError(f"face choice must be a number from 1 (the leftmost face) or one of {', '.join(CHOICES)}, "
                     f"got {choice!r}")


def choose(faces: list[Detection], choice: str, frame_size: tuple[int, int]) -> tuple[int, str]:
    """The index into `faces` (left to right) that `choice` picks and why, in words. largest: the largest face,
    a turned-away one counting for less; centre: the nearest to the frame's centre; left, right; N: the N-th
    from the left. ValueError when there is no N-th face."""
    check_choice(choice)
    if choice.isdigit():
        if int(choice) > len(faces):
            raise ValueError(f"face {choice} was asked for but only {len(faces)} face(s) were found")
        return int(choice) - 1, f"face {choice} from the left, as asked"
    if choice == "left":
        return 0, "the leftmost"
    if choice == "right":
        return len(faces) - 1, "the rightmost"
    if choice == "centre":
        middle = np.array([frame_size[1], frame_size[0]]) / 2
        return int(np.argmin([np.hypot(*(d.box[:2] + d.box[2:] / 2 - middle)) for d in faces])), \
            "the nearest the centre"
    return int(np.argmax([d.box[2] * d.box[3] * (0.5 + 0.5 * d.frontal) for d in faces])), \
        "the largest and most frontal"
