"""What `make` installs on this machine and how it builds the kernels: the one place where the GPU set-up is decided.

    plan      GPU found by nvidia-smi (or GPU=0/1) -> the plan file: CPU or CUDA 13 torch, the GPUs' architectures,
              whether nvcc comes from PyPI. Stops with one message when the driver is too old for CUDA 13.
    install   the plan's torch build (before requirements.txt, whose torch pin is then already met) and PyPI's nvcc.
    tensorrt  full TensorRT (requirements-tensorrt.txt), on a CUDA plan only.
    build-env the environment of the kernels' build (`env $(... build-env) setup.py build_ext`).

Standard library only: it runs before the virtual environment has anything in it. `--dry-run` prints the pip
commands instead of running them.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_FLAGS = ROOT / "csrc" / "build.json"


def _load_nvidia_smi():
    """mcnet_rt/nvidia_smi.py by its path: importing the package would import torch, which is not installed yet."""
    spec = importlib.util.spec_from_file_location("mcnet_rt_nvidia_smi", ROOT / "mcnet_rt" / "nvidia_smi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


nvidia_smi = _load_nvidia_smi()
Gpu, MIN_DRIVER, query_gpus = nvidia_smi.Gpu, nvidia_smi.MIN_DRIVER, nvidia_smi.query_gpus
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA12_INDEX = "https://download.pytorch.org/whl/cu128"
PROBE_SECONDS = 5.0
# nvcc's tree in PyPI's CUDA 13 wheels (requirements-cuda.txt), under site-packages.
PYPI_CUDA = Path("nvidia") / "cu13"


class SetupError(Exception):
    """A machine the set-up cannot serve as asked: the message says what was found and what to do."""


@dataclass
class Plan:
    torch: str  # "cpu" or "cuda"
    gpus: list[dict] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)  # machine code for these only; empty: csrc/build.json's list
    pypi_nvcc: bool = False
    notes: list[str] = field(default_factory=list)


def toolkit_nvcc(environ: dict | None = None) -> Path | None:
    """A CUDA toolkit's nvcc: $CUDA_HOME/bin, /usr/local/cuda/bin, then PATH (setup.py builds with this one)."""
    environ = os.environ if environ is None else environ
    candidates = [Path(environ["CUDA_HOME"]) / "bin" / "nvcc"] if environ.get("CUDA_HOME") else []
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    on_path = shutil.which("nvcc", path=environ.get("PATH"))
    candidates += [Path(on_path)] if on_path else []
    return next((nvcc for nvcc in candidates if nvcc.is_file()), None)


def old_driver_message(gpu: Gpu) -> str:
    return (f"NVIDIA driver {gpu.driver} found ({gpu.name}); the GPU set-up installs PyPI's CUDA 13 build of torch, "
            f"which needs driver {MIN_DRIVER} or newer. Update the driver, or stay on CUDA 12 with PyTorch's CUDA 12 "
            f"wheels and a CUDA 12 toolkit: python3 -m venv .venv && .venv/bin/pip install {torch_pin()} "
            f"--index-url {CUDA12_INDEX}, then CUDA_HOME=/usr/local/cuda-12.x make GPU=1 (README: Installing on a "
            f"GPU machine). GPU=0 installs the CPU build instead.")


def decide(gpu: str, gpus: list[Gpu], toolkit: Path | None) -> Plan:
    """The plan for GPU=`gpu` ("auto", "0", "1") on a machine with `gpus` and a CUDA `toolkit` nvcc (or none)."""
    if gpu not in ("auto", "0", "1"):
        raise SetupError(f"GPU must be auto, 0 or 1, not {gpu!r}")
    if gpu == "0" or (gpu == "auto" and not gpus):
        return Plan("cpu", notes=["GPU=0" if gpu == "0" else "no NVIDIA GPU found (nvidia-smi)"])
    old = [g for g in gpus if g.driver_major < MIN_DRIVER]
    if old and gpu == "auto":
        raise SetupError(old_driver_message(old[0]))
    plan = Plan("cuda", gpus=[asdict(g) for g in gpus], archs=sorted({g.arch for g in gpus}, key=int),
                pypi_nvcc=toolkit is None)
    plan.notes.append(", ".join(f"{g.name} (sm_{g.arch}, driver {g.driver})" for g in gpus) if gpus else
                      "GPU=1 without a GPU in sight: kernels for every architecture of csrc/build.json")
    if old:
        plan.notes.append(f"GPU=1: installing CUDA 13 although driver {old[0].driver} is older than {MIN_DRIVER}")
    plan.notes.append(f"nvcc: {toolkit}" if toolkit else "nvcc: PyPI's (no CUDA toolkit found)")
    return plan


def torch_pin() -> str:
    """requirements.txt's torch requirement (the one place that pins it)."""
    text = (ROOT / "requirements.txt").read_text()
    match = re.search(r"^torch==\S+", text, re.MULTILINE)
    if match is None:
        raise SetupError("requirements.txt has no torch==VERSION line")
    return match[0]


def index_reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a pip index answers for torch within `timeout` seconds (machines that reach PyPI only do not). Only
    the status is read, not the page."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", *args]


