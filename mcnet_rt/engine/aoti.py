"""The `aoti` backend: `torch.export` -> AOTInductor packages (.pt2) of each half, loaded back. A fresh process
loads them without the model code; a package whose graph holds `mcnet_rt` kernels needs the ops library `_ops.so`
loaded first."""
from __future__ import annotations

from pathlib import Path

import torch

from ..pipeline.step import FrameStep
from . import cache, halves
from .exported import ExportedStep


def packages(step: FrameStep, output_dir: Path, wrapper_opt_level: str = "O1") -> dict[str, Path]:
    """AOTInductor packages keypoints.pt2 and render.pt2 of the step, for any batch, at the step's precision (the
    step's autocast and float32 regions are exported with it). The wrapper (the C++ that calls the kernels) is
    compiled at `wrapper_opt_level`: "O0" saves about a minute of the small preset's build on 2 cores (355 s
    instead of 420 s in the test; inductor's own Python work is most of the rest)."""
    paths = {}
    with torch.no_grad():
        for half in halves.traced(step):
            inputs = tuple(t.detach().clone() for t in half.inputs)
            program = torch.export.export(half.module, inputs, dynamic_shapes=halves.dynamic_batch(inputs))
            paths[half.name] = Path(torch._inductor.aoti_compile_and_package(
                program, package_path=str(output_dir / f"{half.name}.pt2"),
                inductor_configs={"aot_inductor.compile_wrapper_opt_level": wrapper_opt_level}))
    return paths


def load(step: FrameStep, work_dir: Path | None = None) -> ExportedStep:
    """The step's packages, built into `work_dir`, or found in (or else built into) the engine cache."""
    paths = cache.halves_files(step, "aoti", packages, work_dir)
    loaded = {name: torch._inductor.aoti_load_package(str(path)) for name, path in paths.items()}
    return ExportedStep(loaded["keypoints"], loaded["render"], step.device)
