"""Training checkpoints: everything an exact resume needs, in a file that loads without running code.

The file holds tensors and plain containers only (torch.save, read back with weights_only=True): the two
networks and their weight average (when `train.ema` is on), both optimisers, the GradScaler, the best validation
so far, the position in the data (epoch, batch), the step, the count of skipped steps, every RNG state and the
configuration as YAML. The learning-rate schedule is not state: it follows the configuration. Writes are atomic.
"""
from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import checkpoint
from ..config import MCNetConfig
from ..errors import CheckpointError, InputError
from ..io.atomic import atomic_output
from ..models import MCNet

_NAME = re.compile(r"step-(\d+)\.pt$")


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Training checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def save(path: Path, state: dict, keep: int) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(path.parent)[:-keep]:
        old.unlink(missing_ok=True)


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != "mcnet_rt-train":
        raise CheckpointError(f"{path}: not an mcnet_rt training checkpoint (see training/README.md; official "
                              "and exported model files are for `mcnet-rt animate`)")
    return state


def best_path(directory: Path) -> Path:
    """The checkpoint of the best validation so far (not counted in `keep`, never removed)."""
    return directory / "best.pt"


def model_from_state(state: dict, weights: str | None = None) -> tuple[MCNet, str]:
    """The model of a training checkpoint and which weights it holds: "ema" (the weight average), "raw" (the
    last step's); None picks the average when the checkpoint has one."""
    if weights is None:
        weights = "ema" if state["ema"] else "raw"
    if weights not in ("ema", "raw"):
        raise InputError(f"weights {weights!r}: expected 'ema' or 'raw'")
    if weights == "ema" and not state["ema"]:
        raise InputError("the checkpoint has no weight average (it was trained with train.ema 0); export 'raw'")
    networks = state["ema"] if weights == "ema" else state
    model = MCNet(MCNetConfig.from_json(state["model_config"]))
    model.kp_detector.load_state_dict(networks["kp_detector"])
    model.generator.load_state_dict(networks["generator"])
    return model.eval(), weights


def export_model(state: dict, output: str | Path, weights: str | None = None) -> Path:
    """Write a training state's model as our safetensors (`.safetensors`) or the official layout (`.pth.tar`),
    both readable by `mcnet_rt.load` and `mcnet-rt animate`; the file records which weights it holds."""
    model, weights = model_from_state(state, weights)
    decay = yaml.safe_load(state["config"])["train"].get("ema", 0)
    label = f"ema (decay {decay})" if weights == "ema" else "raw (last step, no weight average)"
    notes = {"weights": label, "step": str(state["step"])}
    output = Path(output)
    if output.suffix == ".safetensors":
        checkpoint.save(model, output, notes)
    elif output.name.endswith((".pth.tar", ".pth", ".pt")):
        checkpoint.save_official(model, output, extra={"epoch": state["epoch"], **notes})
    else:
        raise InputError(f"{output}: unknown export format; use .safetensors (ours) or .pth.tar (official layout)")
    return output


def export(train_checkpoint: str | Path, output: str | Path, weights: str | None = None) -> Path:
    """export_model of a training checkpoint file."""
    return export_model(load(train_checkpoint), output, weights)
