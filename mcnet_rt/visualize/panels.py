"""The model's insides drawn as labelled panels, one row per sample: the one renderer of `mcnet-rt visualize`,
training's TensorBoard images and the validation grid, so that what a run shows while training is what
`visualize` shows later.

`Sample` holds one sample's tensors (CPU, float32); `draw_row` turns it into an (H, W, 3) uint8 row of the
chosen panels, `draw_grid` stacks rows. Everything else here is a pure function of arrays.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import InputError
from ..io.frames import to_uint8
from ..io.overlay import to_height
from ..keypoints import Keypoints
from ..models import DenseMotion
from ..models.blocks import coordinate_grid

# In drawing order. "features" expands to one panel before and one after the memory per compensated scale.
PANELS = ("source", "driving", "transferred", "sparse", "mask", "deformed", "flow", "occlusion", "features",
          "prediction")
# What training's TensorBoard images and the validation grid show: the panels that need no extra outputs.
TRAINING_PANELS = ("source", "driving", "deformed", "flow", "occlusion", "prediction")
LABEL_HEIGHT = 14
# Flow colours saturate at this displacement (in [-1, 1] image units, 1/8 of the image side): a fixed scale, so
# that colours compare across frames.
FLOW_SATURATION = 0.25


@dataclass
class Sample:
    """One sample's images (3, H, W) in [0, 1], keypoints (K, 2) / (K, 2, 2), and what the generator computed."""

    source: torch.Tensor
    driving: torch.Tensor
    prediction: torch.Tensor
    kp_source: Keypoints
    kp_driving: Keypoints
    kp_transferred: Keypoints | None = None  # the keypoints the generator was given (relative motion)
    deformation: torch.Tensor | None = None  # (h, w, 2)
    occlusion: torch.Tensor | None = None  # (1, h, w)
    mask: torch.Tensor | None = None  # (K+1, h, w)
    sparse_deformed: torch.Tensor | None = None  # (K+1, 3, h, w)
    deformed: torch.Tensor | None = None  # (3, H, W)
    warped: list[torch.Tensor] = field(default_factory=list)  # per compensated scale (C, h, w), coarse to fine
    compensated: list[torch.Tensor] = field(default_factory=list)


def samples(source: torch.Tensor, driving: torch.Tensor, prediction: torch.Tensor, kp_source: Keypoints,
            kp_driving: Keypoints, kp_transferred: Keypoints | None = None, motion: DenseMotion | None = None,
            deformed: torch.Tensor | None = None, warped=(), compensated=()) -> list[Sample]:
    """Split a batch of model outputs into `Sample`s; a source or keypoints of batch 1 are
    shared by every sample."""
    def pick(t: torch.Tensor | None, i: int) -> torch.Tensor | None:
        return None if t is None else t[min(i, t.shape[0] - 1)].detach().float().cpu()

    def kp(k: Keypoints | None, i: int) -> Keypoints | None:
        return None if k is None else Keypoints(pick(k.value, i), pick(k.jacobian, i))

    motion = motion or DenseMotion(None, None, None, None)
    return [Sample(pick(source, i), pick(driving, i), pick(prediction, i), kp(kp_source, i), kp(kp_driving, i),
                   kp(kp_transferred, i), pick(motion.deformation, i), pick(motion.occlusion, i),
                   pick(motion.mask, i), pick(motion.sparse_deformed, i), pick(deformed, i),
                   [pick(f, i) for f in warped], [pick(f, i) for f in compensated])
            for i in range(prediction.shape[0])]


