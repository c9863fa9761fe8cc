"""`mcnet-rt export`: the ONNX graphs of the per-frame step."""
from __future__ import annotations

import argparse
import torch

from ..pipeline.step import FrameStep
from ..precision import PRECISIONS
from .options import model_from_args, weight_options


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="ONNX graphs of the per-frame step: keypoints.onnx and render.onnx",
                       parents=[weight_options()])
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--ops", choices=("standard", "plugin"), default="standard",
                   help="standard: only standard ONNX ops; plugin: mcnet_rt custom nodes for the TensorRT plugins")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: mixed precision, float32 kept for keypoints, sampling coordinates and motion transfer")
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..engine.onnx_export import export_folder

    def step() -> FrameStep:  # built after the output folder is checked
        model, _ = model_from_args(args, torch.device("cpu"))
        return FrameStep(model.eval(), PRECISIONS[args.precision], relative=args.mode == "relative")

    paths = export_folder(args.output, step, args.ops)
    print(f"wrote {', '.join(str(p) for p in paths.values())} ({args.ops} ops, {args.precision}, any batch)")
