"""Training-step throughput and peak memory of the released recipe (all losses, Adam, clipping), on synthetic
batches so that data loading is not measured.

    python benchmarks/training_step.py             # GPU: vox-256, batch 8, fp32 and bf16, ops reference vs kernels
    python benchmarks/training_step.py --device cpu --preset small --image-size 64 --batch 2 --amp none --steps 3

Prints iterations/s, samples/s and peak memory per setting (and the kernels' speed-up and memory ratio against
the PyTorch references, measured in the same run), and writes JSON to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mcnet_rt.ops import use_impl
from mcnet_rt.training.config import load_config, usable_scales
from mcnet_rt.training.trainer import Trainer
from timing import stamp, write_report


def measure(args: argparse.Namespace, amp: str, impl: str, device: torch.device) -> dict:
    overrides = [f"model.preset={args.preset}", f"model.image_size={args.image_size}",
                 f"loss.scales={usable_scales(args.image_size or 256)}",
                 f"train.batch_size={args.batch}", f"train.amp={amp}", f"train.device={device}"]
    with tempfile.TemporaryDirectory() as root:
        # A one-frame placeholder dataset satisfies the Trainer; the steps below get random batches directly.
        video = Path(root) / "train" / "bench#clip.mp4"
        video.mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(video / "0000000.png")
        config = load_config(None, overrides + [f"data.root={root}", f"log.dir={root}/run", "data.num_workers=0",
                                                f"data.num_repeats={args.batch}", "validation.every=0"])
        trainer = Trainer(config)
    size = trainer.model.config.image_size
    batch = {"source": torch.rand(args.batch, 3, size, size), "driving": torch.rand(args.batch, 3, size, size),
             "seed": torch.arange(args.batch)}
    with use_impl(impl):
        for _ in range(args.warmup):
            trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"amp": amp, "ops": impl, "it_per_s": 1 / seconds, "samples_per_s": args.batch / seconds,
            "peak_memory_gib": peak / 2 ** 30, "peak_memory_kind": "cuda allocated" if device.type == "cuda"
            else "process max RSS"}


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--preset", default="vox-256")
    parser.add_argument("--image-size", type=int, default=0, help="0: the preset's")
    parser.add_argument("--batch", type=int, default=8, help="per process")
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"] if cuda else ["none"],
                        help="none, bf16, fp16 (CUDA)")
    parser.add_argument("--impls", nargs="+", default=["reference", "auto"] if cuda else ["reference"],
                        choices=["reference", "auto", "kernel"], help="op implementations to compare")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for amp in args.amp:
        base = None
        for impl in args.impls:
            row = measure(args, amp, impl, device)
            if base is None:
                base = row
            else:
                row[f"speedup_vs_{base['ops']}"] = row["it_per_s"] / base["it_per_s"]
                row[f"peak_memory_ratio_vs_{base['ops']}"] = row["peak_memory_gib"] / base["peak_memory_gib"]
            rows.append(row)
            print(f"{args.preset} {args.image_size or 'preset'} px, batch {args.batch}, amp {amp}, ops {impl}: "
                  f"{row['it_per_s']:.3f} it/s, {row['samples_per_s']:.2f} samples/s, "
                  f"peak {row['peak_memory_gib']:.2f} GiB ({row['peak_memory_kind']})")
    report = {"benchmark": "training_step", **stamp(device), "preset": args.preset,
              "image_size": args.image_size, "batch": args.batch, "steps": args.steps, "results": rows}
    write_report(report, args.output, f"training_step_{device.type}_{args.preset}_b{args.batch}.json")


if __name__ == "__main__":
    main()