def parse_panels(text: str) -> tuple[str, ...]:
    """A comma-separated choice of PANELS (or "all"), kept in drawing order."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return PANELS
    unknown = sorted(names - set(PANELS))
    if unknown or not names:
        raise InputError(f"panels {text!r}: unknown panel {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(PANELS)} or all", options=("panels",))
    return tuple(n for n in PANELS if n in names)


# ---------------------------------------------------------------------------------------------- pure drawing

def keypoint_colours(count: int) -> np.ndarray:
    """(count, 3) uint8: one fixed, saturated hue per keypoint index, the same in every frame and every figure."""
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(0.8 * k / max(count - 1, 1), 1.0, 1.0)]
                     for k in range(count)], np.uint8)


def to_image(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (1, H, W) in [0, 1] -> (H, W, 3) uint8."""
    t = torch.as_tensor(t).float()
    return to_uint8(t.expand(3, *t.shape[1:])[None])[0]


def draw_keypoints(image: np.ndarray, keypoints: Keypoints, jacobians: bool = True) -> np.ndarray:
    """Numbered keypoints in their fixed colours, with each jacobian's columns as two short axes."""
    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    height, width = image.shape[:2]
    value = keypoints.value.numpy()
    radius = max(2, width // 80)
    axis = 0.1  # axis length in [-1, 1] units for a unit jacobian
    for k, ((x, y), colour) in enumerate(zip(value, keypoint_colours(len(value)))):
        cx, cy = (x + 1) / 2 * (width - 1), (y + 1) / 2 * (height - 1)
        colour = tuple(int(c) for c in colour)
        if jacobians and keypoints.jacobian is not None:
            for column in keypoints.jacobian[k].numpy().T:
                draw.line((cx, cy, cx + column[0] * axis * (width - 1) / 2, cy + column[1] * axis * (height - 1) / 2),
                          fill=colour, width=1)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour, outline=(0, 0, 0))
        draw.text((cx + radius + 1, cy - radius - 1), str(k), fill=colour, stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(out)


def flow_colours(deformation: torch.Tensor) -> np.ndarray:
    """(h, w, 2) sampling grid -> (h, w, 3) uint8 colour wheel of its displacement from the identity: hue is the
    direction, saturation the length (white: no motion; full colour at FLOW_SATURATION)."""
    d = (deformation - coordinate_grid(*deformation.shape[:2])).numpy()
    hue = (np.arctan2(d[..., 1], d[..., 0]) / (2 * np.pi)) % 1.0
    saturation = np.clip(np.hypot(d[..., 0], d[..., 1]) / FLOW_SATURATION, 0, 1)
    hsv = np.stack([hue, saturation, np.ones_like(hue)], axis=-1)
    return (255 * _hsv_to_rgb(hsv)).round().astype(np.uint8)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    sector = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, sector[None, ..., None].repeat(3, -1), axis=0)[0]


