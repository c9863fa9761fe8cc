"""Keypoints and the motion transfer between them (relative motion, adaptive movement scale).

Keypoints are (x, y) in [-1, 1] with a 2×2 jacobian each. Everything here is closed-form tensor math (no
`torch.inverse`, no NumPy) so that it exports to ONNX/TensorRT; the movement scale is computed once, outside the
per-frame graph.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Keypoints(NamedTuple):
    value: torch.Tensor  # (B, K, 2), x then y
    jacobian: torch.Tensor  # (B, K, 2, 2)

    def to(self, *args, **kwargs) -> "Keypoints":
        return Keypoints(self.value.to(*args, **kwargs), self.jacobian.to(*args, **kwargs))


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 2, 2) matrices by the adjugate formula."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    adj = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adj / det[..., None, None]


def convex_hull_area(points: torch.Tensor) -> float:
    """Area of the convex hull of (N, 2) points (Andrew's monotone chain + shoelace)."""
    pts = sorted({(float(x), float(y)) for x, y in points.detach().cpu().tolist()})
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        chain = []
        for p in seq:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = half(pts) + half(reversed(pts))
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(hull, hull[1:] + hull[:1])))


def movement_scale(kp_source: Keypoints, kp_driving_initial: Keypoints) -> float:
    """sqrt(source hull area / initial driving hull area): matches the face size of the driver to the source.

    Like the released demo, it uses the first batch element.
    """
    driving_area = convex_hull_area(kp_driving_initial.value[0])
    if driving_area == 0.0:
        return 1.0
    return (convex_hull_area(kp_source.value[0]) / driving_area) ** 0.5


def relative_keypoints(kp_source: Keypoints, kp_driving: Keypoints, kp_driving_initial: Keypoints,
                       scale: float = 1.0) -> Keypoints:
    """Transfer the driver's motion since its first frame onto the source keypoints.

    value = (kp_d − kp_d0)·scale + kp_s;  jacobian = J_d · J_d0⁻¹ · J_s.
    """
    value = (kp_driving.value - kp_driving_initial.value) * scale + kp_source.value
    jacobian = kp_driving.jacobian @ inverse_2x2(kp_driving_initial.jacobian) @ kp_source.jacobian
    return Keypoints(value, jacobian)
