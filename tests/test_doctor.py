"""`mcnet-rt doctor`: the checks judged on faked machines (GPUs, drivers and packages this machine does not have),
and one real run here."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mcnet_rt import doctor
from mcnet_rt.nvidia_smi import Gpu, query_gpus

H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", "580.65.06")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "590.12")
OLD_A100 = Gpu("NVIDIA A100-SXM4-40GB", "8.0", "550.54.15")
BUILT = {"sass": ["sm_90"], "ptx": "compute_90", "cuda_runtime": "13.0", "build_hash": "0"}
RTX_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120")
V4L2_HELP = "the v4l2loopback kernel module (sudo modprobe v4l2loopback)"


class FakeProbes(doctor.Probes):
    """A machine described by its answers; the defaults are a CPU machine with everything installed."""

    def __init__(self, gpus=(), torch=("2.13.0+cpu", None, None), kernels=None, tensorrt=None, onnxruntime="1.24.4",
                 providers=("CPUExecutionProvider",), packages=None, camera="v4l2loopback: /dev/video4"):
        self.answers = dict(
            gpus=list(gpus), torch=torch, providers=list(providers), onnxruntime=onnxruntime, camera=camera,
            kernels=kernels or {"compiled": BUILT, "cuda_kernels": "no NVIDIA driver answers mcnet_rt's CUDA runtime"},
            tensorrt=tensorrt or {"tensorrt": None, "tensorrt_rtx": "1.7.1.116"},
            packages={"mediapipe": "0.10.21", "av": "18.1.0", "pyvirtualcam": "0.14.0", **(packages or {})})

    def gpus(self):
        return self.answers["gpus"]

    def torch(self):
        return self.answers["torch"]

    def kernels(self):
        return self.answers["kernels"]

    def module_version(self, module):
        assert module == "onnxruntime"
        return self.answers["onnxruntime"]

    def tensorrt(self):
        return self.answers["tensorrt"], RTX_TARGETS

    def onnxruntime_providers(self):
        return self.answers["providers"]

    def distribution(self, name):
        return self.answers["packages"][name]

    def virtual_camera(self, platform):
        return self.answers["camera"], V4L2_HELP


def judged(**answers) -> dict[str, doctor.Check]:
    return {check.name: check for check in doctor.checks(doctor.gather(FakeProbes(**answers)))}


def test_cpu_machine_with_everything_installed_needs_nothing():
    results = judged()
    assert all(check.ok and check.fix is None for check in results.values())
    assert "none found" in results["GPU"].detail and "CPU build" in results["torch"].detail
    assert "--backend tensorrt uses tensorrt_rtx" in results["TensorRT"].detail
    assert "sm_90" in results["TensorRT"].notes[0] and "sm_100" in results["TensorRT"].notes[0]
    assert "impl=auto runs the PyTorch references" in results["kernels"].detail


def test_gpu_with_the_cpu_torch_is_told_make_gpu_1_and_make_tensorrt_for_hopper():
    results = judged(gpus=[H100])
    assert results["GPU"].ok and "sm_90, driver 580.65.06" in results["GPU"].detail
    assert not results["torch"].ok and results["torch"].fix == "make GPU=1"
    assert not results["kernels"].ok and results["kernels"].fix == "make GPU=1"
    assert not results["TensorRT"].ok and results["TensorRT"].fix == "make tensorrt"
    assert "TensorRT for RTX cannot serve sm_90" in results["TensorRT"].detail
    assert "onnxruntime-gpu==1.24.4" in results["ONNX Runtime"].notes[0]


def test_gpu_set_up_complete():
    results = judged(gpus=[H100], torch=("2.13.0", "13.0", H100.name),
                     kernels={"compiled": BUILT, "cuda_kernels": "can run"},
                     tensorrt={"tensorrt": "11.4.0.106", "tensorrt_rtx": "1.7.1.116"},
                     providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert all(check.ok and check.fix is None for check in results.values())
    assert "CUDA 13.0 build, sees NVIDIA H100" in results["torch"].detail
    assert "sm_90 + PTX compute_90" in results["kernels"].detail and "measures" in results["kernels"].detail
    assert "full TensorRT 11.4.0.106" in results["TensorRT"].detail
    assert results["TensorRT"].detail.endswith("--backend tensorrt uses tensorrt")


def test_rtx_gpu_is_served_by_tensorrt_for_rtx():
    results = judged(gpus=[RTX4090], torch=("2.13.0", "13.0", RTX4090.name),
                     kernels={"compiled": BUILT, "cuda_kernels": "can run"})
    assert results["TensorRT"].ok and "uses tensorrt_rtx" in results["TensorRT"].detail


def test_kernels_without_code_for_the_gpu_say_why_and_how():
    reason = "mcnet_rt's kernels have no code for NVIDIA GeForce RTX 4090 (sm_89): ..."
    results = judged(gpus=[RTX4090], torch=("2.13.0", "13.0", RTX4090.name),
                     kernels={"compiled": None, "cuda_kernels": reason})
    assert not results["kernels"].ok and results["kernels"].fix == "make GPU=1"
    assert results["kernels"].detail.startswith("no CUDA code") and reason in results["kernels"].detail


def test_gpu_that_only_torch_sees_counts_as_a_gpu():
    results = judged(torch=("2.13.0", "13.0", H100.name), kernels={"compiled": None, "cuda_kernels": "no code"})
    assert results["GPU"].ok and "torch sees NVIDIA H100" in results["GPU"].detail
    assert not results["kernels"].ok and results["kernels"].fix == "make GPU=1"


def test_old_driver_is_named_with_the_minimum():
    result = judged(gpus=[OLD_A100])["GPU"]
    assert not result.ok and "driver 550.54.15" in result.detail and "580" in result.detail
    assert "580" in result.fix


@pytest.mark.parametrize("missing,name,fix", [
    ({"packages": {"mediapipe": None}}, "MediaPipe", doctor.NODEPS),
    ({"packages": {"av": None}}, "PyAV", doctor.REQUIREMENTS),
    ({"packages": {"pyvirtualcam": None}}, "virtual camera", doctor.REQUIREMENTS),
    ({"camera": None}, "virtual camera", V4L2_HELP),
    ({"onnxruntime": None, "providers": ()}, "ONNX Runtime", doctor.REQUIREMENTS),
    ({"tensorrt": {"tensorrt": None, "tensorrt_rtx": None}}, "TensorRT", doctor.REQUIREMENTS),
])
def test_each_missing_piece_comes_with_its_fix(missing, name, fix):
    results = judged(**missing)
    assert not results[name].ok and results[name].fix == fix
    assert [n for n, check in results.items() if not check.ok] == [name]
    rendered = doctor.render(list(results.values()))
    assert f"MISSING {name}" in rendered and "fix: " in rendered


def test_real_probes_report_missing_packages_instead_of_failing(monkeypatch):
    probes = doctor.Probes()
    assert probes.distribution("mcnet-rt-no-such-distribution") is None
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    assert probes.module_version("onnxruntime") is None and probes.onnxruntime_providers() == []
    monkeypatch.setitem(sys.modules, "mcnet_rt.io.sinks", None)
    _, fix = probes.virtual_camera("linux")
    assert "cannot be imported" in fix


def test_doctor_runs_here():
    done = subprocess.run([sys.executable, "-m", "mcnet_rt", "doctor"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] in ("ok", "MISSING") for line in lines] == [True] * 8
    for name in ("GPU", "torch", "kernels", "TensorRT", "ONNX Runtime", "MediaPipe", "PyAV", "virtual camera"):
        assert any(name in line for line in lines)
    gpu_line = next(line for line in lines if "GPU" in line)
    assert ("none found" in gpu_line) == (not query_gpus())
