"""The machine's NVIDIA GPUs as nvidia-smi reports them (name, compute capability, driver), and the driver CUDA 13
needs. Standard library only: `make`'s set-up (tools/setup_env.py) reads this file before torch is installed, and
`mcnet-rt doctor` reads it where torch cannot see the GPU (a CPU build)."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

MIN_DRIVER = 580  # the first driver branch for CUDA 13, which PyPI's torch and the kernels' nvcc are built with


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: str  # "9.0"
    driver: str  # "580.65.06"

    @property
    def arch(self) -> str:
        return self.capability.replace(".", "")

    @property
    def driver_major(self) -> int:
        return int(self.driver.split(".")[0])


def query_gpus(nvidia_smi: str = "nvidia-smi") -> list[Gpu]:
    """The GPUs nvidia-smi reports; none when it is missing, fails or hangs (no driver, no GPU)."""
    try:
        done = subprocess.run([nvidia_smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) == 3 and re.fullmatch(r"\d+\.\d+", parts[1]) and re.match(r"\d+", parts[2]):
            gpus.append(Gpu(*parts))
    return gpus
