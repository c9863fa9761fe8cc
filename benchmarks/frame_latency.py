"""Frame latency of the per-frame path: driving keypoints + generator with the source cached.

Times each stage and the whole step (warm-up, then many iterations; CUDA events on a GPU, perf_counter after a
synchronise on the CPU) and writes p50/p95/p99 with the device, dtype, batch and resolution to JSON.

    python benchmarks/frame_latency.py                       # GPU: vox-256, fp32+fp16, batch 1 and 8
    python benchmarks/frame_latency.py --device cpu --preset small --precisions fp32 --batches 1 8
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import mcnet_rt
from mcnet_rt.animate import PRECISIONS, autocast
from mcnet_rt.keypoints import relative_keypoints

RESULTS = Path(__file__).parent / "results"


class Timer:
    """Milliseconds of one call, measured with CUDA events on a GPU and wall clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered),
            "min_ms": ordered[0], "iterations": len(ordered)}


def measure(model: mcnet_rt.MCNet, device: torch.device, dtype: torch.dtype, batch: int, warmup: int,
            iterations: int) -> dict[str, dict[str, float]]:
    size = model.config.image_size
    gen = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, size, size, generator=gen).to(device)
    driving = torch.rand(batch, 3, size, size, generator=gen).to(device)
    with torch.inference_mode(), autocast(device, dtype):
        cache = model.encode_source(source).expand(batch)
        kp_initial = model.kp_detector(driving[:1])
        kp_driving = model.kp_detector(driving)
        motion = model.generator.estimate_motion(cache.image, cache.keypoints, kp_driving)

        def end_to_end():
            kp = relative_keypoints(cache.keypoints, model.kp_detector(driving), kp_initial)
            return model.animate(cache, kp)

        stages = {
            "keypoints": lambda: model.kp_detector(driving),
            "dense_motion": lambda: model.generator.estimate_motion(cache.image, cache.keypoints, kp_driving),
            "warp+memory+decoder": lambda: model.generator.decode(cache.image, cache.features, motion,
                                                                  cache.keypoints.value),
            "end_to_end": end_to_end,
        }
        timer = Timer(device)
        results = {}
        for name, fn in stages.items():
            for _ in range(warmup):
                fn()
            results[name] = percentiles([timer(fn) for _ in range(iterations)])
        results["end_to_end"]["frames_per_s"] = batch * 1e3 / results["end_to_end"]["p50_ms"]
    return results


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="default: vox-256 on a GPU, small on the CPU")
    parser.add_argument("--checkpoint", help="time these weights instead of a freshly initialised model")
    parser.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS),
                        help="default: fp32 fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    preset = args.preset or ("vox-256" if gpu else "small")
    precisions = args.precisions or (["fp32", "fp16"] if gpu else ["fp32"])
    warmup = args.warmup if args.warmup is not None else (20 if gpu else 3)
    iterations = args.iterations if args.iterations is not None else (200 if gpu else 20)
    if gpu:
        torch.backends.cudnn.benchmark = True
    model = (mcnet_rt.load(args.checkpoint, device) if args.checkpoint
             else mcnet_rt.build_model(preset, device))
    device_name = torch.cuda.get_device_name(device) if gpu else cpu_name()

    runs = []
    for precision in precisions:
        for batch in args.batches:
            stages = measure(model, device, PRECISIONS[precision], batch, warmup, iterations)
            runs.append({"precision": precision, "batch": batch, "stages": stages})
            e2e = stages["end_to_end"]
            print(f"{preset} {precision} batch {batch}: " + ", ".join(
                f"{name} p50 {s['p50_ms']:.2f} ms" for name, s in stages.items())
                + f" | {e2e['frames_per_s']:.1f} frames/s (p95 {e2e['p95_ms']:.2f} ms, p99 {e2e['p99_ms']:.2f} ms)")

    report = {
        "benchmark": "frame_latency",
        "what": "per-frame path with the source cached: driving keypoints + relative motion + generator",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device_name,
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "preset": preset,
        "weights": args.checkpoint or "random init",
        "resolution": model.config.image_size,
        "warmup": warmup,
        "runs": runs,
    }
    output = args.output or RESULTS / f"frame_latency_{device.type}_{preset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
