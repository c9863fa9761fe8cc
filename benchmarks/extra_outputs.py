"""The per-frame step's latency with and without the extra outputs that `mcnet-rt visualize` draws.

`FrameStep.__call__` (what animate, live, serve and the exporters run) against `keypoints` + `render_outputs` (the same
work, returning the motion, occlusion, deformed source and the features around the memory). Both are timed in
turn, one call each per round, so that a machine shared with other work slows both alike.

    python benchmarks/extra_outputs.py --device cpu --presets small vox-256 --iterations 20
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import mcnet_rt
from mcnet_rt.pipeline.step import FrameStep, motion_reference, prepare_source
from timing import Timer, percentiles, stamp, write_report


@torch.no_grad()
def measure(name: str, device: torch.device, warmup: int, iterations: int) -> dict:
    torch.manual_seed(0)
    model = mcnet_rt.build_model(name, device).eval()
    size = model.config.image_size
    source, driving = torch.rand(1, 3, size, size, device=device), torch.rand(1, 3, size, size, device=device)
    cache = prepare_source(model, source)
    step = FrameStep(model)
    inputs = step.inputs(cache, motion_reference(model, cache, source))
    calls = {"step": lambda: step(driving, *inputs),
             "step_with_extra_outputs": lambda: step.render_outputs(*step.keypoints(driving), *inputs)}
    for _ in range(warmup):
        for call in calls.values():
            call()
    timer, times = Timer(device), {key: [] for key in calls}
    for _ in range(iterations):
        for key, call in calls.items():
            times[key].append(timer(call))
    result = {key: percentiles(values) for key, values in times.items()}
    result["p50_ratio"] = result["step_with_extra_outputs"]["p50_ms"] / result["step"]["p50_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["small", "vox-256"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {}
    for name in args.presets:
        results[name] = r = measure(name, device, args.warmup, args.iterations)
        print(f"{name} fp32 batch 1 on {device.type}: step p50 {r['step']['p50_ms']:.1f} ms, with extra outputs "
              f"p50 {r['step_with_extra_outputs']['p50_ms']:.1f} ms (ratio {r['p50_ratio']:.3f})")
    report = {"benchmark": "extra_outputs", **stamp(device), "dtype": "float32", "batch": 1, "results": results}
    write_report(report, args.output, f"extra_outputs_{device.type}.json")


if __name__ == "__main__":
    main()
