"""The one home of built engines (ONNX graphs, AOTInductor packages, TensorRT engines): a folder in the user's cache,
entries named by a key of everything the build depends on, so that a run reuses the last build instead of compiling
again (an AOTInductor build takes minutes) and nothing is left in /tmp.

An entry is built under a temporary name of its own and renamed into place when complete (`atomic_directory`): two
processes never share a temporary, and a half-written entry is never seen. Delete the folder to reclaim the space.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import weights_hash
from ..errors import InputError
from ..io.atomic import atomic_directory
from ..pipeline.step import FrameStep
from .halves import NAMES

PACKAGE = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """$MCNET_RT_ENGINE_CACHE, else $XDG_CACHE_HOME/mcnet_rt/engines, else ~/.cache/mcnet_rt/engines."""
    if os.environ.get("MCNET_RT_ENGINE_CACHE"):
        return Path(os.environ["MCNET_RT_ENGINE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcnet_rt" / "engines"


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


@functools.cache
def code_hash() -> str:
    """The package's code and native libraries: a change to the model code changes the graphs it traces."""
    files = sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".so") and "__pycache__" not in p.parts)
    return digest(*(str(p.relative_to(PACKAGE)).encode() + p.read_bytes() for p in files))


def step_key(step: FrameStep, kind: str) -> str:
    """What a build of `step` as `kind` (e.g. "aoti", "onnx-standard") depends on: the weights and configuration,
    precision, motion mode, device, and the torch and mcnet_rt versions and code."""
    facts = {"kind": kind, "weights": weights_hash(step.model), "dtype": str(step.dtype), "relative": step.relative,
             "device": step.device.type, "torch": torch.__version__, "mcnet_rt": __version__, "code": code_hash()}
    return f"{kind}-{digest(json.dumps(facts, sort_keys=True).encode())}"


def cached_folder(key: str, build: Callable[[Path], object]) -> Path:
    """The cache entry `key`; on a miss `build(folder)` fills a new one first. When another process publishes the
    same entry first, its entry is used and this build is discarded."""
    entry = cache_root() / key
    if entry.is_dir() and any(entry.iterdir()):
        return entry
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{entry.parent}: cannot create the engine cache ({e.strerror or e}); set "
                         "MCNET_RT_ENGINE_CACHE to a writable folder") from None
    try:
        with atomic_directory(entry, cache=True) as tmp:
            build(tmp)
    except (InputError, OSError):
        if not entry.is_dir() or not any(entry.iterdir()):
            raise  # a real failure, not a lost race
    return entry


def halves_files(step: FrameStep, kind: str, build: Callable[[FrameStep, Path], dict[str, Path]],
                 work_dir: Path | None) -> dict[str, Path]:
    """The keypoints and render files that `build(step, folder)` writes, in `work_dir`, or else in the cache entry
    of the step's key (built only on a miss)."""
    if work_dir is not None:
        return build(step, Path(work_dir))
    folder = cached_folder(step_key(step, kind), lambda tmp: build(step, tmp))
    return {name: next(folder.glob(f"{name}.*")) for name in NAMES}
