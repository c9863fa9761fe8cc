"""`mcnet-rt doctor`: what this machine gives mcnet_rt on one screen (GPU, torch, kernels, TensorRT, ONNX Runtime,
MediaPipe, PyAV, the virtual camera), each missing piece with the one command that fixes it.

Three steps, so that tests can play any machine: `gather(probes)` asks the machine (every answer comes from a
`Probes` method, which tests replace), `checks(facts)` judges the answers, `render(checks)` prints them. Optional
packages are looked up lazily and reported as missing, never imported at module load.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .nvidia_smi import MIN_DRIVER, Gpu, query_gpus

REQUIREMENTS = "pip install -r requirements.txt"
NODEPS = "pip install --no-deps -r requirements-nodeps.txt"


@dataclass
class Facts:
    gpus: list[Gpu]
    torch_version: str
    torch_cuda: str | None  # CUDA version torch was built with; None for a CPU build
    torch_gpu: str | None  # the GPU torch sees (name), None when it sees none
    kernels: dict  # mcnet_rt.ops.dispatch.report: the kernels' architectures, what impl=auto runs and why
    tensorrt: dict[str, str | None]  # "tensorrt", "tensorrt_rtx" -> version, None when not importable
    rtx_targets: tuple[str, ...]  # what TensorRT for RTX runs on ("SM89", ...)
    onnxruntime: str | None
    onnxruntime_providers: list[str]
    packages: dict[str, str | None]  # distribution -> version (None: missing)
    virtual_camera: str | None  # the backend found ("v4l2loopback: /dev/video4"), None when there is none
    virtual_camera_fix: str
    platform: str = sys.platform


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None  # the one command (or step) that fixes a missing piece
    notes: list[str] = field(default_factory=list)


class Probes:
    """The real answers. Each method asks one thing and does not raise for a missing package."""

    def gpus(self) -> list[Gpu]:
        return query_gpus()

    def torch(self) -> tuple[str, str | None, str | None]:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        return torch.__version__, torch.version.cuda, gpu

    def kernels(self) -> dict:
        import torch

        from .ops import dispatch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return dispatch.report(device)

    def module_version(self, module: str) -> str | None:
        """A module's __version__ when it imports, else None."""
        try:
            return getattr(importlib.import_module(module), "__version__", "unknown version")
        except Exception:  # noqa: BLE001  (a broken install is as missing as an absent one)
            return None

    def tensorrt(self) -> tuple[dict[str, str | None], tuple[str, ...]]:
        from .engine import tensorrt

        return {name: self.module_version(name) for name in tensorrt.MODULES}, tensorrt.RTX_TARGETS

    def onnxruntime_providers(self) -> list[str]:
        try:
            import onnxruntime
        except ImportError:
            return []
        return list(onnxruntime.get_available_providers())

    def distribution(self, name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def virtual_camera(self, platform: str) -> tuple[str | None, str]:
        """The virtual camera backend pyvirtualcam would use here, and the step that installs it."""
        try:
            from .io.sinks import _BACKEND_HELP
            fix = _BACKEND_HELP.get(platform, "a pyvirtualcam backend")
        except ImportError as error:
            fix = f"see mcnet_rt/io/sinks.py (it cannot be imported here: {error})"
        if platform != "linux":
            return "not checked on this platform", fix
        if not Path("/sys/module/v4l2loopback").exists():
            return None, fix
        devices = sorted(Path("/sys/devices/virtual/video4linux").glob("video*"))
        return "v4l2loopback: " + (", ".join(f"/dev/{d.name}" for d in devices) or "loaded, no device"), fix


def gather(probes: Probes | None = None) -> Facts:
    probes = probes or Probes()
    torch_version, torch_cuda, torch_gpu = probes.torch()
    tensorrt, rtx_targets = probes.tensorrt()
    virtual_camera, virtual_camera_fix = probes.virtual_camera(sys.platform)
    return Facts(
        gpus=probes.gpus(), torch_version=torch_version, torch_cuda=torch_cuda, torch_gpu=torch_gpu,
        kernels=probes.kernels(), tensorrt=tensorrt, rtx_targets=rtx_targets,
        onnxruntime=probes.module_version("onnxruntime"), onnxruntime_providers=probes.onnxruntime_providers(),
        packages={name: probes.distribution(name) for name in ("mediapipe", "av", "pyvirtualcam")},
        virtual_camera=virtual_camera, virtual_camera_fix=virtual_camera_fix)


def gpu_check(facts: Facts) -> Check:
    if not facts.gpus:
        return Check("GPU", True, f"nvidia-smi finds none; torch sees {facts.torch_gpu}" if facts.torch_gpu else
                     "none found (nvidia-smi): everything runs on the CPU")
    detail = "; ".join(f"{g.name}, sm_{g.arch}, driver {g.driver}" for g in facts.gpus)
    old = [g for g in facts.gpus if g.driver_major < MIN_DRIVER]
    if old:
        return Check("GPU", False, f"{detail}: CUDA 13 needs driver {MIN_DRIVER} or newer",
                     f"update the NVIDIA driver to {MIN_DRIVER}+ (or CUDA 12: README, Installing on a GPU machine)")
    return Check("GPU", True, detail)


def torch_check(facts: Facts) -> Check:
    build = f"CUDA {facts.torch_cuda} build" if facts.torch_cuda else "CPU build"
    sees = f", sees {facts.torch_gpu}" if facts.torch_gpu else ", sees no GPU"
    detail = f"{facts.torch_version}, {build}{sees}"
    if facts.gpus and not facts.torch_gpu:
        fix = "make GPU=1" if not facts.torch_cuda else "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
        return Check("torch", False, detail, fix)
    return Check("torch", True, detail)


def kernels_check(facts: Facts) -> Check:
    compiled = facts.kernels.get("compiled")
    built = (f"{', '.join(compiled['sass'])} + PTX {compiled['ptx']}, CUDA {compiled['cuda_runtime']} runtime"
             if compiled else "no CUDA code")
    can_run = facts.kernels.get("cuda_kernels") == "can run"
    if can_run and facts.torch_gpu:
        return Check("kernels", True, f"{built}; impl=auto measures each op on first use and runs the kernel where "
                     "it agrees and is faster (mcnet-rt info --kernels)")
    reason = facts.kernels.get("cuda_kernels", "unknown")
    detail = f"{built}; impl=auto runs the PyTorch references: {reason}"
    gpu = bool(facts.gpus or facts.torch_gpu)
    return Check("kernels", not gpu, detail, "make GPU=1" if gpu else None)


def tensorrt_check(facts: Facts) -> Check:
    full, rtx = facts.tensorrt.get("tensorrt"), facts.tensorrt.get("tensorrt_rtx")
    found = ", ".join(text for text in (f"full TensorRT {full}" if full else "",
                                        f"TensorRT for RTX {rtx}" if rtx else "") if text) or "not installed"
    used = "tensorrt" if full else "tensorrt_rtx" if rtx else None
    detail = f"{found}; --backend tensorrt uses {used}" if used else found
    unserved = [g for g in facts.gpus if f"SM{g.arch}" not in facts.rtx_targets]
    if facts.gpus and not full and (unserved or not rtx):
        why = (f"; TensorRT for RTX cannot serve sm_{unserved[0].arch} (it runs on "
               f"{', '.join(facts.rtx_targets)})" if unserved and rtx else "")
        return Check("TensorRT", False, detail + why, "make tensorrt")
    notes = [] if facts.gpus or not rtx else [
        f"no GPU: TensorRT for RTX builds engines ahead of time for {', '.join(facts.rtx_targets)}, nothing runs "
        "them here; Hopper (sm_90) and data-centre Blackwell (sm_100) need full TensorRT"]
    return Check("TensorRT", used is not None, detail, None if used else REQUIREMENTS, notes)


def onnxruntime_check(facts: Facts) -> Check:
    if facts.onnxruntime is None:
        return Check("ONNX Runtime", False, "missing", REQUIREMENTS)
    detail = f"{facts.onnxruntime}, providers: {', '.join(facts.onnxruntime_providers) or 'none'}"
    if facts.gpus and "CUDAExecutionProvider" not in facts.onnxruntime_providers:
        return Check("ONNX Runtime", True, detail, notes=[
            f"CPU only; for its CUDA provider replace onnxruntime by onnxruntime-gpu=={facts.onnxruntime}"])
    return Check("ONNX Runtime", True, detail)


def package_check(facts: Facts, name: str, label: str, fix: str) -> Check:
    version = facts.packages.get(name)
    return Check(label, version is not None, version or "missing", None if version else fix)


def virtual_camera_check(facts: Facts) -> Check:
    version = facts.packages.get("pyvirtualcam")
    if version is None:
        return Check("virtual camera", False, "pyvirtualcam missing", REQUIREMENTS)
    if facts.virtual_camera is None:
        return Check("virtual camera", False, f"pyvirtualcam {version}, no backend", facts.virtual_camera_fix)
    return Check("virtual camera", True, f"pyvirtualcam {version}, {facts.virtual_camera}")


def checks(facts: Facts) -> list[Check]:
    return [gpu_check(facts), torch_check(facts), kernels_check(facts), tensorrt_check(facts),
            onnxruntime_check(facts), package_check(facts, "mediapipe", "MediaPipe", NODEPS),
            package_check(facts, "av", "PyAV", REQUIREMENTS), virtual_camera_check(facts)]


def render(results: list[Check], width: int = 112) -> str:
    name_width = max(len(c.name) for c in results)
    indent = " " * (8 + name_width + 2)
    lines = []
    for check in results:
        texts = [check.detail] + ([f"fix: {check.fix}"] if check.fix else []) + [f"note: {n}" for n in check.notes]
        for number, text in enumerate(texts):
            first = f"{'ok' if check.ok else 'MISSING':8s}{check.name:{name_width}s}  " if number == 0 else indent
            lines.append(textwrap.fill(text, width, initial_indent=first, subsequent_indent=indent))
    return "\n".join(lines)


def main(probes: Probes | None = None) -> None:
    print(render(checks(gather(probes))))
