"""`mcnet-rt doctor`: what this machine gives mcnet_rt, and the command that fixes each missing piece."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine gives mcnet_rt (GPU, torch, kernels, TensorRT, ONNX Runtime, "
                       "MediaPipe, virtual camera), with the command that fixes each missing piece")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from .. import doctor

    doctor.main()
