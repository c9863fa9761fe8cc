"""Checkpoints: the authors' official `.pth.tar` and our own safetensors format.

Neither runs code when loaded: the official file goes through `torch.load(weights_only=True)`, ours through
safetensors. The official key names are kept for the encoder, decoder, dense motion and keypoint detector; the
memory unit's keys are renamed so that the paper's parts (meta-memory, IICM, MCM) carry their names in our code.
"""
from __future__ import annotations

import hashlib
import pickle
import weakref
import zipfile
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import MCNetConfig, preset
from .errors import CheckpointError
from .io.atomic import atomic_output, write_failed
from .models import MCNet

FORMAT = "mcnet_rt"
FORMAT_VERSION = "1"
NETWORKS = ("kp_detector", "generator")
OFFICIAL_EXTENSIONS = (".pth.tar", ".pth", ".pt")
# Extra top-level entry of an official-layout file holding our configuration; files without it are vox-256.
CONFIG_KEY = "mcnet_rt_config"

# Official generator key prefix -> ours, first match wins (a longer official prefix comes before its own prefix).
MEMORY_KEY_RENAMES = (
    ("mbUnit.mb", "memory.meta_memory"),
    ("mbUnit.feat_forward_proj_", "memory.projections."),
    ("mbUnit.style_route.", "memory.iicm.identity_mlp."),
    ("mbUnit.styleconv.modulated_conv.", "memory.iicm.modulated_conv."),
    ("mbUnit.styleconv.weight", "memory.iicm.noise_strength"),
    ("mbUnit.styleconv.activate.bias", "memory.iicm.activation_bias"),
    ("mbUnit.conv_kv.attention.", "memory.mcm.kv_conv.gate."),
    ("mbUnit.conv_kv.", "memory.mcm.kv_conv."),
    ("mbUnit.query_conv.", "memory.mcm.query_conv."),
    ("mbUnit.diff_conv.", "memory.mcm.diff_conv."),
    ("mbUnit.conv_", "memory.mcm.out_convs."),
    ("mbUnit.norm_", "memory.mcm.out_norms."),
)


def _rename(key: str, renames) -> str:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def official_to_ours(key: str) -> str:
    return _rename(key, MEMORY_KEY_RENAMES)


def ours_to_official(key: str) -> str:
    inverse = sorted(((new, old) for old, new in MEMORY_KEY_RENAMES), key=lambda r: -len(r[0]))
    return _rename(key, inverse)


# ---------------------------------------------------------------------------------------------------- reading

def _read_torch_file(path: Path) -> object:
    try:
        # A file object, not the path: torch hands any path ending in .safetensors to safetensors.
        with path.open("rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(f"{path}: holds Python objects other than tensors and plain containers; refusing to "
                                  "unpickle it, since that can run arbitrary code") from None
        raise CheckpointError(f"{path}: corrupt checkpoint ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first})") from None


def _strip_module(state: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _identify_foreign(path: Path, raw: dict) -> None:
    """Name the model a non-MCNet checkpoint belongs to, since users pass sibling projects' files by mistake."""
    keys = set(raw)
    if {"inpainting_network", "dense_motion_network"} & keys:
        raise CheckpointError(f"{path}: this is a Thin-Plate Spline Motion Model (TPSMM) checkpoint, not MCNet")
    if {"use_stereo", "height", "width"} & keys or any(k.startswith(("encoder.", "decoder.")) for k in keys):
        raise CheckpointError(f"{path}: this looks like DaGAN's depth-network weights, not an MCNet checkpoint")
    if not {"generator", "kp_detector"} <= keys:
        shown = ", ".join(sorted(map(str, keys))[:8]) or "none"
        raise CheckpointError(f"{path}: not an MCNet checkpoint: expected top-level 'generator' and 'kp_detector', "
                              f"found {shown}")
    generator = _strip_module(raw["generator"]) if isinstance(raw["generator"], dict) else {}
    if not any(k.startswith("mbUnit.") for k in generator):
        if any(k.startswith(("src_first.", "AttnModule.")) for k in generator):
            raise CheckpointError(f"{path}: this is a DaGAN checkpoint (depth-aware generator), not MCNet")
        if any(k.startswith("bottleneck.") for k in generator):
            raise CheckpointError(f"{path}: this is a First Order Motion Model (FOMM) checkpoint, not MCNet: its "
                                  "generator has no memory unit (mbUnit)")
        raise CheckpointError(f"{path}: the generator has no memory unit (mbUnit.* weights); not an MCNet checkpoint")


def _check_state(path: Path, net: str, state: object) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: '{net}' is a {type(state).__name__}, expected a dictionary of weights")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: '{net}' holds {key!r}: {type(value).__name__}; expected weight names "
                                  "mapped to tensors")


def _read_official(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], MCNetConfig]:
    raw = _read_torch_file(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a checkpoint dictionary (found {type(raw).__name__})")
    for net in NETWORKS:
        if net in raw:
            _check_state(path, net, raw[net])
    _identify_foreign(path, raw)
    config = _parse_config(path, raw[CONFIG_KEY]) if CONFIG_KEY in raw else preset("vox-256")
    return {net: {official_to_ours(k): v for k, v in _strip_module(raw[net]).items()} for net in NETWORKS}, config


def _parse_config(path: Path, text: object) -> MCNetConfig:
    try:
        return MCNetConfig.from_json(text)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its stored model configuration is unreadable ({e})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], MCNetConfig]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: a safetensors file, but not an mcnet_rt checkpoint (no "
                                      f"'format: {FORMAT}' in its metadata)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(f"{path}: mcnet_rt checkpoint format version {meta.get('format_version')!r}; "
                                      f"this build reads version {FORMAT_VERSION}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    if "config" not in meta:
        raise CheckpointError(f"{path}: its metadata holds no model configuration")
    config = _parse_config(path, meta["config"])
    states = {net: {} for net in NETWORKS}
    for key, tensor in tensors.items():
        net, _, name = key.partition(".")
        if net not in states:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} (expected kp_detector.* or generator.*)")
        states[net][name] = tensor
    return states, config


