"""Process-group set-up from torchrun's environment, and batch statistics shared across processes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process(device_name: str) -> tuple[Process, torch.device]:
    """Join torchrun's process group when launched by it (NCCL on CUDA, gloo on the CPU) and pick the device."""
    env = os.environ
    process = Process(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    if device_name == "auto":
        device = torch.device(f"cuda:{process.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if process.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return process, device


def any_process(flag: bool, process: Process, device: torch.device) -> bool:
    """True on every process when `flag` is true on any (decisions that must not diverge: skip, stop)."""
    if not process.distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm with statistics over all processes, for CPU training (torch.nn.SyncBatchNorm is GPU-only).

    The all-reduce is differentiable, so each process's gradient includes the other processes' use of its
    statistics, as in SyncBatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        # Two passes (mean, then squared deviations): E[x²] − E[x]² loses precision on large activations.
        total = dist_nn.all_reduce(torch.cat([x.sum((0, 2, 3)), x.new_full((1,), x.numel() / c)]))
        count = total[-1]
        mean = total[:c] / count
        var = dist_nn.all_reduce((x - mean.view(1, c, 1, 1)).square().sum((0, 2, 3))) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return (x - mean.view(1, c, 1, 1)) * scale.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one, keeping its weights and running statistics."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device, child.weight.dtype)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module
