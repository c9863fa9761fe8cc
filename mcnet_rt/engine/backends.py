"""Backends behind one switch: each gives an object with the `FrameStep` interface (`keypoints`, `render`,
`__call__`), so live smoothing between the halves works with every one of them. One module per backend, each with
`load(step, work_dir)`; the exported ones share `exported.ExportedStep`:

- eager: the `FrameStep` itself;
- compiled: `torch.compile` of each half (CUDA graphs on a GPU; `engine.compiled`);
- aoti: AOTInductor packages (.pt2) of each half, loaded back (`engine.aoti`);
- onnxruntime: the standard ONNX graphs on ONNX Runtime (`engine.onnxruntime`);
- tensorrt: engines built from the plugin graphs (`engine.tensorrt`).
Every exported backend takes any batch; all its inputs have the driving batch (`exported.batched`).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import InputError
from ..pipeline.step import FrameStep

BACKENDS = ("eager", "compiled", "aoti", "onnxruntime", "tensorrt")


def load_backend(name: str, step: FrameStep, work_dir: Path | None = None):
    """The step behind backend `name`; exported backends build their graphs into `work_dir`, or by default into
    the engine cache (`engine.cache`), where the next run with the same model and settings finds them. A backend's
    module is imported only when it is chosen."""
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}", options=("backend",))
    if name == "eager":
        return step
    return importlib.import_module(f".{name}", __package__).load(step, work_dir)