def heat_colours(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8, dark blue (0) through red to yellow (1)."""
    v = np.clip(values, 0, 1)[..., None]
    return (255 * np.concatenate([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), 0.5 * (1 - v)], -1)).astype(np.uint8)


def pca_rgb(feature: torch.Tensor) -> np.ndarray:
    """(C, h, w) -> (h, w, 3) uint8: the feature's first three principal components over its positions as R, G, B
    (each sign fixed so that its largest loading is positive, which keeps colours steady from frame to frame;
    each stretched between its 1st and 99th percentile)."""
    c, h, w = feature.shape
    x = feature.double().flatten(1).T
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)
    top = vectors[:, -3:].flip(1) if c >= 3 else torch.eye(c, 3, dtype=x.dtype)
    top = top * torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))
    projected = (x @ top).numpy()
    low, high = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    rgb = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1)
    return (255 * rgb.reshape(h, w, 3)).round().astype(np.uint8)


def mask_colours(mask: torch.Tensor) -> np.ndarray:
    """(K+1, h, w) softmax weights -> each pixel the weighted mean of its motions' colours (background grey)."""
    colours = np.concatenate([[[128, 128, 128]], keypoint_colours(mask.shape[0] - 1)]).astype(np.float32)
    return np.einsum("khw,kc->hwc", mask.numpy(), colours).round().clip(0, 255).astype(np.uint8)


def mosaic(images: list[np.ndarray], columns: int | None = None, gap: int = 1) -> np.ndarray:
    """Equal-sized (h, w, 3) images tiled row by row on black, `columns` wide (default: a near square)."""
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = -(-len(images) // columns)
    h, w = images[0].shape[:2]
    out = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return out


def sparse_mosaic(sparse_deformed: torch.Tensor) -> np.ndarray:
    """The source warped by each sparse motion (background first), framed in its keypoint's colour."""
    colours = np.concatenate([[[128, 128, 128]], keypoint_colours(sparse_deformed.shape[0] - 1)])
    tiles = []
    for image, colour in zip(sparse_deformed, colours):
        tile = np.pad(to_image(image), ((2, 2), (2, 2), (0, 0)))
        tile[:2], tile[-2:], tile[:, :2], tile[:, -2:] = colour, colour, colour, colour
        tiles.append(tile)
    return mosaic(tiles)


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    """`image` under a black band carrying `text` (cut to the image's width)."""
    band = Image.new("RGB", (image.shape[1], LABEL_HEIGHT))
    draw = ImageDraw.Draw(band)
    while text and draw.textlength(text) > image.shape[1] - 4:
        text = text[:-1]
    draw.text((2, 1), text, fill=(255, 255, 255))
    return np.concatenate([np.asarray(band), image], axis=0)


# ---------------------------------------------------------------------------------------------- rows

def panel_images(sample: Sample, panels: tuple[str, ...] = PANELS) -> list[tuple[str, np.ndarray, bool]]:
    """(label, image, nearest) for each chosen panel the sample has data for, in `panels` order."""
    out = []
    for name in panels:
        if name == "source":
            out.append(("source + kp", draw_keypoints(to_image(sample.source), sample.kp_source), False))
        elif name == "driving":
            out.append(("driving + kp", draw_keypoints(to_image(sample.driving), sample.kp_driving), False))
        elif name == "transferred" and sample.kp_transferred is not None:
            out.append(("transferred kp", draw_keypoints(to_image(sample.source), sample.kp_transferred),
                        False))
        elif name == "sparse" and sample.sparse_deformed is not None:
            out.append(("sparse motions", sparse_mosaic(sample.sparse_deformed), True))
        elif name == "mask" and sample.mask is not None:
            out.append(("motion weights", mask_colours(sample.mask), True))
        elif name == "deformed" and sample.deformed is not None:
            out.append(("source warped", to_image(sample.deformed), False))
        elif name == "flow" and sample.deformation is not None:
            out.append(("flow", flow_colours(sample.deformation), True))
        elif name == "occlusion" and sample.occlusion is not None:
            # MCNet predicts one occlusion map; every scale uses it, resized.
            out.append((f"occlusion {sample.occlusion.shape[-1]}", to_image(sample.occlusion), True))
        elif name == "features":
            for before, after in zip(sample.warped, sample.compensated):
                out.append((f"{before.shape[-1]}: warped", pca_rgb(before), True))
                out.append((f"{after.shape[-1]}: +memory", pca_rgb(after), True))
        elif name == "prediction":
            out.append(("prediction", to_image(sample.prediction), False))
    return out


def draw_row(sample: Sample, panels: tuple[str, ...] = PANELS, height: int | None = None) -> np.ndarray:
    """The chosen panels side by side at `height` (default the image size), each labelled."""
    height = height or sample.source.shape[-2]
    return np.concatenate([labelled(to_height(image, height, Image.NEAREST if nearest else Image.BILINEAR), label)
                           for label, image, nearest in panel_images(sample, panels)], axis=1)


def draw_grid(rows: list[Sample], panels: tuple[str, ...] = PANELS, height: int | None = None) -> np.ndarray:
    """One row per sample, stacked."""
    return np.concatenate([draw_row(s, panels, height) for s in rows], axis=0)
