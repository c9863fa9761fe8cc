"""`mcnet-rt convert`: checkpoints between the official .pth.tar and mcnet_rt .safetensors, optionally upscaled."""
from __future__ import annotations

import argparse

from .. import checkpoint
from ..config import PRESETS, preset
from ..io.outputs import check_output_file


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert between the official .pth.tar and mcnet_rt .safetensors")
    p.add_argument("input", help="official .pth.tar or mcnet_rt .safetensors checkpoint")
    p.add_argument("output", help=".safetensors (mcnet_rt, configuration in its metadata) or .pth.tar (official "
                   "layout; other configurations than vox-256 are stored as an extra entry)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--upscale-to", choices=sorted(PRESETS), metavar="PRESET", help="start a higher-resolution model "
                   "(e.g. vox-512 from a vox-256 checkpoint) for fine-tuning: the weights that have a place in it are "
                   "kept, the rest initialised; says which")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    output = check_output_file(args.output, (".safetensors", *checkpoint.OFFICIAL_EXTENSIONS), inputs=(args.input,),
                               overwrite=args.overwrite)
    target = preset(args.upscale_to) if args.upscale_to else None
    model = checkpoint.load(args.input)
    if target is not None:
        from ..upscale import summary, upscale

        upscaled = upscale(model, target)
        model = upscaled.model
        print(f"{args.input} -> {args.upscale_to}: {summary(upscaled)}")
    if output.name.lower().endswith(".safetensors"):
        checkpoint.save(model, output)
    else:
        checkpoint.save_official(model, output)
    print(f"wrote {output}")
