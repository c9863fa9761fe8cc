"""Build of mcnet_rt, its native module `mcnet_rt._C` and its torch ops library `mcnet_rt/_ops.so`.

`_ops.so` registers the mcnet_rt torch ops (csrc/torch, PyTorch's stable ABI targeting torch 2.11) over torch-free
launchers: it links the CPU twins (csrc/cpu, always built) and the CUDA kernels (csrc/kernels/*.cu, compiled with
nvcc when it is found: CUDA_HOME, /usr/local/cuda or PATH; CUDA_HOME may be the nvidia/cu13 tree of PyPI's nvcc,
requirements-cuda.txt), and loads into any process with torch >= 2.11
(`torch.ops.load_library`), without mcnet_rt's Python code. `_C` is a pybind11 module of build and machine facts:
it links only the bindings and, with nvcc, the CUDA runtime queries (kernels/runtime.cu). Both link the static
CUDA runtime, so they load on machines without a GPU or with a driver too old for it (the ops then fall back to
the references; see mcnet_rt/ops/dispatch.py). MCNET_RT_CUDA=0 builds CPU-only, MCNET_RT_CUDA=1 fails when nvcc is
missing. Flags live in csrc/build.json; MCNET_RT_CUDA_ARCHS="90 120" overrides its machine-code architectures.
Each object is compiled once, and rebuilt only when its source, headers or nvcc command change
(`python setup.py build_ext --inplace`).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext, naive_recompile
from setuptools import Extension, find_packages, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
import setup_env  # noqa: E402  (the one lookup of nvcc, shared with `make`'s GPU set-up)

CSRC = ROOT / "csrc"
FLAGS = setup_env.build_flags()
NATIVE_MODULE = "mcnet_rt._C"
OPS_LIBRARY = "mcnet_rt._ops"
# The CUDA runtime queries: all that _C takes of csrc/kernels (the kernels use them too).
CUDA_RUNTIME = CSRC / "kernels" / "runtime.cu"


def find_nvcc() -> Path | None:
    """nvcc, unless MCNET_RT_CUDA=0; MCNET_RT_CUDA=1 makes its absence an error."""
    wanted = os.environ.get("MCNET_RT_CUDA", "auto")
    if wanted == "0":
        return None
    nvcc = setup_env.toolkit_nvcc()
    if nvcc is None and wanted == "1":
        raise RuntimeError("MCNET_RT_CUDA=1 but nvcc was not found (set CUDA_HOME)")
    return nvcc


def cuda_runtime_library(nvcc: Path) -> Path:
    """The static CUDA runtime next to nvcc: lib64/ in a CUDA toolkit, lib/ in PyPI's nvidia/cu13 tree."""
    root = nvcc.parent.parent
    return next((p for p in (root / "lib64" / "libcudart_static.a", root / "lib" / "libcudart_static.a")
                 if p.is_file()), root / "lib64" / "libcudart_static.a")


def relative(paths) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths)


class BuildWithCuda(build_ext):
    """Compiles csrc/kernels/*.cu with nvcc (in parallel, only when stale) and links each library the ones it uses:
    `_C` the runtime queries, `_ops.so` every kernel."""

    def get_ext_filename(self, fullname):
        """The ops library is a plain shared library (no Python module): mcnet_rt/_ops.so."""
        if fullname in (OPS_LIBRARY, OPS_LIBRARY.rpartition(".")[2]):  # distutils asks with either name
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        nvcc = find_nvcc()
        if nvcc is not None:
            sources = [CUDA_RUNTIME] if ext.name == NATIVE_MODULE else sorted((CSRC / "kernels").glob("*.cu"))
            ext.extra_objects = [*ext.extra_objects, *self.compile_cuda(nvcc, sources)]
            ext.define_macros = [*ext.define_macros, ("MCNET_RT_WITH_CUDA", "1")]
            ext.extra_link_args = [*ext.extra_link_args, str(cuda_runtime_library(nvcc)), "-ldl", "-lrt",
                                   "-lpthread"]
        super().build_extension(ext)

    def compile_cuda(self, nvcc: Path, sources: list[Path]) -> list[str]:
        """The objects of `sources`; an object already compiled with the same command (for the other library) is
        reused."""
        headers = [*CSRC.rglob("*.h"), *CSRC.rglob("*.cuh")]
        newest_header = max((h.stat().st_mtime for h in headers), default=0.0)
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        archs = setup_env.nvcc_arch_flags(os.environ)

        def compile_one(source: Path) -> str:
            obj = out_dir / (source.stem + ".o")
            command = [str(nvcc), f"-std=c++{FLAGS['cxx_standard']}", *FLAGS["cuda_flags"], *archs,
                       "-Xcompiler=-fPIC", f"-I{CSRC / 'include'}", "-c", str(source), "-o", str(obj)]
            recorded = obj.with_suffix(".cmd")
            if (obj.exists() and obj.stat().st_mtime >= max(source.stat().st_mtime, newest_header)
                    and recorded.exists() and recorded.read_text() == " ".join(command)):
                return str(obj)
            print(" ".join(command), flush=True)
            subprocess.run(command, check=True)
            recorded.write_text(" ".join(command))
            return str(obj)

        jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(compile_one, sources))


def native_extension() -> Pybind11Extension:
    return Pybind11Extension(
        NATIVE_MODULE,
        relative((CSRC / "bindings").glob("*.cpp")),
        include_dirs=[str(CSRC / "include")],
        depends=relative([*CSRC.rglob("*.h")]),
        cxx_std=FLAGS["cxx_standard"],
        extra_compile_args=FLAGS["cxx_flags"],
        extra_link_args=FLAGS["link_flags"],
    )


def torch_dir() -> Path:
    """The installed torch package (its include/ and lib/), found without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise RuntimeError("building mcnet_rt/_ops.so needs torch installed (pip install torch)")
    return Path(spec.origin).parent


def ops_extension() -> Extension:
    torch = torch_dir()
    return Extension(
        OPS_LIBRARY,
        relative([*(CSRC / "cpu").glob("*.cpp"), *(CSRC / "torch").glob("*.cpp")]),
        include_dirs=[str(CSRC / "include"), str(torch / "include")],
        library_dirs=[str(torch / "lib")],
        libraries=["torch_cpu", "c10", "dl"],
        define_macros=[("TORCH_TARGET_VERSION", FLAGS["torch_target_version"])],
        depends=relative([*CSRC.rglob("*.h")]),
        extra_compile_args=[f"-std=c++{FLAGS['cxx_standard']}", *FLAGS["cxx_flags"]],
        extra_link_args=FLAGS["link_flags"],
        language="c++",
    )


ParallelCompile("MAX_JOBS", needs_recompile=naive_recompile).install()

setup(
    name="mcnet_rt",
    version=re.search(r'__version__ = "(.+)"', (ROOT / "mcnet_rt" / "__init__.py").read_text())[1],
    description="Real-time MCNet talking-head engine",
    packages=find_packages(include=["mcnet_rt", "mcnet_rt.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "av", "pillow", "safetensors", "PyYAML", "tqdm"],
    ext_modules=[native_extension(), ops_extension()],
    cmdclass={"build_ext": BuildWithCuda},
    entry_points={"console_scripts": ["mcnet-rt=mcnet_rt.cli:main"]},
)
