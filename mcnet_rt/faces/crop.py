"""The face crop as an invertible similarity map (scale, rotation, translation) between frame pixels and crop
pixels, applied with torch on the images' device, and its inverse: pasting a (generated) face back into the full
frame with a feathered edge that also leaves out whatever the crop took from outside the frame.

Coordinates are continuous pixels in which an image spans [0, W] × [0, H] (pixel i covers [i, i + 1)), the
convention of detector boxes and of MediaPipe's normalised points times the image size. A crop is a square
(centre x, centre y, side) of the frame, turned by `roll` (radians, the angle of the face's eye line in the frame,
clockwise on screen) so that the face comes out level, scaled to out_size × out_size; where the square leaves the
frame the crop is black (constant padding, never repeated edge pixels). Every transform may be batched: squares
(..., 3) give matrices (..., 2, 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..io.frames import to_tensor, to_uint8


def square_from_box(box: np.ndarray, margin: float) -> np.ndarray:
    """(..., 3) squares (cx, cy, side) around (..., 4) boxes (x, y, w, h); side = larger box side × (1 + 2·margin)."""
    box = np.asarray(box, dtype=np.float64)
    side = np.maximum(box[..., 2], box[..., 3]) * (1 + 2 * margin)
    return np.stack([box[..., 0] + box[..., 2] / 2, box[..., 1] + box[..., 3] / 2, side], axis=-1)


def keep_inside(square: np.ndarray, frame_size: tuple[int, int], roll: np.ndarray | float = 0.0) -> np.ndarray:
    """Shift squares (turned by `roll`) into the (height, width) frame along each axis where they fit; where one
    is larger than the frame it stays centred on the face (the crop is then padded)."""
    square = np.array(square, dtype=np.float64)
    reach = square[..., 2] * (np.abs(np.cos(roll)) + np.abs(np.sin(roll)))  # the turned square's upright extent
    half = reach / 2
    for axis, extent in ((0, frame_size[1]), (1, frame_size[0])):
        fits = reach <= extent
        square[..., axis] = np.where(fits, np.clip(square[..., axis], half, extent - half), square[..., axis])
    return square


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of (..., 2, 3) affine matrices (closed-form 2×2 inverse)."""
    a, b, c = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    d, e, f = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    det = a * e - b * d
    inv_a, inv_b, inv_d, inv_e = e / det, -b / det, -d / det, a / det
    return np.stack([np.stack([inv_a, inv_b, -(inv_a * c + inv_b * f)], -1),
                     np.stack([inv_d, inv_e, -(inv_d * c + inv_e * f)], -1)], -2)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., N, 2) points mapped by (..., 2, 3) matrices."""
    points = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,...nj->...ni", matrix[..., :2], points) + matrix[..., None, :, 2]


def _to_normalised(width: float, height: float) -> np.ndarray:
    """3×3: pixels -> grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return np.array([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]])


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (*matrix.shape[:-2], 1, 3))
    return np.concatenate([matrix, bottom], axis=-2)


