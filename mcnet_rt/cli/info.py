"""`mcnet-rt info`: a model's configuration, parameter counts and GFLOPs, or the native kernels of this machine."""
from __future__ import annotations

import argparse
import json

from .. import checkpoint
from ..config import PRESETS, preset
from ..models import MCNet
from ..profile import gflops_per_frame, parameter_counts
from .options import pick_device


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="configuration, parameter counts and GFLOPs per frame")
    p.add_argument("checkpoint", nargs="?", help="official .pth.tar or mcnet_rt .safetensors (default: a preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="vox-256", help="used when no checkpoint is given")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--kernels", action="store_true",
                   help="instead: the native kernels' architectures, and what impl=auto runs on this machine and why")
    p.set_defaults(func=run)


def print_kernel_report(as_json: bool) -> None:
    """Per op family: the architectures the kernels of `_ops.so` were compiled for, and what impl="auto" runs here
    and why."""
    from ..ops import dispatch

    report = dispatch.report(pick_device("auto"))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    compiled = report["compiled"]
    print(f"device: {report['device']}")
    print("mcnet_rt/_ops.so CUDA code: " + (f"{', '.join(compiled['sass'])} + PTX {compiled['ptx']} (CUDA "
                                       f"{compiled['cuda_runtime']} runtime, build {compiled['build_hash']})"
                                       if compiled else "none"))
    print(f"CUDA kernels on this machine: {report['cuda_kernels']}")
    for family, picks in report["auto"].items():
        print(f"{family}:")
        for dtype, pick in picks.items():
            print(f"  {dtype:9s} auto -> {pick}")
    print(f"measured decisions ({report['cache']}):" + ("" if report["measured"] else " none yet"))
    for name, decision in report["measured"].items():
        print(f"  {name}: {decision['use']} ({decision['why']})")


def run(args: argparse.Namespace) -> None:
    if args.kernels:
        print_kernel_report(args.json)
        return
    if args.checkpoint:
        model = checkpoint.load(args.checkpoint)
        source = str(args.checkpoint)
    else:
        model = MCNet(preset(args.preset)).eval()
        source = f"preset {args.preset} (untrained)"
    report = {
        "model": source,
        "config": json.loads(model.config.to_json()),
        "parameters": parameter_counts(model),
        "gflops_per_frame": {k: round(v, 2) for k, v in gflops_per_frame(model).items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model: {source}")
    print(f"image size: {model.config.image_size}, keypoints: {model.config.num_kp}, "
          f"meta-memory: {model.config.generator.memory.channels}×{model.config.generator.memory.spatial}²")
    print("parameters:")
    for name, count in report["parameters"].items():
        print(f"  {name:36s} {count / 1e6:9.2f} M")
    print("GFLOPs at batch 1 (multiply-add = 2):")
    for name, value in report["gflops_per_frame"].items():
        print(f"  {name:36s} {value:9.2f}")
