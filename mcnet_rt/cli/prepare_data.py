"""`mcnet-rt prepare-data`: raw face videos cropped into the training layout."""
from __future__ import annotations

import argparse

from ..errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("prepare-data", help="crop raw face videos into the training layout (PNG frame folders)")
    p.add_argument("raw_dir", help="folder of videos; raw_dir/<identity>/<clip>.mp4 names identities")
    p.add_argument("out_dir", help="writes out_dir/{train,test}/<identity>#<clip>.mp4/0000000.png, ...; a clip "
                   "whose face leaves is split into <identity>#<clip>#<first>#<end>.mp4 folders of face frames")
    p.add_argument("--size", type=int, default=256, help="output frame size in pixels (default 256)")
    p.add_argument("--margin", type=float, default=0.4, help="crop side = face box × (1 + 2·margin)")
    p.add_argument("--max-frames", type=int, default=0, help="frames per video (default: all)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="share of identities held out in test/")
    p.add_argument("--min-face-fraction", type=float, default=0.5,
                   help="skip videos with a face in fewer than this share of their frames (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..training.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(size=args.size, margin=args.margin, max_frames=args.max_frames,
                             test_fraction=args.test_fraction, min_face_fraction=args.min_face_fraction)
    report = prepare_dataset(args.raw_dir, args.out_dir, options, progress=not args.quiet)
    print(f"{args.out_dir}: {len(report.written)} videos written ({report.frames_written} frames; "
          f"{report.frames_left_out} frames without a face left out), {len(report.existing)} already there, "
          f"{len(report.skipped)} skipped")
    for video, reason in report.skipped:
        print(f"  skipped {video}: {reason}")
    if not report.written and not report.existing:
        raise InputError(f"{args.raw_dir}: none of its {len(report.skipped)} videos could be used")
