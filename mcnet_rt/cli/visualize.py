"""`mcnet-rt visualize`: keypoints, motion, occlusion, features and the meta-memory, drawn per frame."""
from __future__ import annotations

import argparse

from ..animate import AnimateOptions
from ..errors import InputError
from ..io.outputs import VIDEO_EXTENSIONS, check_output_file
from ..pipeline.session import SessionOptions
from .options import (check_frame_limits, crop_choice, crop_options, dtype_name, group, model_from_args, model_options,
                      pick_device, pick_dtype)


def add_parser(sub) -> None:
    head = group()
    head.add_argument("--source", required=True, help="source image (a photo with a face)")
    head.add_argument("--driving", help="driving video, or a still image (one row, written as .png)")
    head.add_argument("-o", "--output", required=True, help=f"output: .png (one row per frame) or a video "
                   f"({', '.join(VIDEO_EXTENSIONS)}) with the driving video's timestamps")
    head.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    head.add_argument("--memory", action="store_true", help="instead: the learned meta-memory and, for --source, the "
                   "identity-conditioned memory and its attention at each scale (.png)")
    head.add_argument("--panels", default="all", help="comma-separated panels from source, driving, transferred, "
                   "sparse, mask, deformed, flow, occlusion, features, prediction (default all)")
    head.add_argument("--height", type=int, metavar="PX", help="panel height (default the model's image size)")
    p = sub.add_parser("visualize", help="draw keypoints, motion, occlusion, features and the meta-memory per frame",
                       parents=[head, model_options(), crop_options()])
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: apply the driver's motion since its first face frame (default)")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not scale motion by the face-size ratio")
    p.add_argument("--max-frames", type=int, metavar="N", help="draw only the first N driving frames")
    p.add_argument("--max-seconds", type=float, metavar="S", help="draw only the first S seconds of the driver")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)  # eager only: the extra outputs are not part of the exported step


def check_request(args: argparse.Namespace) -> tuple[str, ...]:
    """Refuse what cannot be drawn before any work; returns the chosen panels."""
    from ..visualize.panels import parse_panels
    from ..visualize.runner import IMAGE_OUTPUTS, check_request

    if not args.memory and not args.driving:
        raise InputError("visualize needs --driving VIDEO_OR_IMAGE (or --memory for the memory figure)")
    outputs = IMAGE_OUTPUTS if args.memory else IMAGE_OUTPUTS + VIDEO_EXTENSIONS
    inputs = (args.source,) if args.memory else (args.source, args.driving)
    check_output_file(args.output, outputs, inputs=inputs, overwrite=args.overwrite)
    if not args.memory:
        check_request(args.driving, args.output)
    panels = parse_panels(args.panels)
    if args.paste_back:
        raise InputError("--paste-back does not apply to visualize: its panels show the model's crop")
    check_frame_limits(args)
    if args.height is not None and not 32 <= args.height <= 1024:
        raise InputError(f"--height must be from 32 to 1024 pixels, got {args.height}")
    return panels


def run(args: argparse.Namespace) -> None:
    from ..visualize.runner import VisualizeOptions, visualize

    panels = check_request(args)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    model, label = model_from_args(args, device)
    session = SessionOptions(crop=crop_choice(args), adapt_scale=not args.no_adapt_scale,
                             detect_every=args.detect_every)
    if args.memory:
        from ..visualize.memory import write_memory_figure

        write_memory_figure(model, args.source, args.output, session, args.height, label)
        print(f"wrote {args.output}: the meta-memory and its attention for {args.source}")
        return
    options = AnimateOptions(relative=args.mode == "relative", label=label, max_frames=args.max_frames,
                             max_seconds=args.max_seconds, session=session)
    rows = visualize(model, args.source, args.driving, args.output, options, VisualizeOptions(panels, args.height),
                     dtype, progress=not args.quiet)
    print(f"wrote {args.output}: {rows} row{'s' * (rows != 1)} of {', '.join(panels)} ({device.type}, "
          f"{dtype_name(dtype)}, eager)")
