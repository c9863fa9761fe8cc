"""The `mcnet-rt` command: animate, visualize, convert, info, doctor, evaluate, prepare-data, serve, cluster."""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import signal
import sys
from pathlib import Path

import torch

from . import __version__, checkpoint
from .animate import AnimateOptions, animate_video, note
from .config import PRESETS, preset
from .engine import add_backend_argument, load_backend
from .errors import InputError
from .io import atomic
from .io.atomic import check_new_directory
from .io.outputs import VIDEO_EXTENSIONS, check_output_file
from .models import MCNet
from .io.image import read_image
from .io.inputs import STREAM_SCHEMES, check_input
from .io.sinks import VIRTUAL_CAMERA
from .faces import ALIGNS, CROPS, CropOptions
from .io.video import STREAM_TIMEOUT
from .pipeline.session import MAX_SMOOTHING, Session, SessionOptions
from .precision import PRECISIONS
from .pipeline.step import FrameStep
from .profile import gflops_per_frame, parameter_counts

SOURCE_CACHE = Path.home() / ".cache" / "mcnet_rt" / "sources"
OFFICIAL_CHECKPOINT_HINT = (
    "the official MCNet vox-256 checkpoint is linked from the README of the authors' repository "
    "harlanhong/ICCV2023-MCNET on GitHub"
)


DEVICE_HELP = "auto, cpu, cuda or cuda:N"


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


def check_frame_limits(args: argparse.Namespace) -> None:
    """--max-frames and --max-seconds, where a command takes them."""
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.max_seconds is not None and not 0 < args.max_seconds < math.inf:
        raise InputError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds}")


def cmd_animate(args: argparse.Namespace) -> None:
    check_output_file(args.output, VIDEO_EXTENSIONS, inputs=(args.source, args.driving), overwrite=args.overwrite)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    check_batch_size(args.batch_size)
    check_frame_limits(args)
    model, label = model_from_args(args, device)
    options = AnimateOptions(relative=args.mode == "relative", adapt_scale=not args.no_adapt_scale,
                             batch_size=args.batch_size, panels=args.panels, label=label,
                             max_frames=args.max_frames, max_seconds=args.max_seconds, crop=args.crop,
                             paste_back=args.paste_back, detect_every=args.detect_every, face=args.face,
                             align=args.align,
                             best_frame=args.best_frame, backend=args.backend)
    frames = animate_video(model, args.source, args.driving, args.output, options, dtype,
                           progress=not args.quiet)
    print(f"wrote {args.output}: {frames} frames ({device.type}, {str(dtype).removeprefix('torch.')})")


def cmd_visualize(args: argparse.Namespace) -> None:
    from .visualize.panels import parse_panels
    from .visualize.runner import IMAGE_OUTPUTS, VisualizeOptions, check_request, visualize

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
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    model, label = model_from_args(args, device)
    if args.memory:
        from .visualize.memory import write_memory_figure

        write_memory_figure(model, args.source, args.output,
                            SessionOptions(crop=CropOptions(args.crop, face=args.face, align=args.align)),
                            args.height, label)
        print(f"wrote {args.output}: the meta-memory and its attention for {args.source}")
        return
    options = AnimateOptions(relative=args.mode == "relative", adapt_scale=not args.no_adapt_scale, label=label,
                             max_frames=args.max_frames, max_seconds=args.max_seconds, crop=args.crop,
                             detect_every=args.detect_every, face=args.face, align=args.align)
    rows = visualize(model, args.source, args.driving, args.output, options, VisualizeOptions(panels, args.height),
                     dtype, progress=not args.quiet)
    print(f"wrote {args.output}: {rows} row{'s' * (rows != 1)} of {', '.join(panels)} ({device.type}, "
          f"{str(dtype).removeprefix('torch.')}, eager)")


