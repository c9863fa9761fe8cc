"""A checkpoint of one resolution as the start of a fine-tune at a higher one (vox-256 -> vox-512).

The higher-resolution preset has the same layers plus `extra` coarser generator levels (one per doubling), so every
level of the source generator reappears at twice its resolution, counted from the image: down block i stays down
block i, the last up blocks and residual blocks are the source's last ones, the memory's per-scale projection and
output layers of scale r move to scale r·2^extra. The keypoint detector, the dense motion network (which run at the
same 64×64 input once downscaled) and the shared memory layers keep their names. A weight is kept when its
mapped key exists with the same shape; everything else keeps the target model's initialisation and is reported.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

from .config import MCNetConfig
from .errors import InputError
from .models import MCNet


class Upscaled(NamedTuple):
    model: MCNet
    kept: list[str]  # target keys whose weights come from the source
    new: list[str]  # target keys left at their initialisation (no source layer, or another shape)


def source_key(key: str, extra: int, factor: int) -> str:
    """The source state-dict key that the target's `key` continues."""
    def shift(pattern: str, step: int):
        return re.sub(pattern, lambda m: f"{m.group(1)}{int(m.group(2)) - step}", key)

    if re.match(r"generator\.up_blocks\.\d+\.", key):
        return shift(r"(generator\.up_blocks\.)(\d+)", extra)
    if re.match(r"generator\.resblock\.\d+\.", key):
        return shift(r"(generator\.resblock\.)(\d+)", 2 * extra)
    match = re.match(r"(generator\.memory\.(?:projections|mcm\.out_convs|mcm\.out_norms)\.)(\d+)(\..*)", key)
    if match:
        return f"{match.group(1)}{int(match.group(2)) // factor}{match.group(3)}"
    return key


def upscale(source: MCNet, target_config: MCNetConfig) -> Upscaled:
    """A model of `target_config` holding every weight of `source` that has a place in it."""
    s, t = source.config, target_config
    factor = t.image_size // s.image_size
    extra = t.generator.num_down_blocks - s.generator.num_down_blocks
    if factor < 2 or t.image_size != factor * s.image_size or extra != math.log2(factor) or s.num_kp != t.num_kp:
        raise InputError(f"cannot continue a {s.image_size} px model with {s.generator.num_down_blocks} generator "
                         f"levels and {s.num_kp} keypoints as {t.image_size} px with {t.generator.num_down_blocks} "
                         "levels: the target must double the resolution with one more level per doubling")
    target = MCNet(target_config)
    have = source.state_dict()
    state = target.state_dict()
    modules: dict[str, list[str]] = {}
    for key in state:  # a block's conv and norm together
        modules.setdefault(re.sub(r"\.(conv|norm)\d?$", "", key.rpartition(".")[0]), []).append(key)
    kept, new = [], []
    for keys in modules.values():  # a layer is kept whole or not at all (no new conv under an old norm)
        olds = [have.get(source_key(key, extra, factor)) for key in keys]
        if all(old is not None and old.shape == state[key].shape for key, old in zip(keys, olds)):
            state.update({key: old.to(state[key].dtype) for key, old in zip(keys, olds)})
            kept += keys
        else:
            new += keys
    target.load_state_dict(state)
    return Upscaled(target.to(next(source.parameters()).device), kept, new)


def summary(result: Upscaled) -> str:
    """Kept and new parameters, counted and grouped by module, for the user."""
    state = result.model.state_dict()

    def count(keys: list[str]) -> int:
        return sum(state[k].numel() for k in keys if state[k].is_floating_point())

    groups = sorted({re.sub(r"\.(conv|norm)\d?$", "", k.rpartition(".")[0]) for k in result.new})
    return (f"kept {count(result.kept) / 1e6:.1f} M values ({len(result.kept)} tensors) from the source; "
            f"new {count(result.new) / 1e6:.1f} M values ({len(result.new)} tensors): {', '.join(groups)}")
