"""`mcnet-rt animate`: a still face animated by a driving video, written as a video."""
from __future__ import annotations

import argparse

from ..animate import AnimateOptions, animate_video
from ..io.outputs import VIDEO_EXTENSIONS, check_output_file
from ..pipeline.session import SessionOptions
from .options import (backend_options, check_batch_size, check_frame_limits, crop_choice, crop_options, dtype_name,
                      group, model_from_args, model_options, pick_device, pick_dtype)


def add_parser(sub) -> None:
    head = group()
    head.add_argument("--source", required=True, help="source image (a photo with a face)")
    head.add_argument("--driving", required=True, help="driving video (a face moving); its audio is kept")
    head.add_argument("-o", "--output", required=True, help=f"output video ({', '.join(VIDEO_EXTENSIONS)}; H.264)")
    head.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p = sub.add_parser("animate", help="animate a still face with a driving video",
                       parents=[head, model_options(), crop_options(), backend_options()])
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: apply the driver's motion since its first face frame (default)")
    p.add_argument("--best-frame", action="store_true", help="measure relative motion from the driving frame whose "
                   "face landmarks are closest to the source's (the released demo's --find_best_frame)")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not scale motion by the face-size ratio")
    p.add_argument("--panels", action="store_true", help="write source | driving | result side by side")
    p.add_argument("--max-frames", type=int, metavar="N", help="animate only the first N driving frames")
    p.add_argument("--max-seconds", type=float, metavar="S", help="animate only the first S seconds of the driver")
    p.add_argument("--batch-size", type=int, default=8, help="driving frames per model call (default 8); memory "
                   "grows with it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    check_output_file(args.output, VIDEO_EXTENSIONS, inputs=(args.source, args.driving), overwrite=args.overwrite)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    check_batch_size(args.batch_size)
    check_frame_limits(args)
    model, label = model_from_args(args, device)
    session = SessionOptions(crop=crop_choice(args), paste_back=args.paste_back, adapt_scale=not args.no_adapt_scale,
                             detect_every=args.detect_every)
    options = AnimateOptions(relative=args.mode == "relative", batch_size=args.batch_size, panels=args.panels,
                             label=label, max_frames=args.max_frames, max_seconds=args.max_seconds,
                             best_frame=args.best_frame, backend=args.backend, session=session)
    frames = animate_video(model, args.source, args.driving, args.output, options, dtype, progress=not args.quiet)
    print(f"wrote {args.output}: {frames} frames ({device.type}, {dtype_name(dtype)})")
