"""Model size and cost: parameter counts per part and GFLOPs per frame (a multiply-add counts as 2 FLOPs).

FLOPs are counted by `torch.utils.flop_counter` on one forward pass: convolutions and matrix products, not the
element-wise work (grid sampling, normalisation, activations) that dominates memory traffic on a GPU.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import MCNet
from .pipeline.step import FrameStep, motion_reference, prepare_source


def parameter_counts(model: MCNet) -> dict[str, int]:
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    g = model.generator
    encoder = count(g.first) + count(g.down_blocks)
    memory = g.memory
    return {
        "keypoint_detector": count(model.kp_detector),
        "generator": count(g),
        "generator.dense_motion": count(g.dense_motion_network),
        "generator.encoder": encoder,
        "generator.decoder": count(g) - encoder - count(g.dense_motion_network) - count(memory),
        "generator.memory_unit": count(memory),
        "generator.memory_unit.meta_memory": memory.meta_memory.numel(),
        "generator.memory_unit.iicm": count(memory.iicm),
        "generator.memory_unit.mcm": count(memory.mcm),
    }


def _gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def gflops_per_frame(model: MCNet) -> dict[str, float]:
    """Cost at batch 1: per source (cached), per stage, and of the per-frame step itself.

    Counted with autograd enabled (nothing is backpropagated): the counter's module tracker rejects parameters
    passed between modules under no_grad.
    """
    device = next(model.parameters()).device
    size = model.config.image_size
    image = torch.rand(1, model.config.num_channels, size, size, device=device)
    source = prepare_source(model, image)
    step = FrameStep(model)
    inputs = step.inputs(source, motion_reference(model, source, image))
    kp = source.keypoints
    with torch.no_grad():
        motion = model.generator.estimate_motion(image, kp, kp)
    parts = {
        "keypoint_detector": _gflops(lambda: model.kp_detector(image)),
        "encoder (per source)": _gflops(lambda: model.generator.encode(image)),
        "dense_motion": _gflops(lambda: model.generator.estimate_motion(image, kp, kp)),
        "decoder+memory": _gflops(lambda: model.generator.decode(image, source.features, motion, kp.value)),
    }
    parts["generator (uncached)"] = parts["encoder (per source)"] + parts["dense_motion"] + parts["decoder+memory"]
    parts["per frame (source cached)"] = _gflops(lambda: step(image, *inputs))
    return parts
