"""Model configuration and presets.

`vox-256` is the released configuration (config/vox-256.yaml with the command-line overrides the authors
used: num_kp=15, ExpendMemoryUnit, 32×32×512 memory). `small` keeps every mechanism at a fraction of the
width and at 128 px, for tests and CPU experiments.
"""
from __future__ import annotations

import dataclasses
import json
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
        return cls(
            image_size=raw["image_size"],
            num_channels=raw["num_channels"],
            num_kp=raw["num_kp"],
            keypoint_detector=KeypointDetectorConfig(**raw["keypoint_detector"]),
            generator=GeneratorConfig(**gen),
        )

    def with_memory_noise(self, noise: bool) -> "MCNetConfig":
        memory = dataclasses.replace(self.generator.memory, noise=noise)
        return dataclasses.replace(self, generator=dataclasses.replace(self.generator, memory=memory))


PRESETS: dict[str, MCNetConfig] = {
    "vox-256": MCNetConfig(),
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