def _sampling_theta(out_to_in: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int], batch: int,
                    like: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) theta for affine_grid from a pixel map output -> input (sizes are (height, width))."""
    theta = (_to_normalised(in_size[1], in_size[0]) @ _homogeneous(out_to_in)
             @ np.linalg.inv(_to_normalised(out_size[1], out_size[0])))[..., :2, :]
    # A non-blocking upload: the host copy is staged at once, and the CPU does not wait for the device's queue.
    return torch.as_tensor(np.broadcast_to(theta, (batch, 2, 3)).copy(), dtype=like.dtype).to(
        like.device, non_blocking=True)


def _grid(out_to_in: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int], like: torch.Tensor
          ) -> torch.Tensor:
    """grid_sample's (B, *out_size, 2) grid of out_to_in's pixels of an in_size image (B = like's batch)."""
    theta = _sampling_theta(out_to_in, in_size, out_size, like.shape[0], like)
    return F.affine_grid(theta, [like.shape[0], like.shape[1], *out_size], align_corners=False)


def _sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _warp(images: torch.Tensor, out_to_in: np.ndarray, in_size: tuple[int, int],
          out_size: tuple[int, int]) -> torch.Tensor:
    """Sample `images` at out_to_in's pixels of an in_size image. grid_sample's coordinates are normalised, so
    `images` may be a resized copy of that image."""
    return _sample(images, _grid(out_to_in, in_size, out_size, images))


def _smooth_ramp(distance: torch.Tensor, width: float) -> torch.Tensor:
    """0 at distance 0 rising to 1 at `width` along a smoothstep (no visible kink where a blend starts)."""
    ramp = (distance / width).clamp(0, 1) if width > 0 else (distance > 0).to(distance)
    return ramp * ramp * (3 - 2 * ramp)


def feather_mask(size: int, feather: float, like: torch.Tensor) -> torch.Tensor:
    """(1, 1, size, size): 1 inside, falling smoothly to 0 over the outer `feather` × size pixels of the square."""
    centres = torch.arange(size, dtype=like.dtype, device=like.device) + 0.5
    ramp = _smooth_ramp(torch.minimum(centres, size - centres), feather * size)
    return torch.minimum(ramp[:, None], ramp[None, :])[None, None]


# Crop pixels this close to where the crop left the frame are not pasted back: the model's convolutions spread
# the black padding a few pixels into the face.
EDGE_EROSION = 0.03


@dataclass(frozen=True)
class CropTransform:
    """frame pixels -> crop pixels: `matrix` (..., 2, 3); `inverse` maps crop pixels back to the frame."""

    matrix: np.ndarray
    frame_size: tuple[int, int]  # (height, width)
    out_size: int

    @classmethod
    def from_square(cls, square: np.ndarray, frame_size: tuple[int, int], out_size: int,
                    inside: bool = True, roll: np.ndarray | float = 0.0) -> "CropTransform":
        """Crop the (..., 3) squares (cx, cy, side) turned by `roll` (radians; the crop shows the face level),
        shifted into the frame where they fit unless inside=False."""
        roll = np.asarray(roll, dtype=np.float64)
        square = keep_inside(square, frame_size, roll) if inside else np.asarray(square, dtype=np.float64)
        if not np.all(np.isfinite(square)) or np.any(square[..., 2] <= 0) or not np.all(np.isfinite(roll)):
            raise ValueError(f"crop square must be finite with a positive side, got {square} (roll {roll})")
        scale = out_size / square[..., 2]
        cos, sin = scale * np.cos(roll), scale * np.sin(roll)
        cos, sin = np.broadcast_to(cos, scale.shape), np.broadcast_to(sin, scale.shape)
        cx, cy, half = square[..., 0], square[..., 1], out_size / 2
        # crop = scale · R(-roll) · (frame - centre) + out_size / 2
        matrix = np.stack([np.stack([cos, sin, half - cos * cx - sin * cy], -1),
                           np.stack([-sin, cos, half + sin * cx - cos * cy], -1)], -2)
        return cls(matrix, (int(frame_size[0]), int(frame_size[1])), int(out_size))

    @classmethod
    def from_box(cls, box: np.ndarray, frame_size: tuple[int, int], margin: float, out_size: int,
                 inside: bool = True, roll: np.ndarray | float = 0.0) -> "CropTransform":
        """The crop around (..., 4) face boxes (x, y, w, h) with `margin` (see square_from_box)."""
        return cls.from_square(square_from_box(box, margin), frame_size, out_size, inside, roll)

    @property
    def scale(self) -> np.ndarray:
        """(...,) crop pixels per frame pixel."""
        return np.hypot(self.matrix[..., 0, 0], self.matrix[..., 0, 1])

    @property
    def inverse(self) -> np.ndarray:
        """(..., 2, 3) crop pixels -> frame pixels."""
        return invert_affine(self.matrix)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.matrix, points)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.inverse, points)

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, out, out) crops of (B, C, H, W) float frames (B = the transform's batch, or any for one
        transform). A large face is first reduced with an anti-aliased resize, so that bilinear sampling does not
        alias."""
        if tuple(images.shape[-2:]) != self.frame_size:
            raise ValueError(f"crop: frames are {tuple(images.shape[-2:])}, the transform is for {self.frame_size}")
        reduction = float(np.max(self.scale))  # the batch's mildest scale: nobody is over-blurred
        if reduction < 0.9:
            size = [max(1, round(n * reduction)) for n in self.frame_size]
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        return _warp(images, self.inverse, self.frame_size, (self.out_size, self.out_size))

    def paste_mask(self, feather: float, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, out, out) weight of each crop pixel when pasted back (B = the transform's batch, 1 for one):
        the feathered square, times a ramp that is 0 within EDGE_EROSION × out of where the crop left the frame
        and rises to 1 over the feather band (no black from outside the frame comes back). Depends only on the
        transform: computed once per source crop, it can be passed to every paste."""
        size = self.out_size
        centres = torch.arange(size, dtype=torch.float64, device=like.device) + 0.5
        inverse = torch.as_tensor(self.inverse.reshape(-1, 2, 3), device=like.device)[..., None, None]
        x, y = (inverse[:, k, 0] * centres + inverse[:, k, 1] * centres[:, None] + inverse[:, k, 2] for k in (0, 1))
        height, width = self.frame_size
        inside = torch.minimum(torch.minimum(x, width - x), torch.minimum(y, height - y))  # frame pixels
        scale = torch.as_tensor(self.scale.reshape(-1, 1, 1), device=like.device)
        edge = _smooth_ramp((inside * scale - EDGE_EROSION * size).to(like.dtype), feather * size)  # eroded
        return torch.minimum(feather_mask(size, feather, like), edge.view(-1, 1, size, size))

    def paste(self, face: torch.Tensor, background: torch.Tensor, feather: float = 0.1,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """`background` (B, C, H, W) with `face` (B, C, out, out) warped back into the crop's place, blended with
        `mask` (default `paste_mask(feather, face)`): the face fades to the background over a border of
        `feather` × the crop's side and never brings back what the crop took from outside the frame. Only the
        frame rectangle that the crops cover is resampled; the rest is the background, untouched."""
        if tuple(background.shape[-2:]) != self.frame_size or tuple(face.shape[-2:]) != (self.out_size,) * 2:
            raise ValueError(f"paste: expected faces of {self.out_size}² and frames of {self.frame_size}, got "
                             f"{tuple(face.shape[-2:])} and {tuple(background.shape[-2:])}")
        return self.paste_back(feather, face, mask)(face, background)

    def paste_back(self, feather: float, like: torch.Tensor, mask: torch.Tensor | None = None) -> "PasteBack":
        """`paste` prepared for faces of like's batch, dtype and device (`like` may be the background): what
        depends on the transform alone (the frame region, its sampling grid, the warped mask, by default
        `paste_mask(feather, like)`) is computed here once; per frame only the face is warped and blended."""
        square = np.array([[0.0, 0.0], [self.out_size, 0.0], [0.0, self.out_size], [self.out_size, self.out_size]])
        corners = self.to_frame(square).reshape(-1, 2)
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, None)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int), (self.frame_size[1], self.frame_size[0]))
        if x1 <= x0 or y1 <= y0:
            return PasteBack(None, None, None)
        mask = self.paste_mask(feather, like) if mask is None else mask.to(like)
        mask = mask.expand(like.shape[0], 1, -1, -1)
        region_to_crop = _homogeneous(self.matrix) @ np.array([[1.0, 0, x0], [0, 1, y0], [0, 0, 1]])
        grid = _grid(region_to_crop[..., :2, :], (self.out_size,) * 2, (y1 - y0, x1 - x0), like)
        return PasteBack((slice(int(y0), int(y1)), slice(int(x0), int(x1))), grid, _sample(mask, grid))


