"""The measured dispatch's decisions on disk, so that each (GPU, op, dtype, shape class) is self-tested once per
machine and build: ~/.cache/mcnet_rt/dispatch.json, or the file named by MCNET_RT_DISPATCH_CACHE.

Decisions are grouped under a machine key: GPU name and compute capability, driver version and the hash of the
built ops library `_ops.so` (the kernels that run). A new driver or a rebuild of the kernels gives a new key, so its
decisions are measured afresh.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_output
from .machine import Build, DeviceFacts
from .selftest import Decision


def cache_path() -> Path:
    if "MCNET_RT_DISPATCH_CACHE" in os.environ:
        return Path(os.environ["MCNET_RT_DISPATCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mcnet_rt" / "dispatch.json"


def machine_key(facts: DeviceFacts, build: Build | None) -> str:
    major, minor = facts.capability
    return (f"{facts.name} | sm_{major}{minor} | driver {facts.driver_version} | "
            f"_ops.so {build.build_hash if build else 'cpu-only'}")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: measure again
    return data if isinstance(data, dict) else {}


def load(key: str) -> dict[str, Decision]:
    entries = _read(cache_path()).get(key, {})
    return {name: Decision(**entry) for name, entry in entries.items() if isinstance(entry, dict)}


def store(key: str, name: str, decision: Decision) -> None:
    """Add one decision, keeping what other processes wrote meanwhile; an unwritable cache only costs re-measuring."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data.setdefault(key, {})[name] = asdict(decision)
        with atomic_output(path, cache=True) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    except (OSError, InputError):
        pass