def add_weight_options(p: argparse.ArgumentParser) -> None:
    """The weights of every command that builds the model (see model_from_args)."""
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official .pth.tar or mcnet_rt .safetensors")
    weights.add_argument("--untrained", choices=sorted(PRESETS), help="random weights of a preset (pipeline test)")
    p.add_argument("--memory-noise", action="store_true",
                   help="restore the released code's random noise in the memory unit (non-deterministic)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The weights, device and precision options of every command that runs the model."""
    add_weight_options(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="auto: fp16 on CUDA, fp32 on the CPU")


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


def add_detect_every_option(p: argparse.ArgumentParser) -> None:
    """How often every command that tracks driving faces (SessionOptions.detect_every) runs the face detector."""
    p.add_argument("--detect-every", type=frame_interval, default=1, metavar="N",
                   help="run the face detector on every N-th driving frame and hold the crop in between (default 1: "
                   "every frame; larger is faster on the CPU, slower to follow fast head moves)")


def add_face_options(p: argparse.ArgumentParser) -> None:
    """Which face and how it is leveled (SessionOptions.face, .align): the same for animate, live and serve."""
    p.add_argument("--face", default="largest", metavar="N|largest|centre|left|right",
                   help="the face to animate when a photo or the first driving frame shows several: the largest "
                   "(default; a turned-away face counts for less), the nearest the centre, the leftmost, the "
                   "rightmost, or the N-th from the left (1 = leftmost; a driving frame with fewer faces uses its "
                   "largest); the avatar's choice is printed")
    p.add_argument("--align", choices=ALIGNS, default="roll",
                   help="roll: level tilted and sideways heads by their eyes before the model sees them and turn "
                   "them back on paste-back (default); none: upright crops as found")


def add_crop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crop", choices=CROPS, default="auto",
                   help="auto: find and track the faces (default); centre: the centre square; none: the whole frame")
    p.add_argument("--paste-back", action="store_true",
                   help="output the whole source image with the animated face in place")
    add_detect_every_option(p)
    add_face_options(p)


