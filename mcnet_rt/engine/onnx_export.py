"""`mcnet-rt export`: ONNX graphs of the per-frame step's two halves, `detect.onnx` and `render.onnx`.

Two flavours: "standard" (ops run as their PyTorch references: GridSample, Conv with run-time weights,
MatMul/Softmax — any ONNX runtime) and "plugin" (ops run as the `mcnet_rt` kernels: one custom-domain node per
public op, for TensorRT with our plugins). Both take any batch: every input shares one dynamic batch dimension
(see `halves.batched`); the references' per-sample convolutions take a symbolic batch (`ops.modulated_conv`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..ops import use_impl
from ..pipeline import FrameStep
from . import halves, plugin_ops

FLAVOURS = ("standard", "plugin")
OPSET = 18  # GridSample is safe in TensorRT at opsets 16-18 (reported wrong at 20)
TRACE_BATCH = 2  # traced with a batch of 2: torch.export would specialise a batch of 1 as a constant


def _export(module: torch.nn.Module, inputs: tuple, names: tuple[str, ...], outputs: tuple[str, ...], path: Path,
            flavour: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = tuple({0: batch} for _ in inputs)
    table = plugin_ops.translation_table() if flavour == "plugin" else None
    with contextlib.redirect_stdout(None):  # the exporter prints its progress
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET, input_names=list(names),
                                    output_names=list(outputs), dynamic_shapes=(shapes,) if len(inputs) > 1 else shapes,
                                    custom_translation_table=table, optimize=True, verbose=False)
    program.save(str(path))


def export_step(step: FrameStep, output_dir: Path, flavour: str = "standard") -> dict[str, Path]:
    """Write detect.onnx and render.onnx for `step` into `output_dir` and check them with onnx.checker."""
    import onnx

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, not {flavour!r}")
    output_dir.mkdir(parents=True, exist_ok=True)
    detect_inputs, render_inputs = halves.example_inputs(step, TRACE_BATCH)
    paths = {"detect": output_dir / "detect.onnx", "render": output_dir / "render.onnx"}
    with torch.no_grad(), use_impl("kernel" if flavour == "plugin" else "reference"):
        _export(halves.Detect(step), detect_inputs, halves.DETECT_INPUTS, halves.KEYPOINTS, paths["detect"], flavour)
        _export(halves.Render(step), render_inputs, halves.render_inputs(step), ("prediction",), paths["render"],
                flavour)
    for path in paths.values():
        onnx.checker.check_model(str(path), full_check=flavour == "standard")
    return paths
