"""Motion and identity metrics: AKD, AED, PRMSE and an action-unit consistency PROXY for AUCON.

Each metric takes two image batches ((B, 3, H, W) float in [0, 1]) or, to avoid running the face models twice
on the same frames, two lists of `faces.FaceObservation`; it returns one float64 value per pair, NaN where a face
model found no face in either image. The protocols count those NaNs and report them; `summary` aggregates.

Where these differ from the paper and the released evaluation code (reference notes §4.3):
- AKD: landmarks from MediaPipe FaceMesh (478 points) or dlib (68 points, the paper's convention) instead of
  face-alignment's FAN. The distance is the Euclidean one averaged over landmarks ("average keypoint distance");
  the released `cmp_akd` averaged the absolute x and y differences instead: `released=True` reproduces that.
  The released code skipped frames without a face silently; here they are counted.
- AED: dlib's 128-d ResNet embedding instead of OpenFace nn4.small2 (whose weights ship in no package). The
  distance is Euclidean, as the name and the paper's "average euclidean distance" say; the released `cmp_aed`
  summed squared differences: `squared=True` reproduces that. Values are on dlib's scale (same person ≲ 0.6),
  not OpenFace's, so they do not compare with the paper's numbers.
- PRMSE: head pose from solvePnP on FaceMesh against MediaPipe's canonical mesh (pose.py) instead of py-feat's
  pose model; the RMSE is taken over all frames and the three angles, in degrees.
- AUCON: no action-unit model ships in any installable package, so `au_consistency` is a geometric PROXY, not
  AUCON; see AU_PROXIES for its definition. Its numbers do not compare with the paper's AUCON.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mcnet_rt import faces
from mcnet_rt.faces import ANALYSIS_SIZE, FaceObservation

from .pose import head_pose

Observations = Sequence[FaceObservation] | torch.Tensor | np.ndarray


def _observations(x: Observations) -> Sequence[FaceObservation]:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return faces.observe_batch(x)
    return x


def _pairs(a: Observations, b: Observations) -> tuple[Sequence[FaceObservation], Sequence[FaceObservation]]:
    a, b = _observations(a), _observations(b)
    if len(a) != len(b):
        raise ValueError(f"expected as many generated as reference images, got {len(a)} and {len(b)}")
    return a, b


def _landmarks(observation: FaceObservation, landmarks: str) -> np.ndarray | None:
    if landmarks == "mediapipe":
        return None if observation.mesh is None else observation.mesh[:, :2]
    if landmarks == "dlib":
        return observation.dlib68
    raise ValueError(f"unknown landmarks {landmarks!r}; expected 'mediapipe' or 'dlib'")


def akd(generated: Observations, real: Observations, landmarks: str = "mediapipe",
        released: bool = False) -> np.ndarray:
    """Average keypoint distance in pixels at 256×256 between corresponding landmarks of each image pair.

    landmarks: "mediapipe" (FaceMesh, 478 points, x and y) or "dlib" (68 points). released=True: the released
    code's mean absolute coordinate difference instead of the mean Euclidean distance.
    """
    generated, real = _pairs(generated, real)
    values = np.full(len(generated), np.nan)
    for i, (g, r) in enumerate(zip(generated, real)):
        pg, pr = _landmarks(g, landmarks), _landmarks(r, landmarks)
        if pg is not None and pr is not None:
            diff = pg - pr
            values[i] = np.abs(diff).mean() if released else np.linalg.norm(diff, axis=1).mean()
    return values


def aed(generated: Observations, reference: Observations, squared: bool = False) -> np.ndarray:
    """Distance between the dlib identity embeddings of each pair (reference: the real frame, or the source).

    squared=True: the released code's sum of squared differences instead of the Euclidean distance.
    """
    generated, reference = _pairs(generated, reference)
    values = np.full(len(generated), np.nan)
    for i, (g, r) in enumerate(zip(generated, reference)):
        if g.embedding is not None and r.embedding is not None:
            d = np.linalg.norm(g.embedding - r.embedding)
            values[i] = d * d if squared else d
    return values


def head_poses(observations: Observations) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees; NaN rows where FaceMesh found no face."""
    poses = np.full((len(observations := _observations(observations)), 3), np.nan)
    for i, o in enumerate(observations):
        if o.mesh is not None:
            poses[i] = head_pose(o.mesh, ANALYSIS_SIZE)
    return poses


def pose_error(generated: Observations, driving: Observations) -> np.ndarray:
    """Per-pair root mean square of the three pose-angle differences, in degrees.

    PRMSE over a set of pairs is the root of the mean of their squares (`summary(values, "rms")`), i.e. the RMSE
    over all frames and angles.
    """
    generated, driving = _pairs(generated, driving)
    diff = head_poses(generated) - head_poses(driving)
    return np.sqrt(np.mean(diff * diff, axis=1))


@dataclass(frozen=True)
class AUProxy:
    """One geometric stand-in for an action unit: a measure of the eye-aligned, IOD-normalised face."""

    name: str
    first: tuple[int, ...]  # FaceMesh indices (left side of the face) whose mean point ...
    second: tuple[int, ...]  # ... is compared with the mean point of these
    axis: str  # "y": the vertical offset of first minus second (y down); "distance": the distance between them
    direction: int  # +1: the action increases the measure; -1: it decreases it
    bilateral: bool  # True: also measured with the right side's mirrored indices, and the two averaged


