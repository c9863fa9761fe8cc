"""The `onnxruntime` backend: the standard ONNX graphs on ONNX Runtime (TensorRT/CUDA providers first where
installed)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..pipeline.step import FrameStep
from . import onnx_export
from .exported import ExportedStep


def providers() -> list[str]:
    import onnxruntime
    preferred = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in preferred if p in onnxruntime.get_available_providers()]


def _runner(session, device: torch.device):
    """A graph's session as a function of tensors."""
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor):
        feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
        outputs = [torch.from_numpy(o).to(device) for o in session.run(None, feed)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
    return run


def load_graphs(paths: dict[str, Path], device: torch.device) -> ExportedStep:
    """The step as ONNX Runtime sessions of the graphs at `paths` (keypoints and render)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning slows other work
    runners = {name: _runner(onnxruntime.InferenceSession(str(path), options, providers=providers()), device)
               for name, path in paths.items()}
    return ExportedStep(runners["keypoints"], runners["render"], device)


def load(step: FrameStep, work_dir: Path | None = None) -> ExportedStep:
    """The step's standard graphs, exported into `work_dir`, or found in (or else exported into) the engine cache."""
    return load_graphs(onnx_export.cached_graphs(step, "standard", work_dir), step.device)