MAX_SIDE = 8192  # pixels per side of a typed output size: a frame of 8192x8192 is already 200 MB in RGB


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, each side 2 to MAX_SIDE pixels (an argparse type: refused at parse time, exit status 2)."""
    try:
        width, height = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if not (2 <= width <= MAX_SIDE and 2 <= height <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be 2 to {MAX_SIDE} pixels, got {text!r}")
    return width, height


def cmd_live(args: argparse.Namespace) -> None:
    from .io.capture import CameraCapture, StreamCapture
    from .io.sinks import check_sink, open_sink
    from .pipeline.live import LiveRunner, reset_controls

    inputs = (args.source, check_input(args.input)) if args.input else (args.source,)
    check_sink(args.output, args.overwrite, inputs)
    if args.stats:
        check_output_file(args.stats, (".json",), inputs, overwrite=args.overwrite)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    source = read_image(args.source)
    capture = StreamCapture(args.input, pace=not args.no_pace, loop=args.loop, timeout=args.input_timeout) \
        if args.input else CameraCapture(args.camera)
    model, label = model_from_args(args, device)
    options = SessionOptions(crop=CropOptions(args.crop, face=args.face, align=args.align),
                             paste_back=args.paste_back, output_size=args.output_size, smoothing=args.smoothing,
                             rate=capture.rate, detect_every=args.detect_every)
    session = Session(model, source, options, dtype, step=load_backend(args.backend, FrameStep(model, dtype)),
                      cache_dir=None if args.no_cache else args.cache_dir, source_name=args.source)
    sink = open_sink(args.output, *session.output_size, capture.rate)
    runner = LiveRunner(session, capture, sink, overlay=args.overlay, label=label,
                        max_frames=args.max_frames, lossless=bool(args.input) and args.no_pace)
    print(f"mcnet-rt: live from {args.input or f'camera {args.camera}'} to {args.output} "
          f"({device.type}, {str(dtype).removeprefix('torch.')}); press r (or send SIGUSR1) to reset the reference "
          "pose, Ctrl-C to stop", file=sys.stderr)
    with reset_controls(runner):
        stats = runner.run()
    stats.update(device=device.type, dtype=str(dtype).removeprefix("torch."), batch=1,
                 input=args.input or f"camera {args.camera}", output_size=list(session.output_size),
                 model=args.checkpoint or f"untrained preset {args.untrained}")
    latency = stats["latency"]
    print(f"mcnet-rt: {stats['frames_output']} frames out of {stats['frames_captured']} captured, "
          f"{stats['fps']:.1f} fps, latency p50 {latency.get('p50_ms', 0):.0f} ms p95 {latency.get('p95_ms', 0):.0f} "
          f"ms p99 {latency.get('p99_ms', 0):.0f} ms, dropped {stats['dropped_before_inference']} before and "
          f"{stats['dropped_before_output']} after inference, {stats['no_face_frames']} without a face",
          file=sys.stderr)
    if args.stats:
        with atomic.atomic_output(args.stats) as tmp:
            tmp.write_text(json.dumps(stats, indent=2))


BATCH_WARNING = 32


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch below 1 and warn above BATCH_WARNING: memory grows with every frame of a batch."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if batch_size > BATCH_WARNING:
        note(f"--batch-size {batch_size}: memory grows with each frame of a batch (measured on the CPU: the small "
             "preset needs 0.5 GB at batch 8 and 2.2 GB at 120; vox-256 2.8 GB at batch 8); above "
             f"{BATCH_WARNING} it rarely runs faster")


def cmd_export(args: argparse.Namespace) -> None:
    from .engine.onnx_export import export_folder

    def step() -> FrameStep:  # built after the output folder is checked
        model, _ = model_from_args(args, torch.device("cpu"))
        return FrameStep(model.eval(), PRECISIONS[args.precision], relative=args.mode == "relative")

    paths = export_folder(args.output, step, args.ops)
    print(f"wrote {', '.join(str(p) for p in paths.values())} ({args.ops} ops, {args.precision}, any batch)")


def cmd_convert(args: argparse.Namespace) -> None:
    output = check_output_file(args.output, (".safetensors", *checkpoint.OFFICIAL_EXTENSIONS), inputs=(args.input,),
                               overwrite=args.overwrite)
    target = preset(args.upscale_to) if args.upscale_to else None
    model = checkpoint.load(args.input)
    if target is not None:
        from .upscale import summary, upscale

        upscaled = upscale(model, target)
        model = upscaled.model
        print(f"{args.input} -> {args.upscale_to}: {summary(upscaled)}")
    if output.name.lower().endswith(".safetensors"):
        checkpoint.save(model, output)
    else:
        checkpoint.save_official(model, output)
    print(f"wrote {output}")


def print_kernel_report(as_json: bool) -> None:
    """Per op family: the architectures the kernels of `_ops.so` were compiled for, and what impl="auto" runs here
    and why."""
    from .ops import dispatch

    report = dispatch.report(pick_device("auto"))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    compiled = report["compiled"]
    print(f"device: {report['device']}")
    print("mcnet_rt/_ops.so CUDA code: " + (f"{', '.join(compiled['sass'])} + PTX {compiled['ptx']} (CUDA "
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


def cmd_doctor(args: argparse.Namespace) -> None:
    from . import doctor

    doctor.main()


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
    check_batch_size(args.batch_size)
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


def cmd_serve(args: argparse.Namespace) -> None:
    import logging

    from .serve import security, server  # aiohttp and aiortc load only for this command

    if args.max_sessions < 1:
        raise InputError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    token = security.access_token(args.host, args.token)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app = server.build_app(*serve_session_functions(args), args.max_sessions, token)
    raise Terminated(server.serve(app, args.host, args.port, token))


def serve_session_functions(args: argparse.Namespace):
    """(make_session, process) for the model options in `args`: `serve`'s, and each `cluster` replica's on its GPU."""
    from .serve import server

    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    model, _ = model_from_args(args, device)
    step = load_backend(args.backend, FrameStep(model, dtype))
    crop = CropOptions(face=args.face, align=args.align)
    return server.model_session_functions(model, step, dtype, SessionOptions(crop=crop,
                                                                             detect_every=args.detect_every))


def cmd_cluster(args: argparse.Namespace) -> None:
    import logging

    from .serve import security

    if args.sessions_per_gpu < 1:
        raise InputError(f"--sessions-per-gpu must be at least 1, got {args.sessions_per_gpu}")
    token = security.access_token(args.host, args.token)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .cluster import deploy  # Ray loads only for this command

    raise Terminated(deploy.run(args, token, functools.partial(serve_session_functions, args)))


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, in the form of every other refusal (exit status 2); --help shows the usage."""

    def error(self, message: str):
        self.exit(2, f"mcnet-rt: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mcnet-rt", description="Real-time MCNet talking-head animation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("animate", help="animate a still face with a driving video")
    p.add_argument("--source", required=True, help="source image (a photo with a face)")
    p.add_argument("--driving", required=True, help="driving video (a face moving); its audio is kept")
    p.add_argument("-o", "--output", required=True, help=f"output video ({', '.join(VIDEO_EXTENSIONS)}; H.264)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_model_options(p)
    add_crop_options(p)
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
    add_backend_argument(p)
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("visualize", help="draw keypoints, motion, occlusion, features and the meta-memory per frame")
    p.add_argument("--source", required=True, help="source image (a photo with a face)")
    p.add_argument("--driving", help="driving video, or a still image (one row, written as .png)")
    p.add_argument("-o", "--output", required=True, help=f"output: .png (one row per frame) or a video "
                   f"({', '.join(VIDEO_EXTENSIONS)}) with the driving video's timestamps")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--memory", action="store_true", help="instead: the learned meta-memory and, for --source, the "
                   "identity-conditioned memory and its attention at each scale (.png)")
    p.add_argument("--panels", default="all", help="comma-separated panels from source, driving, transferred, "
                   "sparse, mask, deformed, flow, occlusion, features, prediction (default all)")
    p.add_argument("--height", type=int, metavar="PX", help="panel height (default the model's image size)")
    add_model_options(p)
    add_crop_options(p)
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: apply the driver's motion since its first face frame (default)")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not scale motion by the face-size ratio")
    p.add_argument("--max-frames", type=int, metavar="N", help="draw only the first N driving frames")
    p.add_argument("--max-seconds", type=float, metavar="S", help="draw only the first S seconds of the driver")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_visualize)  # eager only: the extra outputs are not part of the exported step

    p = sub.add_parser("live", help="drive an avatar from a camera or stream in real time (virtual camera, file)")
    p.add_argument("--source", required=True, help="avatar image (a photo with a face)")
    camera = p.add_mutually_exclusive_group()
    camera.add_argument("--camera", type=number(int, 0, 1023, "a camera index from 0 to 1023"), default=0,
                        metavar="N", help="camera index (default 0)")
    camera.add_argument("--input", metavar="FILE_OR_URL", help="a video file (a path or file:// URL) or network "
                        f"stream ({', '.join(STREAM_SCHEMES)}) instead of a camera")
    p.add_argument("--input-timeout", type=number(float, 0.1, 3600, "seconds from 0.1 to 3600"),
                   default=STREAM_TIMEOUT, metavar="SECONDS", help="give a network stream up when it takes longer "
                   f"than this to connect or to send more data (default {STREAM_TIMEOUT:g})")
    p.add_argument("--output", default=VIRTUAL_CAMERA, metavar="SINK",
                   help=f"{VIRTUAL_CAMERA} (default; v4l2loopback on Linux, OBS Virtual Camera elsewhere), "
                   "FILE.mp4 (real timestamps; kept playable on Ctrl-C/SIGTERM) or null")
    p.add_argument("--overwrite", action="store_true", help="replace the output and --stats files if they exist")
    add_model_options(p)
    add_crop_options(p)
    p.add_argument("--output-size", type=parse_size, metavar="WxH", help="output frame size, 2 to "
                   f"{MAX_SIDE} pixels a side (default: the crop, or the avatar image with --paste-back)")
    p.add_argument("--smoothing", type=number(float, 0, MAX_SMOOTHING, f"seconds from 0 to {MAX_SMOOTHING:g}"),
                   default=0.05, metavar="SECONDS", help="One-Euro smoothing of the keypoints: time constant at rest "
                   f"(default 0.05; 0 = off; at most {MAX_SMOOTHING:g})")
    p.add_argument("--no-pace", action="store_true",
                   help="read --input as fast as the pipeline goes (every frame, none dropped) instead of at its rate")
    p.add_argument("--loop", action="store_true", help="start --input again at its end")
    p.add_argument("--max-frames", type=frame_interval, metavar="N", help="stop after N captured frames")
    p.add_argument("--overlay", action="store_true", help="draw fps and per-stage milliseconds on the output")
    p.add_argument("--stats", metavar="FILE.json", help="write latency percentiles, stage times, fps and drops")
    p.add_argument("--cache-dir", default=str(SOURCE_CACHE), help=f"prepared avatars (default {SOURCE_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="prepare the avatar afresh and keep nothing on disk")
    add_backend_argument(p)
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("export", help="ONNX graphs of the per-frame step: keypoints.onnx and render.onnx")
    add_weight_options(p)
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--ops", choices=("standard", "plugin"), default="standard",
                   help="standard: only standard ONNX ops; plugin: mcnet_rt custom nodes for the TensorRT plugins")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: mixed precision, float32 kept for keypoints, sampling coordinates and motion transfer")
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="convert between the official .pth.tar and mcnet_rt .safetensors")
    p.add_argument("input", help="official .pth.tar or mcnet_rt .safetensors checkpoint")
    p.add_argument("output", help=".safetensors (mcnet_rt, configuration in its metadata) or .pth.tar (official "
                   "layout; other configurations than vox-256 are stored as an extra entry)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--upscale-to", choices=sorted(PRESETS), metavar="PRESET", help="start a higher-resolution model "
                   "(e.g. vox-512 from a vox-256 checkpoint) for fine-tuning: the weights that have a place in it are "
                   "kept, the rest initialised; says which")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="configuration, parameter counts and GFLOPs per frame")
    p.add_argument("checkpoint", nargs="?", help="official .pth.tar or mcnet_rt .safetensors (default: a preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="vox-256", help="used when no checkpoint is given")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--kernels", action="store_true",
                   help="instead: the native kernels' architectures, and what impl=auto runs on this machine and why")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("doctor", help="what this machine gives mcnet_rt (GPU, torch, kernels, TensorRT, ONNX Runtime, "
                       "MediaPipe, virtual camera), with the command that fixes each missing piece")
    p.set_defaults(func=cmd_doctor)

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
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
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

    p = sub.add_parser("serve", help="a web page that turns the browser's camera into the avatar over WebRTC")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (any non-loopback one needs a token)")
    p.add_argument("--port", type=port_number, default=8080, help="TCP port (default 8080; 0: any free port)")
    add_model_options(p)
    add_detect_every_option(p)
    add_face_options(p)
    p.add_argument("--max-sessions", type=int, default=8, help="callers served at once; the next is refused")
    p.add_argument("--token", help="access token (at least 16 characters); generated when binding a non-loopback "
                   "address without one")
    add_backend_argument(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("cluster", help="serve's page on a running Ray cluster: one engine per GPU, callers placed "
                       "on a GPU with a free slot")
    p.add_argument("--address", default="auto", help="the Ray cluster to join (default auto: the one started on "
                   "this machine with `ray start`)")
    p.add_argument("--host", default="127.0.0.1", help="address the page listens on (any non-loopback one needs a "
                   "token)")
    p.add_argument("--port", type=port_number, default=8080, help="TCP port of the page (default 8080; 0: any)")
    add_model_options(p)
    add_detect_every_option(p)
    add_face_options(p)
    p.add_argument("--sessions-per-gpu", type=int, default=8, help="callers per GPU; when every GPU is full the "
                   "next caller is told to retry (default 8)")
    p.add_argument("--gpus", type=number(int, 1, what="a number of GPUs, at least 1"), help="engines to start, one per GPU (default: every GPU in the cluster)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL", help="a stun: or turn: server "
                   "for the page and the engines (repeatable); needed when a GPU machine is behind NAT")
    p.add_argument("--ice-username", help="username for the turn: servers")
    p.add_argument("--ice-credential", help="credential for the turn: servers")
    p.add_argument("--token", help="access token (at least 16 characters); generated when binding a non-loopback "
                   "address without one")
    add_backend_argument(p)
    p.set_defaults(func=cmd_cluster)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (kill, timeout, a closed terminal), raised like Ctrl-C so that temporaries are removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 2 refused input (one line on stderr), 128+signal interrupted.

    An interrupt leaves no output behind: whatever was being written is removed, and 'interrupted' is only said
    when nothing new was written (an interrupt arriving after the output was complete counts as done).
    """
    args = build_parser().parse_args(argv)
    handlers = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    committed_before = len(atomic.committed)
    try:
        args.func(args)
    except InputError as e:
        print(f"mcnet-rt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        written = atomic.committed[committed_before:]
        if written:
            print(f"mcnet-rt: interrupted after {written[-1]} was complete; it is kept", file=sys.stderr)
            return 0
        print("mcnet-rt: interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
