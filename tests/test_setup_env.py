"""`make`'s GPU set-up (tools/setup_env.py): the decision from a fake nvidia-smi on PATH and the GPU=/TENSORRT=
overrides, checked through the pip commands its dry run prints; nothing is downloaded."""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "setup_env.py"
H100 = "NVIDIA H100 80GB HBM3, 9.0, 580.65.06"
RTX3090 = "NVIDIA GeForce RTX 3090, 8.6, 590.12"
OLD_DRIVER = "NVIDIA A100-SXM4-40GB, 8.0, 550.54.15"
NO_DRIVER = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."


@functools.cache
def setup_env():
    spec = importlib.util.spec_from_file_location("setup_env", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def fake_path(tmp_path: Path, *lines: str, status: int = 0) -> str:
    """A PATH whose nvidia-smi prints `lines` (the --query-gpu CSV) and exits with `status`; no lines and status 0:
    no nvidia-smi at all."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if lines or status:
        smi.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines) + f"exit {status}\n")
        smi.chmod(0o755)
    return str(folder)


def run_script(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "no_proxy": "*"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def plan(tmp_path: Path, *smi_lines: str, gpu: str = "auto", status: int = 0) -> dict:
    plan_file = tmp_path / "plan.json"
    done = run_script("plan", "--gpu", gpu, "--plan", str(plan_file),
                      path=fake_path(tmp_path, *smi_lines, status=status))
    assert done.returncode == 0, done.stderr
    return json.loads(plan_file.read_text())


def dry_run(tmp_path: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    return run_script(command, "--plan", str(tmp_path / "plan.json"), "--dry-run", *args)


def pip_lines(output: str) -> list[str]:
    return [line.removeprefix(f"{sys.executable} -m pip install --quiet ")
            for line in output.splitlines() if line.startswith(f"{sys.executable} -m pip install")]


def build_env(tmp_path: Path) -> list[str]:
    done = run_script("build-env", "--plan", str(tmp_path / "plan.json"))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_new_driver_installs_cuda_13_torch_and_builds_for_the_gpu_only(tmp_path):
    decided = plan(tmp_path, H100)
    assert decided["torch"] == "cuda" and decided["archs"] == ["90"]
    assert decided["pypi_nvcc"] == (setup_env().toolkit_nvcc({**os.environ, "PATH": fake_path(tmp_path)}) is None)
    output = dry_run(tmp_path, "install").stdout
    commands = pip_lines(output)
    assert commands[0] == "torch==2.13.0"  # PyPI's default build: CUDA 13
    assert ("pip uninstall --quiet --yes torch" in output) == setup_env().installed_torch().endswith("+cpu")
    assert commands[1:] == ([f"-r {ROOT / 'requirements-cuda.txt'}"] if decided["pypi_nvcc"] else [])
    assert build_env(tmp_path)[:2] == ["MCNET_RT_CUDA=1", "MCNET_RT_CUDA_ARCHS=90"]


def test_several_gpus_build_for_each_architecture(tmp_path):
    assert plan(tmp_path, RTX3090, H100, RTX3090)["archs"] == ["86", "90"]


def test_without_a_toolkit_nvcc_comes_from_pypi_and_the_build_uses_it():
    module = setup_env()
    gpus = [module.Gpu("NVIDIA H100", "9.0", "580.65.06")]
    with_pypi = module.decide("auto", gpus, toolkit=None)
    assert with_pypi.pypi_nvcc
    commands, _ = module.install_commands(with_pypi, cpu_index="", installed=None)
    assert commands[1][-2:] == ["-r", str(ROOT / "requirements-cuda.txt")]
    cuda_home = next(v for v in module.build_env(with_pypi) if v.startswith("CUDA_HOME="))
    assert cuda_home.endswith(os.path.join("site-packages", "nvidia", "cu13"))
    with_toolkit = module.decide("auto", gpus, toolkit=Path("/usr/local/cuda/bin/nvcc"))
    assert not with_toolkit.pypi_nvcc and len(module.install_commands(with_toolkit, cpu_index="", installed=None)[0]) == 1
    assert not any(v.startswith("CUDA_HOME=") for v in module.build_env(with_toolkit))


def test_a_torch_of_the_other_build_is_removed_first(monkeypatch):
    module = setup_env()
    uninstall = [sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "torch"]
    cuda, cpu = module.Plan("cuda"), module.Plan("cpu")
    assert module.install_commands(cuda, "", installed="2.13.0+cpu")[0][0] == uninstall
    assert uninstall not in module.install_commands(cuda, "", installed="2.13.0")[0]
    monkeypatch.setattr(module, "index_reachable", lambda url: True)
    assert module.install_commands(cpu, "https://cpu.index", installed="2.13.0")[0][0] == uninstall
    assert uninstall not in module.install_commands(cpu, "https://cpu.index", installed="2.13.0+cpu")[0]
    assert uninstall not in module.install_commands(cpu, "https://cpu.index", installed=None)[0]
    monkeypatch.setattr(module, "index_reachable", lambda url: False)  # the fallback keeps what is there
    assert uninstall not in module.install_commands(cpu, "https://cpu.index", installed="2.13.0")[0]


def test_requirements_cuda_pins_nvcc_at_torchs_cuda_runtime():
    pins = dict(line.split("==") for line in (ROOT / "requirements-cuda.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert set(pins) == {"nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-runtime",
                         "nvidia-cuda-cccl"}
    assert all(version.startswith("13.0.") for version in pins.values())


def test_old_driver_stops_with_one_message_naming_it_and_the_cuda_12_route(tmp_path):
    done = run_script("plan", "--plan", str(tmp_path / "plan.json"), path=fake_path(tmp_path, OLD_DRIVER))
    assert done.returncode == 1 and not (tmp_path / "plan.json").exists()
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    for expected in ("550.54.15", "580", "CUDA 12 wheels", "download.pytorch.org/whl/cu12", "CUDA 12 toolkit",
                     "CUDA_HOME=/usr/local/cuda-12.x make GPU=1"):
        assert expected in message


def test_gpu_1_overrides_an_old_driver_and_a_missing_nvidia_smi(tmp_path):
    decided = plan(tmp_path, OLD_DRIVER, gpu="1")
    assert decided["torch"] == "cuda" and any("older than 580" in note for note in decided["notes"])
    blind = plan(tmp_path, gpu="1")
    assert blind["torch"] == "cuda" and blind["archs"] == []
    assert "MCNET_RT_CUDA_ARCHS" not in " ".join(build_env(tmp_path))  # every architecture of csrc/build.json


PTX_ONLY_CHECK = [f"MCNET_RT_CUDA_ARCHS={setup_env().build_flags()['ptx_arch']}"]  # every .cu, one architecture


@pytest.mark.parametrize("smi", [(), (NO_DRIVER,)], ids=["no nvidia-smi", "nvidia-smi fails"])
def test_no_gpu_installs_the_cpu_build_and_compiles_the_kernels_for_one_architecture(tmp_path, smi):
    decided = plan(tmp_path, *smi, status=9 if smi else 0)
    assert decided["torch"] == "cpu"
    assert pip_lines(dry_run(tmp_path, "install", "--cpu-index", "").stdout) == ["torch==2.13.0"]
    assert build_env(tmp_path) == PTX_ONLY_CHECK  # no MCNET_RT_CUDA=1: without nvcc the build stays CPU-only


def test_gpu_0_installs_the_cpu_build_on_a_gpu_machine(tmp_path):
    assert plan(tmp_path, H100, gpu="0")["torch"] == "cpu"
    assert build_env(tmp_path) == PTX_ONLY_CHECK


def test_nvcc_gets_machine_code_for_the_chosen_architectures_and_the_ptx():
    flags = setup_env().build_flags()
    arch, every = flags["ptx_arch"], flags["cuda_archs"]
    one = setup_env().nvcc_arch_flags(dict(variable.split("=") for variable in PTX_ONLY_CHECK))
    assert [f for f in one if f.startswith("-gencode")] == [f"-gencode=arch=compute_{arch},code=sm_{arch}",
                                                             f"-gencode=arch=compute_{arch},code=compute_{arch}"]
    assert f"-DMCNET_RT_SASS_ARCHS={arch}" in one
    default = setup_env().nvcc_arch_flags({})
    assert [f for f in default if "code=sm_" in f] == [f"-gencode=arch=compute_{a},code=sm_{a}" for a in every]
    assert default[len(every)] == f"-gencode=arch=compute_{arch},code=compute_{arch}"


def test_cpu_build_comes_from_pytorchs_cpu_index_when_it_answers_else_from_the_configured_index(tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        plan(tmp_path)
        index = f"http://127.0.0.1:{server.server_address[1]}/"
        assert pip_lines(dry_run(tmp_path, "install", "--cpu-index", index).stdout) == [
            f"--extra-index-url {index} torch==2.13.0"]
    finally:
        server.shutdown()
        thread.join()
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        silent = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    done = dry_run(tmp_path, "install", "--cpu-index", silent)
    assert pip_lines(done.stdout) == ["torch==2.13.0"] and "not reachable" in done.stdout


def test_full_tensorrt_only_on_a_cuda_set_up(tmp_path):
    plan(tmp_path)
    refused = dry_run(tmp_path, "tensorrt")
    assert refused.returncode == 1 and "GPU" in refused.stderr and "TensorRT for RTX" in refused.stderr
    plan(tmp_path, H100)
    assert pip_lines(dry_run(tmp_path, "tensorrt").stdout) == [f"-r {ROOT / 'requirements-tensorrt.txt'}"]
    assert "tensorrt-cu13==11.4.0.106" in (ROOT / "requirements-tensorrt.txt").read_text().splitlines()


def test_plan_file_changes_only_with_the_decision(tmp_path):
    plan(tmp_path, H100)
    first = (tmp_path / "plan.json").stat().st_mtime_ns
    os.utime(tmp_path / "plan.json", ns=(first - 10**9, first - 10**9))
    plan(tmp_path, H100)
    assert (tmp_path / "plan.json").stat().st_mtime_ns == first - 10**9
    plan(tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text())["torch"] == "cpu"


def test_bad_gpu_value_is_refused(tmp_path):
    done = run_script("plan", "--gpu", "yes", "--plan", str(tmp_path / "plan.json"), path=fake_path(tmp_path))
    assert done.returncode == 1 and "GPU must be auto, 0 or 1, not 'yes'" in done.stderr


def make_dry_run(*variables: str) -> str:
    """`make -n test` as a user types it: nothing inherited from a `make` running these tests, or the shell."""
    ignored = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GPU", "TENSORRT", "TORCH_CPU_INDEX")
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    done = subprocess.run(["make", "-n", "test", *variables], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_makefile_passes_the_overrides_to_the_set_up():
    default = make_dry_run()
    assert "setup_env.py plan --gpu auto" in default and "setup_env.py tensorrt" not in default
    assert "--cpu-index \"https://download.pytorch.org/whl/cpu\"" in default
    forced = make_dry_run("GPU=1", "TENSORRT=1")
    assert "setup_env.py plan --gpu 1" in forced and "setup_env.py tensorrt" in forced
