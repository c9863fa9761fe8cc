"""What the commands share: device and precision choice, the model's weights, typed numbers, frame limits, and
the option groups several commands take (argparse parent parsers)."""
from __future__ import annotations

import argparse
import math
import re

import torch

from .. import checkpoint
from ..config import PRESETS, preset
from ..engine import BACKENDS
from ..errors import InputError
from ..faces import ALIGNS, CROPS, CropOptions
from ..io.messages import note
from ..models import MCNet
from ..precision import PRECISIONS

OFFICIAL_CHECKPOINT_HINT = (
    "the official MCNet vox-256 checkpoint is linked from the README of the authors' repository "
    "harlanhong/ICCV2023-MCNET on GitHub"
)
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
BATCH_WARNING = 32


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InputError(f"--device {name}: not a device this tool runs on; use {DEVICE_HELP}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available (this torch build: {torch.__version__})")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return PRECISIONS[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def model_from_args(args: argparse.Namespace, device: torch.device) -> tuple[MCNet, str | None]:
    """The model to run and, for untrained weights, the label its output must carry."""
    if args.checkpoint:
        return checkpoint.load(args.checkpoint, device, memory_noise=args.memory_noise), None
    if args.untrained:
        config = preset(args.untrained).with_memory_noise(args.memory_noise)
        note(f"note: using UNTRAINED random weights (preset {args.untrained}); the output shows the pipeline "
             f"working, not a result of MCNet. For real results pass --checkpoint; {OFFICIAL_CHECKPOINT_HINT}")
        torch.manual_seed(0)
        return MCNet(config).to(device).eval(), "UNTRAINED WEIGHTS - NOT A RESULT"
    raise InputError(f"no checkpoint given: pass --checkpoint FILE ({OFFICIAL_CHECKPOINT_HINT}, or train one with "
                     "training/), or --untrained PRESET to exercise the pipeline with random weights")


def check_frame_limits(args: argparse.Namespace) -> None:
    """--max-frames and --max-seconds, where a command takes them."""
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.max_seconds is not None and not 0 < args.max_seconds < math.inf:
        raise InputError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds}")


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch below 1 and warn above BATCH_WARNING: memory grows with every frame of a batch."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if batch_size > BATCH_WARNING:
        note(f"note: --batch-size {batch_size}: memory grows with each frame of a batch (measured on the CPU: the "
             "small preset needs 0.5 GB at batch 8 and 2.2 GB at 120; vox-256 2.8 GB at batch 8); above "
             f"{BATCH_WARNING} it rarely runs faster")


def number(kind: type, low: float, high: float = math.inf, what: str = "a number"):
    """An argparse type: a finite `kind` (int or float) from `low` to `high`; anything else (nan, inf, a huge
    value that would ask for gigabytes) is a usage error naming `what` was expected, exit status 2."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


frame_interval = number(int, 1, what="a whole number of frames, at least 1")


port_number = number(int, 0, 65535, what="a port number from 0 to 65535")


def group(*parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A parent parser holding `parents`' options, for more to be added: options in the order they show."""
    return argparse.ArgumentParser(add_help=False, parents=list(parents))


def weight_options() -> argparse.ArgumentParser:
    """The weights of every command that builds the model (see model_from_args)."""
    p = group()
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official .pth.tar or mcnet_rt .safetensors")
    weights.add_argument("--untrained", choices=sorted(PRESETS), help="random weights of a preset (pipeline test)")
    p.add_argument("--memory-noise", action="store_true",
                   help="restore the released code's random noise in the memory unit (non-deterministic)")
    return p


def model_options() -> argparse.ArgumentParser:
    """The weights, device and precision options of every command that runs the model."""
    p = group(weight_options())
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="auto: fp16 on CUDA, fp32 on the CPU")
    return p


def face_options() -> argparse.ArgumentParser:
    """How often the face detector runs and which face, leveled how (SessionOptions.detect_every, .face, .align):
    the same for animate, visualize, live, serve and cluster."""
    p = group()
    p.add_argument("--detect-every", type=frame_interval, default=1, metavar="N",
                   help="run the face detector on every N-th driving frame and hold the crop in between (default 1: "
                   "every frame; larger is faster on the CPU, slower to follow fast head moves)")
    p.add_argument("--face", default="largest", metavar="N|largest|centre|left|right",
                   help="the face to animate when a photo or the first driving frame shows several: the largest "
                   "(default; a turned-away face counts for less), the nearest the centre, the leftmost, the "
                   "rightmost, or the N-th from the left (1 = leftmost; a driving frame with fewer faces uses its "
                   "largest); the avatar's choice is printed")
    p.add_argument("--align", choices=ALIGNS, default="roll",
                   help="roll: level tilted and sideways heads by their eyes before the model sees them and turn "
                   "them back on paste-back (default); none: upright crops as found")
    return p


def crop_options() -> argparse.ArgumentParser:
    """The crop (SessionOptions.crop, .paste_back) and the face options of the commands that crop a video."""
    p = group()
    p.add_argument("--crop", choices=CROPS, default="auto",
                   help="auto: find and track the faces (default); centre: the centre square; none: the whole frame")
    p.add_argument("--paste-back", action="store_true",
                   help="output the whole source image with the animated face in place")
    return group(p, face_options())


def crop_choice(args: argparse.Namespace) -> CropOptions:
    """The crop the parsed face (and, where the command has it, crop) options ask for."""
    return CropOptions(getattr(args, "crop", "auto"), face=args.face, align=args.align)


def backend_options() -> argparse.ArgumentParser:
    """`--backend` for any command that runs the per-frame step (animate, live, serve, cluster)."""
    p = group()
    p.add_argument("--backend", choices=BACKENDS, default="eager",
                   help="how the per-frame step runs: eager PyTorch, torch.compile, an AOTInductor package, "
                        "ONNX Runtime, or TensorRT with the mcnet_rt plugins (default eager)")
    return p
