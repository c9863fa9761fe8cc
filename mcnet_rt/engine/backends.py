"""Backends behind one switch: each gives an object with the `FrameStep` interface (`detect`, `render`,
`__call__`), so live smoothing between the halves works with every one of them.

- eager: the `FrameStep` itself;
- compiled: `torch.compile` of each half (CUDA graphs on a GPU);
- aoti: `torch.export` -> AOTInductor packages (.pt2) of each half, loaded back (a fresh process loads them without
  the model code; a package whose graph holds `mcnet_rt` kernels needs the ops library `_ops.so` loaded first);
- onnxruntime: the standard ONNX graphs on ONNX Runtime (TensorRT/CUDA providers first where installed);
- tensorrt: engines built from the plugin graphs (`engine.tensorrt`).
Every exported backend takes any batch; all its inputs have the driving batch (`halves.batched`).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError
from ..keypoints import Keypoints
from ..pipeline.step import FrameStep
from . import cache, halves

BACKENDS = ("eager", "compiled", "aoti", "onnxruntime", "tensorrt")


class ExportedStep:
    """The step's interface over two callables that take and return flat tensors, every input at one batch."""

    inputs = staticmethod(FrameStep.inputs)

    def __init__(self, detect, render, device: torch.device):
        self._detect, self._render, self.device = detect, render, device

    @staticmethod
    def _run(function, inputs: tuple[torch.Tensor, ...]):
        """`function` with the sources shared by the batch (batch 1) repeated to the driving batch."""
        return function(*halves.batched(inputs, inputs[0].shape[0]))

    def keypoints(self, driving: torch.Tensor) -> Keypoints:
        return Keypoints(*self._run(self._detect, (driving,)))

    def render(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._run(self._render, inputs)

    def __call__(self, driving: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.render(*self.keypoints(driving), *inputs)


def compiled(step: FrameStep) -> FrameStep:
    """`torch.compile` of both halves, with CUDA graphs on a GPU (what mode "reduce-overhead" sets; torch.compile
    takes a mode or options, not both). Inductor's freezing treats the weights as constants (inference only: a
    later weight update is not seen): it folds the weight-only math (equalised-lr gains, modulation scales) and
    prepacks the CPU convolutions' weights once instead of on every call (small preset, CPU, one thread: 1.32x
    eager instead of 1.18x without it)."""
    device = next(step.model.parameters()).device
    options = {"freezing": True, "triton.cudagraphs": device.type == "cuda"}
    step.detect = torch.compile(step.detect, dynamic=False, options=options)
    step.render = torch.compile(step.render, dynamic=False, options=options)
    return step


def aoti_packages(step: FrameStep, output_dir: Path, wrapper_opt_level: str = "O1") -> dict[str, Path]:
    """AOTInductor packages detect.pt2 and render.pt2 of the step, for any batch, at the step's precision (the
    step's autocast and float32 regions are exported with it). The wrapper (the C++ that calls the kernels) is
    compiled at `wrapper_opt_level`: "O0" saves about a minute of the small preset's build on 2 cores (355 s
    instead of 420 s in the test; inductor's own Python work is most of the rest)."""
    detect_inputs, render_inputs = halves.example_inputs(step, halves.TRACE_BATCH)
    paths = {}
    with torch.no_grad():
        for name, module, inputs in (("detect", halves.Detect(step), detect_inputs),
                                     ("render", halves.Render(step), render_inputs)):
            inputs = tuple(t.detach().clone() for t in inputs)
            program = torch.export.export(module, inputs, dynamic_shapes=halves.dynamic_batch(inputs))
            paths[name] = Path(torch._inductor.aoti_compile_and_package(
                program, package_path=str(output_dir / f"{name}.pt2"),
                inductor_configs={"aot_inductor.compile_wrapper_opt_level": wrapper_opt_level}))
    return paths


def load_aoti(paths: dict[str, Path], device: torch.device) -> ExportedStep:
    detect = torch._inductor.aoti_load_package(str(paths["detect"]))
    render = torch._inductor.aoti_load_package(str(paths["render"]))
    return ExportedStep(detect, render, device)


def onnxruntime_providers() -> list[str]:
    import onnxruntime
    preferred = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in preferred if p in onnxruntime.get_available_providers()]


def load_onnxruntime(paths: dict[str, Path], device: torch.device) -> ExportedStep:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning slows other work
    sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=onnxruntime_providers())
                for name, path in paths.items()}

    def runner(session):
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: torch.Tensor):
            feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
            outputs = [torch.from_numpy(o).to(device) for o in session.run(None, feed)]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        return run

    return ExportedStep(runner(sessions["detect"]), runner(sessions["render"]), device)


def exported(step: FrameStep, kind: str, build: Callable[[FrameStep, Path], dict[str, Path]],
             work_dir: Path | None) -> dict[str, Path]:
    """The detect and render files `build(step, folder)` writes, in `work_dir`, or else in the engine cache under
    the step's key (built only on a miss)."""
    if work_dir is not None:
        return build(step, Path(work_dir))
    folder = cache.cached_folder(cache.step_key(step, kind), lambda tmp: build(step, tmp))
    return {name: next(folder.glob(f"{name}.*")) for name in ("detect", "render")}


def load_backend(name: str, step: FrameStep, work_dir: Path | None = None):
    """The step behind backend `name`; exported backends build their graphs into `work_dir`, or by default into
    the engine cache (`engine.cache`), where the next run with the same model and settings finds them."""
    if name not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "eager":
        return step
    if name == "compiled":
        return compiled(step)
    if name in ("onnxruntime", "tensorrt") and step.dtype == torch.bfloat16:
        raise InputError(f"--backend {name} runs fp32 or fp16 graphs, not bfloat16; use --precision fp32 or fp16, "
                         "or --backend eager/compiled/aoti")
    device = next(step.model.parameters()).device
    if name == "aoti":
        return load_aoti(exported(step, "aoti", aoti_packages, work_dir), device)
    from .onnx_export import export_step
    ops = "standard" if name == "onnxruntime" else "plugin"

    def graphs() -> dict[str, Path]:
        return exported(step, f"onnx-{ops}", lambda s, folder: export_step(s, folder, ops), work_dir)

    if name == "onnxruntime":
        return load_onnxruntime(graphs(), device)
    from . import tensorrt
    return tensorrt.load(graphs, device)