@dataclass(frozen=True)
class PasteBack:
    """A transform's paste-back, prepared once (`CropTransform.paste_back`); call it with (face, background)."""

    region: tuple[slice, slice] | None  # the frame rows and columns that the crops cover; None: none
    grid: torch.Tensor | None  # region pixels -> crop coordinates
    alpha: torch.Tensor | None  # the feather mask warped into the region

    def __call__(self, face: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        result = background.clone()
        if self.region is None:
            return result
        warped = _sample(face, self.grid)
        region = result[..., self.region[0], self.region[1]]
        result[..., self.region[0], self.region[1]] = region * (1 - self.alpha) + warped * self.alpha
        return result


def crop_frame(frame: np.ndarray, transform: CropTransform, quick: bool = False) -> np.ndarray:
    """The crop of one (H, W, 3) uint8 frame as (S, S, 3) uint8 (CPU convenience over CropTransform.crop).
    quick: one bilinear OpenCV warp without anti-aliasing, tens of times faster on large frames: for what the
    detectors look at, not for what the model sees."""
    if not quick:
        return to_uint8(transform.crop(to_tensor(frame[None], torch.device("cpu"))))[0]
    return cv2.warpAffine(frame, opencv_matrix(transform.matrix.reshape(2, 3)), (transform.out_size,) * 2,
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def opencv_matrix(matrix: np.ndarray) -> np.ndarray:
    """A (2, 3) pixel map in this module's coordinates as OpenCV's warpAffine takes it: OpenCV puts pixel centres
    at integers, this module at half-integers."""
    return np.concatenate([matrix[:, :2], (matrix[:, 2] + matrix[:, :2].sum(1) * 0.5 - 0.5)[:, None]], 1)