def _file_kind(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch"
    # safetensors: a little-endian u64 header length, then the JSON header. Tested before the legacy pickle
    # marker, since the length's first byte can be 0x80.
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch"
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    raise CheckpointError(f"{path}: neither a PyTorch checkpoint nor a safetensors file")


def _summarise(keys: list[str]) -> str:
    groups = Counter(".".join(k.split(".")[:2]) for k in keys)
    return ", ".join(f"{g}.* ({n})" for g, n in groups.most_common(6)) + (" …" if len(groups) > 6 else "")


def _check_num_kp(path: Path, states: dict, config: MCNetConfig) -> None:
    kp_weight = states["kp_detector"].get("kp.weight")
    if kp_weight is not None and kp_weight.shape[0] != config.num_kp:
        raise CheckpointError(f"{path}: the keypoint detector has {kp_weight.shape[0]} keypoints; this model needs "
                              f"{config.num_kp} (MCNet's memory unit is built for exactly that many)")


def _load_into(model: MCNet, path: Path, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Strict load with one readable error listing what is missing, unexpected or of the wrong shape."""
    problems = []
    for net in NETWORKS:
        module = getattr(model, net)
        expected = module.state_dict()
        given = states[net]
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
                 for k in sorted(set(expected) & set(given)) if given[k].shape != expected[k].shape]
        if missing:
            problems.append(f"{net}: {len(missing)} weights missing: {_summarise(missing)}")
        if unexpected:
            problems.append(f"{net}: {len(unexpected)} unexpected weights: {_summarise(unexpected)}")
        if wrong:
            problems.append(f"{net}: {len(wrong)} weights of the wrong shape, e.g. {'; '.join(wrong[:3])}")
    if problems:
        raise CheckpointError(f"{path}: does not match the model configuration: " + " | ".join(problems))
    for net in NETWORKS:
        _check_values(path, net, getattr(model, net).state_dict(), states[net])
    for net in NETWORKS:
        getattr(model, net).load_state_dict(states[net], strict=True)


def _check_values(path: Path, net: str, expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> None:
    """Refuse weights that would run but give black or meaningless frames: integer or boolean tensors where the
    model has floating-point ones, and NaN or infinite values."""
    for key, tensor in given.items():
        if not expected[key].is_floating_point():
            continue  # BatchNorm's num_batches_tracked counter is an integer
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: weight {net}.{key} is {str(tensor.dtype).removeprefix('torch.')}; "
                                  "model weights must be floating point")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {net}.{key} holds NaN or infinite values; the checkpoint is "
                                  "broken (e.g. a diverged training run)")


def load(path: str | Path, device: str | torch.device = "cpu", memory_noise: bool = False) -> MCNet:
    """Load an official MCNet `.pth.tar` (the released vox-256 configuration unless the file carries ours, as
    `save_official` writes it) or an mcnet_rt safetensors file.

    Returns the model in eval mode. `memory_noise=True` restores the released code's random noise injection.
    """
    path = Path(path)
    if _file_kind(path) == "torch":
        states, config = _read_official(path)
    else:
        states, config = _read_safetensors(path)
    config = config.with_memory_noise(memory_noise)
    _check_num_kp(path, states, config)
    model = MCNet(config)
    _load_into(model, path, states)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------- writing

def save(model: MCNet, path: str | Path, notes: dict[str, str] | None = None) -> None:
    """Write our format: safetensors with the configuration in its metadata (atomic); `notes` adds metadata
    entries (e.g. which weights of a training run these are)."""
    tensors = {f"{net}.{k}": v.detach().cpu().contiguous()
               for net in NETWORKS for k, v in getattr(model, net).state_dict().items()}
    meta = {**(notes or {}), "format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    _write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def official_state(model: MCNet) -> dict[str, dict[str, torch.Tensor]]:
    """The two networks' weights with official key names and the `module.` prefix of the released DDP training."""
    return {net: {"module." + ours_to_official(k): v.detach().cpu()
                  for k, v in getattr(model, net).state_dict().items()} for net in NETWORKS}


def save_official(model: MCNet, path: str | Path, extra: dict | None = None) -> None:
    """Write the official `.pth.tar` layout (atomic) plus our configuration as one extra string entry, which the
    released code ignores; `extra` adds top-level entries (optimizer states, epoch)."""
    content = {**official_state(model), "epoch": 0, CONFIG_KEY: model.config.to_json(), **(extra or {})}
    _write(path, lambda tmp: torch.save(content, tmp))


def _write(path: str | Path, write) -> None:
    """Run `write(tmp)` under atomic_output; its failures (full disk, I/O errors) become one error line."""
    path = Path(path)
    with atomic_output(path) as tmp:
        try:
            write(tmp)
        except (OSError, RuntimeError, SafetensorError) as e:
            raise write_failed(path, e) from None


_weights_hashes: weakref.WeakKeyDictionary[MCNet, str] = weakref.WeakKeyDictionary()


def weights_hash(model: MCNet) -> str:
    """SHA-256 of the configuration and every parameter and buffer (computed once per model object)."""
    if model not in _weights_hashes:
        digest = hashlib.sha256(model.config.to_json().encode())
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        _weights_hashes[model] = digest.hexdigest()
    return _weights_hashes[model]