def installed_torch() -> str | None:
    """The version of the torch installed for this interpreter ("2.13.0+cpu" for a CPU build), without importing
    it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_commands(plan: Plan, cpu_index: str, installed: str | None) -> tuple[list[list[str]], list[str]]:
    """The pip commands for the plan's torch (and nvcc), and notes on the choices made. An installed torch of the
    pinned version but the other build is removed first: pip takes it as meeting the pin (local versions such as
    +cpu do not count)."""
    pin = torch_pin()
    is_cpu_build = installed is not None and installed.endswith("+cpu")
    uninstall = [sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "torch"]
    if plan.torch == "cuda":
        commands = [*([uninstall] if is_cpu_build else []), pip(pin)]
        if plan.pypi_nvcc:
            commands.append(pip("-r", str(ROOT / "requirements-cuda.txt")))
        return commands, [f"{pin}: PyPI's CUDA 13 build"]
    if cpu_index and index_reachable(cpu_index):
        swap = [uninstall] if installed is not None and not is_cpu_build else []
        return [*swap, pip("--extra-index-url", cpu_index, pin)], [f"{pin}: CPU build from {cpu_index}"]
    return [pip(pin)], [f"{pin}: {cpu_index or 'no CPU index given'} not reachable, so the configured index's "
                        f"build (a CPU build only where that index has one)"]


def tensorrt_commands(plan: Plan) -> list[list[str]]:
    if plan.torch != "cuda":
        raise SetupError("full TensorRT (TENSORRT=1, make tensorrt) builds and runs engines on an NVIDIA GPU only, "
                         "and this is a CPU set-up; TensorRT for RTX (requirements.txt) already builds engines "
                         "without a GPU. On a GPU machine: make tensorrt (GPU=1 if nvidia-smi is missing)")
    return [pip("-r", str(ROOT / "requirements-tensorrt.txt"))]


def build_flags() -> dict:
    """csrc/build.json: the one home of the build's flags and architectures (setup.py reads it here too)."""
    return json.loads(BUILD_FLAGS.read_text())


def sass_archs(environ: dict) -> list[str]:
    """The architectures that get machine code: MCNET_RT_CUDA_ARCHS ("90 120" or "90,120"), else build.json's."""
    return environ.get("MCNET_RT_CUDA_ARCHS", "").replace(",", " ").split() or build_flags()["cuda_archs"]


def nvcc_arch_flags(environ: dict) -> list[str]:
    """nvcc's -gencode options: machine code for `sass_archs(environ)` and build.json's PTX, and the macros by
    which _C reports both to the dispatch."""
    sass, ptx = sass_archs(environ), build_flags()["ptx_arch"]
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in sass]
    gencodes.append(f"-gencode=arch=compute_{ptx},code=compute_{ptx}")
    # nvcc splits option values at unescaped commas.
    return [*gencodes, "-DMCNET_RT_SASS_ARCHS=" + "\\,".join(sass), f"-DMCNET_RT_PTX_ARCH={ptx}"]


def build_env(plan: Plan) -> list[str]:
    """Variables for setup.py: a CUDA plan must build its kernels (MCNET_RT_CUDA=1), for the GPUs found only, with
    PyPI's nvcc when there is no toolkit. A CPU plan has no GPU to run kernels on: where setup.py finds nvcc it
    still compiles every kernel, as a check, but for one architecture (build.json's PTX one, machine code and PTX
    from one pass) instead of every GPU generation."""
    if plan.torch != "cuda":
        return [f"MCNET_RT_CUDA_ARCHS={build_flags()['ptx_arch']}"]
    env = ["MCNET_RT_CUDA=1"]
    if plan.archs:
        env.append("MCNET_RT_CUDA_ARCHS=" + ",".join(plan.archs))
    if plan.pypi_nvcc:
        env.append(f"CUDA_HOME={Path(sysconfig.get_paths()['purelib']) / PYPI_CUDA}")
    return env


def write_plan(plan: Plan, path: Path) -> None:
    """Rewritten only when the decision changes, so that `make` reinstalls only then."""
    text = json.dumps(asdict(plan), indent=1) + "\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def read_plan(path: Path) -> Plan:
    return Plan(**json.loads(path.read_text()))


def run(commands: list[list[str]], dry_run: bool) -> None:
    for command in commands:
        print(" ".join(command) if dry_run else "+ " + " ".join(command[2:]), flush=True)
        if not dry_run:
            subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="decide from nvidia-smi and GPU=, write the plan file")
    p.add_argument("--gpu", default="auto", help="auto (nvidia-smi decides), 1 (CUDA 13) or 0 (CPU)")
    p.add_argument("--nvidia-smi", default="nvidia-smi")
    for name, help_text in (("install", "install the plan's torch build (and PyPI's nvcc)"),
                            ("tensorrt", "install full TensorRT (CUDA plans only)"),
                            ("build-env", "print the kernels' build environment")):
        sub.add_parser(name, help=help_text)
    for name, command in sub.choices.items():
        command.add_argument("--plan", type=Path, required=True, help="the plan file")
        if name in ("install", "tensorrt"):
            command.add_argument("--dry-run", action="store_true", help="print the pip commands, run nothing")
    sub.choices["install"].add_argument("--cpu-index", default=CPU_INDEX,
                                        help="PyTorch's CPU wheel index; used when it answers, else the configured "
                                             "index's torch (empty: never)")
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            plan = decide(args.gpu, query_gpus(args.nvidia_smi), toolkit_nvcc())
            write_plan(plan, args.plan)
            print(f"set-up: {plan.torch} torch; " + "; ".join(plan.notes))
        elif args.command == "install":
            commands, notes = install_commands(read_plan(args.plan), args.cpu_index, installed_torch())
            print("\n".join(notes))
            run(commands, args.dry_run)
        elif args.command == "tensorrt":
            run(tensorrt_commands(read_plan(args.plan)), args.dry_run)
        else:
            print(" ".join(build_env(read_plan(args.plan))))
    except SetupError as error:
        print(f"setup_env: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
