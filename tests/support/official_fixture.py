"""Rebuild the released MCNet weights of the equivalence fixture (tests/data/official_vox256_seed1.*).

The rules are those of the fixture's README: every official state-dict entry is drawn from a generator seeded by
the CRC32 of its name, except the deterministic anti-aliasing kernels, which the network builds itself.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

from mcnet_rt.checkpoint import official_state
from mcnet_rt.models import MCNet

DATA = Path(__file__).parents[1] / "data"
WEIGHTS = DATA / "official_vox256_seed1.weights.json"
ARRAYS = DATA / "official_vox256_seed1.npz"


def _draw(name: str, rule: dict, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((zlib.crc32(name.encode()) + 7919 * seed) % 2 ** 62)
    shape = rule["shape"]
    kind = rule["rule"]
    if kind == "normal":
        return rule["mean"] + rule["std"] * torch.randn(shape, generator=g)
    if kind == "uniform":
        return rule["low"] + (rule["high"] - rule["low"]) * torch.rand(shape, generator=g)
    if kind == "identity2x2":
        return torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(shape[0] // 4) + rule["std"] * torch.randn(shape, generator=g)
    if kind == "const":
        dtype = torch.int64 if rule["dtype"] == "int64" else torch.float32
        return torch.full(shape, rule["value"], dtype=dtype)
    raise ValueError(f"unknown rule {kind!r} for {name}")


def official_checkpoint_dict(model: MCNet) -> dict:
    """The fixture's weights in the released file layout, built over `model`'s own deterministic buffers."""
    spec = json.loads(WEIGHTS.read_text())
    seed = spec["seed"]
    own = official_state(model)
    out = {}
    for net, rules in spec["rules"].items():
        state = {}
        for key, rule in rules.items():
            if rule["rule"] == "keep":
                tensor = own[net]["module." + key]
                assert abs(float(tensor.double().sum()) - rule["sum"]) < 1e-5, key
                assert abs(float(tensor.double().pow(2).sum()) - rule["sumsq"]) < 1e-6, key
            else:
                tensor = _draw(f"{net}.{key}", rule, seed)
            state["module." + key] = tensor
        out[net] = state
    # The released file also carries the (untrained) discriminator, three optimizer states and the epoch.
    out["discriminator"] = {"module.discs.1.conv.weight": torch.zeros(1, 512, 1, 1)}
    for name in ("optimizer_generator", "optimizer_kp_detector", "optimizer_discriminator"):
        out[name] = {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0, 1]}]}
    out["epoch"] = 99
    return out


def fixture_arrays() -> dict[str, np.ndarray]:
    with np.load(ARRAYS) as data:
        return {k: data[k] for k in data.files}


def image_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
