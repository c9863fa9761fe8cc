"""The native module's build: every .cu compiled by nvcc where it exists, importable without a GPU, and the
CMake build of the same sources with its C++ tests of the CPU twins."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcnet_rt.ops import _native, dispatch

ROOT = Path(__file__).resolve().parent.parent
NVCC = Path("/usr/local/cuda/bin/nvcc")
sys.path.insert(0, str(ROOT / "tools"))
import setup_env  # noqa: E402


def test_native_module_builds_cuda_kernels_when_nvcc_exists():
    module = _native.native()
    assert module is not None, "mcnet_rt._C is not built: run `make` or `python setup.py build_ext --inplace`"
    assert module.with_cuda == NVCC.is_file()
    if module.with_cuda and not torch.cuda.is_available():
        # Statically linked runtime: the module imports and reports the missing driver instead of failing.
        assert module.cuda_device_count() <= 0
        assert module.cuda_driver_version() >= 0


@pytest.mark.skipif(not NVCC.is_file(), reason="no nvcc: _C has no CUDA code")
def test_native_module_reports_what_it_was_built_for():
    """The dispatch trusts these: the architectures `make` builds for on this machine (MCNET_RT_CUDA_ARCHS where
    set by hand) and the runtime of the nvcc found."""
    module = _native.native()
    plan = setup_env.decide("auto", setup_env.query_gpus(), setup_env.toolkit_nvcc())
    environ = {**dict(v.split("=", 1) for v in setup_env.build_env(plan)), **os.environ}
    assert module.cuda_archs == tuple(int(a) for a in setup_env.sass_archs(environ))
    assert module.ptx_arch == int(setup_env.build_flags()["ptx_arch"])
    release = subprocess.run([str(NVCC), "--version"], capture_output=True, text=True).stdout
    major, minor = module.cuda_runtime_version // 1000, module.cuda_runtime_version % 1000 // 10
    assert f"release {major}.{minor}," in release


def test_kernel_request_on_a_cuda_tensor_names_the_problem_without_a_device(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    features = torch.zeros(1, 1, 2, 2)
    assert "float16" in dispatch.missing_kernel(features.half())
    monkeypatch.setattr(_native, "_native", None)
    monkeypatch.setattr(_native, "_import_error", "No module named 'mcnet_rt._C'")
    assert "not built" in dispatch.missing_kernel(features)
    kernel = lambda x: 2 * x  # noqa: E731
    with pytest.raises(RuntimeError, match="not built"):
        dispatch.run("kernel", "warp_features", (features,), kernel, torch.neg)
    assert torch.equal(dispatch.run("auto", "warp_features", (features + 1,), kernel, torch.neg), -(features + 1))


@pytest.mark.slow  # a CMake build
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None, reason="needs cmake and ninja")
def test_cmake_build_and_cpp_tests(tmp_path):
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DPython_EXECUTABLE={sys.executable}",
                 "-DMCNET_RT_CPU_ONLY=ON"]
    for command in (configure, ["cmake", "--build", str(build), "-j2"], ["ctest", "--test-dir", str(build),
                                                                         "--output-on-failure"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(build.glob("_C*.so")), "the pybind11 module was not built by CMake"
    assert (build / "_ops.so").is_file(), "the torch ops library was not built by CMake"


def test_one_table_of_dtypes_and_limits_comes_from_the_native_module():
    """`_C.limits` (csrc/include/mcnet_rt/limits.h) is what the Python side reads: the kernels' dtypes per device,
    the launchers' DType numbering, the 32-bit element limit, and attention heads wide enough for the model's 512."""
    limits = _native.native().limits
    assert limits["dtype_codes"] == {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3}
    assert _native.kernel_dtypes("cpu") == (torch.float32, torch.float64)
    assert _native.kernel_dtypes("cuda") == (torch.float32, torch.float16, torch.bfloat16)
    assert limits["max_elements"] == 2 ** 31 - 1
    assert limits["max_attention_channels"] >= 512
