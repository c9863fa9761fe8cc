"""Frame latency of the per-frame path: driving keypoints + generator with the source cached.

Times each stage and the whole step (warm-up, then many iterations; CUDA events on a GPU, perf_counter after a
synchronise on the CPU) and writes p50/p95/p99 with the device, dtype, batch and resolution to JSON. `--impls`
compares the ops' PyTorch references with the native kernels in one run (ratios in the output); `--backend`
compares the engines of `mcnet_rt.engine` (eager, compiled, aoti, onnxruntime, tensorrt) side by side.

    python benchmarks/frame_latency.py                       # GPU: vox-256, fp32+fp16, batch 1 and 8, both impls
    python benchmarks/frame_latency.py --device cpu --preset small --precisions fp32 --batches 1 8
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import mcnet_rt
from mcnet_rt.errors import InputError
from mcnet_rt.precision import PRECISIONS, autocast
from mcnet_rt.pipeline.step import FrameStep, motion_reference, prepare_source
from mcnet_rt.engine import BACKENDS, load_backend
from mcnet_rt.ops import use_impl
from timing import Timer, percentiles, stamp, write_report


def measure(model: mcnet_rt.MCNet, device: torch.device, precisions: list[str], batch: int, warmup: int,
            iterations: int, backends: list[str]) -> dict[tuple[str, str], dict]:
    """Per (precision, backend): its stages' latency percentiles, or {"skipped": reason} for a backend that does
    not run that precision. Every step is timed in turn, one call each per round, across precisions too, so a slow
    spell of a shared machine lands on all of them alike and their ratios (also against fp32 eager) hold; eager's
    stage breakdown is timed after them."""
    size = model.config.image_size
    gen = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, size, size, generator=gen).to(device)
    driving = torch.rand(batch, 3, size, size, generator=gen).to(device)
    calls, results, cases = {}, {}, {}
    for precision in precisions:
        dtype = PRECISIONS[precision]
        prepared = prepare_source(model, source, dtype)
        eager = FrameStep(model, dtype)
        inputs = eager.inputs(prepared, motion_reference(model, prepared, driving[:1], dtype=dtype))
        cases[precision] = (eager, prepared, inputs)
        for backend in backends:
            started = time.perf_counter()
            try:
                step = load_backend(backend, FrameStep(model, dtype))
            except InputError as error:
                results[precision, backend] = {"skipped": str(error)}
                continue
            results[precision, backend] = {"end_to_end": {"build_s": time.perf_counter() - started}}
            calls[precision, backend] = step, inputs
    timer = Timer(device)
    with torch.inference_mode():
        for step, inputs in calls.values():
            for _ in range(warmup):
                step(driving, *inputs)
        times = {key: [] for key in calls}
        for _ in range(iterations):
            for key, (step, inputs) in calls.items():
                times[key].append(timer(lambda: step(driving, *inputs)))
        fp32, prepared32 = FrameStep(model, torch.float32), prepare_source(model, source, torch.float32)
        expected32 = fp32(driving, *fp32.inputs(prepared32, motion_reference(model, prepared32, driving[:1])))
        for (precision, backend), (step, inputs) in calls.items():
            eager = cases[precision][0]
            e2e = results[precision, backend]["end_to_end"]
            e2e.update(percentiles(times[precision, backend]),
                       frames_per_s=batch * 1e3 / percentiles(times[precision, backend])["p50_ms"])
            out = step(driving, *inputs)
            e2e["max_abs_diff_vs_eager"] = (out - eager(driving, *inputs)).abs().max().item()
            if precision != "fp32":  # what the reduced precision costs: against float32 eager on the same frame
                e2e["max_abs_diff_vs_fp32_eager"] = (out.float() - expected32).abs().max().item()
        for precision in precisions:
            if (precision, "eager") in calls:
                results[precision, "eager"].update(eager_stages(model, device, PRECISIONS[precision], driving,
                                                                cases[precision][1].expand(batch), timer, warmup,
                                                                iterations))
    return results


def eager_stages(model, device, dtype, driving, cache, timer, warmup: int, iterations: int) -> dict[str, dict]:
    """Eager's breakdown (same autocast as the step)."""
    with autocast(device, dtype):
        kp_driving = model.kp_detector(driving)
        motion = model.generator.estimate_motion(cache.image, cache.keypoints, kp_driving)
        stages = {
            "keypoints": lambda: model.kp_detector(driving),
            "dense_motion": lambda: model.generator.estimate_motion(cache.image, cache.keypoints, kp_driving),
            "warp+memory+decoder": lambda: model.generator.decode(cache.image, cache.features, motion,
                                                                  cache.keypoints.value),
        }
        for fn in stages.values():
            for _ in range(warmup):
                fn()
        return {name: percentiles([timer(fn) for _ in range(iterations)]) for name, fn in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="default: vox-256 on a GPU, small on the CPU")
    parser.add_argument("--checkpoint", help="time these weights instead of a freshly initialised model")
    parser.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS),
                        help="default: fp32 fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--impls", nargs="+", default=None, choices=["reference", "auto", "kernel"],
                        help="op implementations to compare (default: reference auto on a GPU, reference on the CPU)")
    parser.add_argument("--backend", nargs="+", default=["eager"], choices=BACKENDS,
                        help="backends to compare side by side (mcnet_rt.engine; default eager)")
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
    impls = args.impls or (["reference", "auto"] if gpu else ["reference"])

    runs = []
    bases = {}  # per batch: the first run (the first precision, impl and backend), which every other is compared to
    baseline = f"{precisions[0]}_{impls[0]}_{args.backend[0]}"
    for batch in args.batches:
        for impl in impls:
            with use_impl(impl):
                measured = measure(model, device, precisions, batch, warmup, iterations, args.backend)
            for (precision, backend), stages in measured.items():
                run = {"precision": precision, "batch": batch, "impl": impl, "backend": backend}
                label = f"{preset} {precision} batch {batch} ops={impl} backend={backend}"
                if "skipped" in stages:
                    runs.append({**run, **stages})
                    print(f"{label}: skipped ({stages['skipped']})")
                    continue
                run["stages"] = stages
                base = bases.setdefault(batch, stages)
                if base is not stages:
                    run[f"speedup_vs_{baseline}"] = {
                        name: base[name]["p50_ms"] / s["p50_ms"] for name, s in stages.items() if name in base}
                runs.append(run)
                e2e = stages["end_to_end"]
                print(f"{label}: " + ", ".join(f"{name} p50 {s['p50_ms']:.2f} ms" for name, s in stages.items())
                      + f" | {e2e['frames_per_s']:.1f} frames/s (p95 {e2e['p95_ms']:.2f} ms, "
                      f"p99 {e2e['p99_ms']:.2f} ms; built in {e2e['build_s']:.0f} s, "
                      f"max diff vs eager {e2e['max_abs_diff_vs_eager']:.1e}"
                      + (f", vs fp32 eager {e2e['max_abs_diff_vs_fp32_eager']:.1e})"
                         if "max_abs_diff_vs_fp32_eager" in e2e else ")"))

    report = {
        "benchmark": "frame_latency",
        "what": "the per-frame step (mcnet_rt.pipeline.FrameStep, source cached): driving keypoints + relative motion + generator",
        **stamp(device),
        "preset": preset,
        "weights": args.checkpoint or "random init",
        "resolution": model.config.image_size,
        "warmup": warmup,
        "runs": runs,
    }
    write_report(report, args.output, f"frame_latency_{device.type}_{preset}.json")


if __name__ == "__main__":
    main()