AU_PROXIES = (
    AUProxy("AU1 inner brow raiser", (133,), (107,), "y", +1, True),  # inner brow above the inner eye corner
    AUProxy("AU2 outer brow raiser", (33,), (70,), "y", +1, True),  # outer brow above the outer eye corner
    AUProxy("AU4 brow lowerer", (107,), (336,), "distance", -1, False),  # inner brows drawn together
    AUProxy("AU5 upper lid raiser", (145,), (159,), "y", +1, True),  # eye opening: lower minus upper lid
    AUProxy("AU45 blink / eye closure", (145,), (159,), "y", -1, True),
    AUProxy("AU12 lip corner puller", (13, 14), (61,), "y", +1, True),  # lip corners above the lips' centre
    AUProxy("AU20 lip stretcher", (61,), (291,), "distance", +1, False),  # mouth width
    AUProxy("AU26 jaw drop", (14,), (13,), "y", +1, False),  # inner lips apart
)
# The right side's counterpart of each left-side FaceMesh index of a bilateral proxy.
_MIRROR = {133: 362, 107: 336, 33: 263, 70: 300, 145: 374, 159: 386, 61: 291}
_EYE_CORNERS = ((33, 133), (362, 263))  # left eye outer/inner, right eye inner/outer
AU_THRESHOLD = 0.03  # change from the reference face, in inter-ocular distances, that counts as "active"


def _aligned(mesh: np.ndarray) -> np.ndarray:
    """FaceMesh x, y rotated so that the eyes lie level, centred between them, in inter-ocular distances."""
    left, right = (mesh[list(c), :2].mean(axis=0) for c in _EYE_CORNERS)
    dx, dy = right - left
    iod = np.hypot(dx, dy)
    cos, sin = dx / iod, dy / iod
    rotate = np.array([[cos, sin], [-sin, cos]])
    return (mesh[:, :2] - (left + right) / 2) @ rotate.T / iod


def _measure(points: np.ndarray, proxy: AUProxy, first: tuple[int, ...], second: tuple[int, ...]) -> float:
    a, b = points[list(first)].mean(axis=0), points[list(second)].mean(axis=0)
    return float(np.linalg.norm(a - b)) if proxy.axis == "distance" else float(a[1] - b[1])


def au_measures(mesh: np.ndarray) -> np.ndarray:
    """The AU_PROXIES measures of one FaceMesh (bilateral ones averaged over the two sides)."""
    points = _aligned(mesh)
    values = []
    for proxy in AU_PROXIES:
        value = _measure(points, proxy, proxy.first, proxy.second)
        if proxy.bilateral:
            mirrored = [tuple(_MIRROR.get(i, i) for i in idx) for idx in (proxy.first, proxy.second)]
            value = (value + _measure(points, proxy, *mirrored)) / 2
        values.append(value)
    return np.array(values)


def au_activations(observations: Observations, reference: FaceObservation) -> np.ndarray:
    """(N, len(AU_PROXIES)) booleans: did each proxy move by more than AU_THRESHOLD, in its direction, from the
    reference face (the neutral the motion is relative to)? NaN rows where FaceMesh found no face, in the frame
    or in the reference."""
    observations = _observations(observations)
    active = np.full((len(observations), len(AU_PROXIES)), np.nan)
    if reference.mesh is None:
        return active
    base = au_measures(reference.mesh)
    directions = np.array([p.direction for p in AU_PROXIES])
    for i, o in enumerate(observations):
        if o.mesh is not None:
            active[i] = (directions * (au_measures(o.mesh) - base)) > AU_THRESHOLD
    return active


def au_consistency(generated: Observations, driving: Observations, generated_reference: FaceObservation,
                   driving_reference: FaceObservation) -> np.ndarray:
    """PROXY for AUCON: per pair, the fraction of AU_PROXIES that are active in both or inactive in both.

    AUCON (paper, appendix D.1) is the ratio of identical action-unit values that py-feat's AU detector finds in
    the generated and the driving faces. No AU detector ships in an installable package, so this stands in with
    geometry: each proxy is a FaceMesh distance in the eye-aligned face normalised by the inter-ocular distance,
    counted as active when it moved by more than AU_THRESHOLD (in its direction) from a reference face: the source
    for the generated frames and the driving anchor (the frame relative motion starts from) for the driving ones.
    Measuring change from the reference, rather than absolute values, keeps identity (eye size, mouth width) out
    of it. Identical inputs give 1.
    """
    generated, driving = _pairs(generated, driving)
    a = au_activations(generated, generated_reference)
    b = au_activations(driving, driving_reference)
    return np.where(np.isnan(a[:, 0]) | np.isnan(b[:, 0]), np.nan, (a == b).mean(axis=1))


def summary(values: np.ndarray, aggregate: str = "mean") -> dict:
    """{value, frames, no_face}: the mean (or, for "rms", the root mean square) over the pairs where both faces
    were found, how many those were, and how many were not."""
    values = np.asarray(values, dtype=np.float64)
    found = values[~np.isnan(values)]
    if found.size == 0:
        value = None
    elif aggregate == "rms":
        value = float(np.sqrt(np.mean(found * found)))
    else:
        value = float(found.mean())
    return {"value": value, "frames": int(found.size), "no_face": int(values.size - found.size)}
