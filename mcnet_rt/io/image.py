"""Still images in and out, refusing inputs that would silently produce a wrong animation."""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mcnet_rt.errors import InputError
from mcnet_rt.io.atomic import atomic_output, write_failed
from mcnet_rt.io.inputs import check_input_file

MIN_SIDE = 32

_GRAYSCALE_MODES = {"1", "L", "LA", "La"}
_HIGH_DEPTH_MODES = {"I": "32-bit integer", "F": "32-bit floating-point", "I;16": "16-bit", "I;16L": "16-bit",
                     "I;16B": "16-bit", "I;16N": "16-bit"}
_ALPHA_MODES = {"RGBA", "RGBa", "PA"}


def upright(image: Image.Image) -> Image.Image:
    """The decoded image as a viewer shows it: turned by its EXIF orientation (phones store photos sideways with
    an orientation tag). Every reader of still images goes through here."""
    image.load()
    return ImageOps.exif_transpose(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Load an 8-bit colour image as an (H, W, 3) uint8 RGB array, upright as a viewer shows it."""
    path = check_input_file(path)
    try:
        with Image.open(path) as image:
            image = upright(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from e

    if image.mode in _GRAYSCALE_MODES:
        raise InputError(f"{path}: is a grayscale image; the model needs a colour (RGB) image")
    if image.mode in _HIGH_DEPTH_MODES:
        raise InputError(f"{path}: {_HIGH_DEPTH_MODES[image.mode]} images are not supported, convert to 8-bit RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = image.convert("RGBA")
        if image.getextrema()[3][0] < 255:
            raise InputError(f"{path}: has transparent pixels; flatten it onto a background first")
    try:
        rgb = np.array(image.convert("RGB"))
    except ValueError as e:
        raise InputError(f"{path}: colour mode {image.mode} cannot be converted to RGB ({e})") from e

    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InputError(f"{path}: is {width}×{height}; at least {MIN_SIDE}×{MIN_SIDE} pixels are needed")
    return rgb


def fit_square(frame: np.ndarray, size: int) -> tuple[np.ndarray, str | None]:
    """Bring a frame to the model's size×size input without distorting the face.

    Crops the centred square (the face is usually central) rather than squashing the aspect ratio.
    Returns the frame and a note for the user describing the change, or None when nothing changed.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    if (height, width) == (size, size):
        return frame, None

    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frame[top : top + side, left : left + side]
    notes = []
    if height != width:
        notes.append(f"cropped the centre {side}×{side} of {width}×{height}")
    if side != size:
        resample = Image.BOX if side > size else Image.BICUBIC
        square = np.array(Image.fromarray(square).resize((size, size), resample))
        notes.append(f"resized to {size}×{size}" if notes else f"resized {width}×{height} to {size}×{size}")
    return np.ascontiguousarray(square), " and ".join(notes)



def write_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Save an (H, W, 3) uint8 image as PNG; nothing is left at `path` if the write fails."""
    with atomic_output(path) as tmp:
        try:
            Image.fromarray(image).save(tmp, format="PNG")
        except OSError as e:
            raise write_failed(Path(path), e) from None
