"""Model configuration and presets.

`vox-256` is the released configuration (config/vox-256.yaml with the command-line overrides the authors
used: num_kp=15, ExpendMemoryUnit, 32×32×512 memory). `small` keeps every mechanism at a fraction of the
width and at 128 px, for tests and CPU experiments. `vox-512` is the 256 model at twice the resolution: one more
down/up block in the generator keeps its bottleneck, and the memory it attends to, at 32×32; the keypoint detector
and the dense motion network downscale by 1/8 instead of 1/4, so they still run at 64×64 with the 256 model's
layers. Every level of the 256 generator reappears at twice its resolution (see `mcnet_rt.upscale`); the new
coarsest level is compensated by the same memory, like the others.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .errors import InputError


@dataclass(frozen=True)
class KeypointDetectorConfig:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25


@dataclass(frozen=True)
class DenseMotionConfig:
    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kp_variance: float = 0.01


@dataclass(frozen=True)
class MemoryConfig:
    channels: int = 512
    spatial: int = 32
    num_experts: int = 4
    gate_temperature: float = 34.0
    attention_scale: float = 0.25
    # The released StyleConv adds fresh N(0,1) noise on every call; off by default for deterministic output.
    noise: bool = False


@dataclass(frozen=True)
class GeneratorConfig:
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 3
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


@dataclass(frozen=True)
class MCNetConfig:
    image_size: int = 256
    num_channels: int = 3
    num_kp: int = 15
    keypoint_detector: KeypointDetectorConfig = field(default_factory=KeypointDetectorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MCNetConfig":
        raw = json.loads(text)
        gen = dict(raw["generator"])
        gen["dense_motion"] = DenseMotionConfig(**gen["dense_motion"])
        gen["memory"] = MemoryConfig(**gen["memory"])
        config = cls(
            image_size=raw["image_size"],
            num_channels=raw["num_channels"],
            num_kp=raw["num_kp"],
            keypoint_detector=KeypointDetectorConfig(**raw["keypoint_detector"]),
            generator=GeneratorConfig(**gen),
        )
        check_bounds(config)
        return config

    def with_memory_noise(self, noise: bool) -> "MCNetConfig":
        memory = dataclasses.replace(self.generator.memory, noise=noise)
        return dataclasses.replace(self, generator=dataclasses.replace(self.generator, memory=memory))


# Integer sizes a configuration read from a file may have: generous around the presets, yet small enough that no
# file can make the model ask for more memory than a workstation has (2^20 channels would ask for 39 TB).
INT_BOUNDS = {
    "image_size": (32, 1024), "num_channels": (3, 3), "num_kp": (1, 64), "block_expansion": (1, 512),
    "max_features": (1, 4096), "num_blocks": (1, 8), "num_down_blocks": (1, 6), "channels": (1, 2048),
    "spatial": (1, 128), "num_experts": (1, 16),
}


def check_bounds(config, prefix: str = "") -> None:
    """Raise ValueError naming the first field whose type or value is out of range (sizes bounded, floats
    finite and positive), so that a configuration from a file is checked before a model is built from it."""
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_bounds(value, name + ".")
        elif f.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} = {value!r}, expected true or false")
        elif f.type == "int":
            low, high = INT_BOUNDS[f.name]
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} = {value!r}, expected an integer from {low} to {high}")
        elif type(value) not in (int, float) or not (math.isfinite(value) and 0 < value <= 1e3):
            raise ValueError(f"{name} = {value!r}, expected a positive number")


PRESETS: dict[str, MCNetConfig] = {
    "vox-256": MCNetConfig(),
    "vox-512": MCNetConfig(
        image_size=512,
        keypoint_detector=KeypointDetectorConfig(scale_factor=0.125),
        generator=GeneratorConfig(num_down_blocks=4, dense_motion=DenseMotionConfig(scale_factor=0.125)),
    ),
    "small": MCNetConfig(
        image_size=128,
        keypoint_detector=KeypointDetectorConfig(block_expansion=16, max_features=256, num_blocks=4),
        generator=GeneratorConfig(
            block_expansion=16,
            max_features=128,
            dense_motion=DenseMotionConfig(block_expansion=16, max_features=256, num_blocks=4),
            memory=MemoryConfig(channels=64, spatial=16),
        ),
    ),
}


def preset(name: str) -> MCNetConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
