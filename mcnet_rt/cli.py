"""The `mcnet-rt` command: animate, convert, info, evaluate, prepare-data."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from . import checkpoint
from .animate import AnimateOptions, animate_video, note
from .pipeline import PRECISIONS, FrameStep
from .config import PRESETS, preset
from .engine import add_backend_argument
from .errors import InputError
from .io.atomic import check_new_directory
from .models import MCNet
from .profile import gflops_per_frame, parameter_counts

OFFICIAL_CHECKPOINT_HINT = (
    "the official MCNet vox-256 checkpoint is linked from the README of the authors' repository "
    "harlanhong/ICCV2023-MCNET on GitHub"
)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available (this torch build: {torch.__version__})")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return PRECISIONS[name]


def model_from_args(args: argparse.Namespace, device: torch.device) -> tuple[MCNet, str | None]:
    """The model to run and, for untrained weights, the label its output must carry."""
    if args.checkpoint:
        return checkpoint.load(args.checkpoint, device, memory_noise=args.memory_noise), None
    if args.untrained:
        config = preset(args.untrained).with_memory_noise(args.memory_noise)
        note(f"using UNTRAINED random weights (preset {args.untrained}); the output shows the pipeline working, "
             f"not a result of MCNet. For real results pass --checkpoint; {OFFICIAL_CHECKPOINT_HINT}")
        torch.manual_seed(0)
        return MCNet(config).to(device).eval(), "UNTRAINED WEIGHTS - NOT A RESULT"
    raise InputError(f"no checkpoint given: pass --checkpoint FILE ({OFFICIAL_CHECKPOINT_HINT}, or train one with "
                     "training/), or --untrained PRESET to exercise the pipeline with random weights")


def cmd_animate(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    model, label = model_from_args(args, device)
    options = AnimateOptions(relative=args.mode == "relative", adapt_scale=not args.no_adapt_scale,
                             batch_size=args.batch_size, panels=args.panels, label=label, backend=args.backend)
    frames = animate_video(model, args.source, args.driving, args.output, options, dtype,
                           progress=not args.quiet)
    print(f"wrote {args.output}: {frames} frames ({device.type}, {str(dtype).removeprefix('torch.')})")


def cmd_export(args: argparse.Namespace) -> None:
    from .engine.onnx_export import export_step

    if args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    output = check_new_directory(args.output)
    model, _ = model_from_args(args, torch.device("cpu"))
    step = FrameStep(model.eval(), relative=args.mode == "relative")
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))  # no half-written output
    try:
        export_step(step, partial, args.ops, args.batch)
        if output.exists():
            output.rmdir()
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    paths = [output / "detect.onnx", output / "render.onnx"]
    batch = "dynamic batch" if args.ops == "plugin" else f"batch {args.batch}"
    print(f"wrote {', '.join(str(p) for p in paths)} ({args.ops} ops, fp32, {batch})")


def cmd_convert(args: argparse.Namespace) -> None:
    model = checkpoint.load(args.input)
    output = Path(args.output)
    if output.suffix == ".safetensors":
        checkpoint.save(model, output)
    elif output.name.endswith((".pth.tar", ".pth", ".pt")):
        checkpoint.save_official(model, output)
    else:
        raise InputError(f"{output}: unknown output format; use .safetensors (ours) or .pth.tar (official layout)")
    print(f"wrote {output}")


def print_kernel_report(as_json: bool) -> None:
    """Per op family: the architectures `_C` was compiled for, and what impl="auto" runs here and why."""
    from .ops import dispatch

    report = dispatch.report(pick_device("auto"))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    compiled = report["compiled"]
    print(f"device: {report['device']}")
    print("mcnet_rt._C CUDA code: " + (f"{', '.join(compiled['sass'])} + PTX {compiled['ptx']} (CUDA "
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


def cmd_info(args: argparse.Namespace) -> None:
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


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import protocols, report  # face models and matplotlib load only for this command

    if not (args.same_id or args.cross_id):
        raise InputError("nothing to evaluate: pass --same-id FOLDER (test videos) and/or --cross-id CSV (pairs)")
    check_new_directory(args.output)
    if args.openface_weights:
        raise InputError(f"{args.openface_weights}: OpenFace nn4.small2 embeddings are not supported yet (they "
                         "need a PyTorch port of the nn4.small2.v1 network to read these weights); AED uses dlib's "
                         "128-d embedding")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
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


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from .training.prepare import PrepareOptions, prepare_dataset

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcnet-rt", description="Real-time MCNet talking-head animation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("animate", help="animate a still face with a driving video")
    p.add_argument("--source", required=True, help="source image (face-centred)")
    p.add_argument("--driving", required=True, help="driving video (face-centred); its audio is kept")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official .pth.tar or mcnet_rt .safetensors")
    weights.add_argument("--untrained", choices=sorted(PRESETS), help="random weights of a preset (pipeline test)")
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: apply the driver's motion since its first frame (default)")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not scale motion by the face-size ratio")
    p.add_argument("--panels", action="store_true", help="write source | driving | result side by side")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="auto: fp16 on CUDA, fp32 on the CPU")
    p.add_argument("--memory-noise", action="store_true",
                   help="restore the released code's random noise in the memory unit (non-deterministic)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_argument(p)
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("export", help="ONNX graphs of the per-frame step: detect.onnx and render.onnx")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official .pth.tar or mcnet_rt .safetensors")
    weights.add_argument("--untrained", choices=sorted(PRESETS), help="random weights of a preset (pipeline test)")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--ops", choices=("standard", "plugin"), default="standard",
                   help="standard: only standard ONNX ops; plugin: mcnet_rt custom nodes for the TensorRT plugins")
    p.add_argument("--batch", type=int, default=1, help="batch size of the standard graph (plugin: dynamic)")
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative")
    p.add_argument("--memory-noise", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="convert between the official .pth.tar and mcnet_rt .safetensors")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="configuration, parameter counts and GFLOPs per frame")
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("--preset", choices=sorted(PRESETS), default="vox-256", help="used when no checkpoint is given")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kernels", action="store_true",
                   help="instead: the native kernels' architectures, and what impl=auto runs on this machine and why")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("evaluate", help="the paper's metrics: same-identity reconstruction, cross-identity animation")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official .pth.tar or mcnet_rt .safetensors")
    weights.add_argument("--untrained", choices=sorted(PRESETS), help="random weights of a preset (pipeline test)")
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
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto")
    p.add_argument("--memory-noise", action="store_true", help="restore the released memory-unit noise")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

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
    p.set_defaults(func=cmd_prepare_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as e:
        print(f"mcnet-rt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcnet-rt: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
