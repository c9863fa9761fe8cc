"""`mcnet-rt evaluate`: the paper's metrics on same-identity reconstruction and cross-identity animation."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..io.atomic import check_new_directory
from .options import check_batch_size, model_from_args, model_options, pick_device, pick_dtype


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the paper's metrics: same-identity reconstruction, cross-identity animation",
                       parents=[model_options()])
    p.add_argument("--same-id", metavar="FOLDER", help="folder of test videos: first frame drives the rest")
    p.add_argument("--cross-id", metavar="CSV", help="pairs: 'source_frame,driving_video' or "
                   "'source,driving[,best_frame]' (the released formats)")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--limit", type=int, help="frames per video, or frame pairs, for quick runs")
    p.add_argument("--motion", choices=("relative", "absolute"), default="relative")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not scale motion by the face-size ratio")
    p.add_argument("--ssim", choices=("modern", "released"), default="modern",
                   help="released: old scikit-image compare_ssim (7x7 window, data_range 2), as the paper's code")
    p.add_argument("--lpips-unscaled", action="store_true",
                   help="feed [0,1] images to LPIPS unscaled, as the released metrics.py")
    p.add_argument("--akd-released", action="store_true",
                   help="AKD as mean absolute coordinate difference (released cmp_akd) instead of Euclidean")
    p.add_argument("--aed-squared", action="store_true",
                   help="AED as squared distance (released cmp_aed) instead of Euclidean")
    p.add_argument("--openface-weights", metavar="FILE", help="OpenFace nn4.small2 weights (not supported yet)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def check_request(args: argparse.Namespace) -> None:
    """Refuse what cannot be evaluated before any work."""
    if not (args.same_id or args.cross_id):
        raise InputError("nothing to evaluate: pass --same-id FOLDER (test videos) and/or --cross-id CSV (pairs)")
    check_new_directory(args.output)
    if args.openface_weights:
        raise InputError(f"{args.openface_weights}: OpenFace nn4.small2 embeddings are not supported yet (they "
                         "need a PyTorch port of the nn4.small2.v1 network to read these weights); AED uses dlib's "
                         "128-d embedding")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    check_batch_size(args.batch_size)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import protocols, report  # face models and matplotlib load only for this command

    check_request(args)
    videos = protocols.find_videos(args.same_id) if args.same_id else None
    pairs = protocols.read_pairs(args.cross_id) if args.cross_id else None
    device = pick_device(args.device)
    settings = protocols.Settings(
        ssim_mode=args.ssim, lpips_released_scaling=args.lpips_unscaled, akd_released=args.akd_released,
        aed_squared=args.aed_squared, motion=args.motion, adapt_scale=not args.no_adapt_scale,
        batch_size=args.batch_size, limit=args.limit, dtype=pick_dtype(args.precision, device))
    model, label = model_from_args(args, device)
    results = []
    if videos:
        results.append(protocols.same_identity(model, videos, settings, progress=not args.quiet))
    if pairs:
        results.append(protocols.cross_identity(model, *pairs, settings, progress=not args.quiet))
    header = {"model": args.checkpoint or f"untrained preset {args.untrained}", "warning": label,
              "device": device.type, "same_id": args.same_id, "cross_id": args.cross_id}
    report.write_report(args.output, header, settings, results)
    print(f"wrote {args.output}: results.json, results.md and plots "
          f"({', '.join(f'{r.name} {len(r.frame_ids)} frames' for r in results)})")
