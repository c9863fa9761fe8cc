"""The disk store of prepared sources (their crop, keypoints and encoder features), so that a restart of `live`
with the same avatar and weights skips the face search and the encoder (`models.SourceCache` is one prepared source
in memory).

The key is a hash of the image's pixels, the model's weights and configuration, and the whole `faces.CropOptions`,
so a changed file, checkpoint or crop setting never meets a stale entry. Entries are safetensors files (no pickle):
loading one cannot run code.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..faces import CropOptions, CropTransform
from ..io.atomic import atomic_output
from ..io.frames import to_tensor
from ..keypoints import Keypoints
from ..checkpoint import weights_hash
from ..models import MCNet, SourceCache
from .step import prepare_source


def source_key(model: MCNet, image: np.ndarray, crop: CropOptions, dtype: torch.dtype) -> str:
    """The entry's name: the frozen `crop` enters whole (its repr names every field)."""
    digest = hashlib.sha256(weights_hash(model).encode())
    digest.update(repr((image.shape, crop, str(dtype))).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:32]


def _save(path: Path, transform: CropTransform, cache: SourceCache) -> None:
    tensors = {"matrix": torch.from_numpy(np.ascontiguousarray(transform.matrix)),
               "frame_size": torch.tensor(transform.frame_size), "image": cache.image,
               "kp_value": cache.keypoints.value, "kp_jacobian": cache.keypoints.jacobian,
               **{f"feature_{i}": f for i, f in enumerate(cache.features)}}
    with atomic_output(path, cache=True) as tmp:  # a cache entry, not one of the run's outputs
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _load(path: Path, out_size: int, device: torch.device) -> tuple[CropTransform, SourceCache] | None:
    try:
        t = load_file(str(path), device=str(device))
    except (OSError, SafetensorError):
        return None  # unreadable or truncated: prepared again and rewritten
    features = [t[f"feature_{i}"] for i in range(sum(k.startswith("feature_") for k in t))]
    transform = CropTransform(t["matrix"].cpu().numpy(), tuple(int(n) for n in t["frame_size"]), out_size)
    return transform, SourceCache(t["image"], Keypoints(t["kp_value"], t["kp_jacobian"]), features)


def load_or_prepare(model: MCNet, image: np.ndarray, find_crop: Callable[[], CropTransform],
                    crop: CropOptions, dtype: torch.dtype,
                    cache_dir: str | Path | None) -> tuple[CropTransform, SourceCache]:
    """The source's crop transform and prepared cache: from `cache_dir` when an entry for this image, these weights
    and crop options exists, else computed (`find_crop`, then the encoder) and stored there."""
    device = next(model.parameters()).device
    size = model.config.image_size
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{source_key(model, image, crop, dtype)}.safetensors"
        if path.is_file() and (found := _load(path, size, device)) is not None:
            return found
    transform = find_crop()
    cache = prepare_source(model, transform.crop(to_tensor(image[None], device)), dtype)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, transform, cache)
    return transform, cache
