"""Train MCNet with the released recipe, on one process or many:

    python training/train.py --config training/configs/vox-256.yaml --set data.root=data/vox
    torchrun --nproc_per_node 8 training/train.py --config training/configs/vox-256.yaml --set data.root=data/vox
    python training/train.py --config ... --resume auto          # or --resume runs/x/checkpoints/step-00002000.pt
    python training/train.py --export runs/x/checkpoints/best.pt mcnet.safetensors [--weights ema|raw]  # or .pth.tar

Any config value can be set with `--set section.key=value` or `--section.key value`. See training/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from mcnet_rt.cli import error_line
from mcnet_rt.errors import InputError
from mcnet_rt.training.config import describe, load_config, override_differences
from mcnet_rt.training.state import export


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file (training/configs/*.yaml); defaults: the released recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--resume", metavar="auto|PATH", help="continue from a training checkpoint")
    parser.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUTPUT"),
                        help="write a training checkpoint's model as .safetensors or official .pth.tar, and exit")
    parser.add_argument("--weights", choices=("ema", "raw"),
                        help="with --export: the weight average or the last step's weights (default: the average "
                             "when the checkpoint has one)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for PyTorch (torch.set_num_threads)")
    args, rest = parser.parse_known_args(argv)
    # Dotted flags: --train.lr_generator 1e-4 or --train.lr_generator=1e-4.
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or "." not in flag:
            parser.error(f"unrecognized argument {flag}")
        key, sep, value = flag[2:].partition("=")
        if not sep:
            if not rest:
                parser.error(f"{flag} needs a value")
            value = rest.pop(0)
        args.set.append(f"{key}={value}")
    if args.weights and not args.export:
        parser.error("--weights goes with --export")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.export:
            print(f"wrote {export(*args.export, weights=args.weights)}")
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        config = load_config(args.config, args.set)
        changes = override_differences(args.config, args.set)
        if changes and int(os.environ.get("RANK", 0)) == 0:
            print(f"overrides of {args.config or 'the default configuration'}:\n{describe(changes)}", flush=True)
        from mcnet_rt.training.trainer import Trainer

        progress = Trainer(config, resume=args.resume).run()
    except InputError as e:
        print(error_line(e, "train.py"), file=sys.stderr)
        return 2
    print(f"stopped at step {progress.step} (epoch {progress.epoch}), {progress.skipped} non-finite steps skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
