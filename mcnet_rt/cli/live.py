"""`mcnet-rt live`: an avatar driven from a camera or stream in real time, with the terminal's keys and SIGUSR1 as
its controls."""
from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import sys
import threading
from pathlib import Path

from ..engine import load_backend
from ..io import atomic
from ..io.image import read_image
from ..io.inputs import STREAM_SCHEMES, check_input
from ..io.messages import note
from ..io.outputs import check_output_file
from ..io.sinks import VIRTUAL_CAMERA
from ..io.video import STREAM_TIMEOUT
from ..pipeline.session import MAX_SMOOTHING, Session, SessionOptions
from ..pipeline.step import FrameStep
from .options import (backend_options, crop_choice, crop_options, dtype_name, frame_interval, group, model_from_args,
                      model_options, number, pick_device, pick_dtype)

SOURCE_CACHE = Path.home() / ".cache" / "mcnet_rt" / "sources"
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


def add_parser(sub) -> None:
    head = group()
    head.add_argument("--source", required=True, help="avatar image (a photo with a face)")
    camera = head.add_mutually_exclusive_group()
    camera.add_argument("--camera", type=number(int, 0, 1023, "a camera index from 0 to 1023"), default=0,
                        metavar="N", help="camera index (default 0)")
    camera.add_argument("--input", metavar="FILE_OR_URL", help="a video file (a path or file:// URL) or network "
                        f"stream ({', '.join(STREAM_SCHEMES)}) instead of a camera")
    head.add_argument("--input-timeout", type=number(float, 0.1, 3600, "seconds from 0.1 to 3600"),
                   default=STREAM_TIMEOUT, metavar="SECONDS", help="give a network stream up when it takes longer "
                   f"than this to connect or to send more data (default {STREAM_TIMEOUT:g})")
    head.add_argument("--output", default=VIRTUAL_CAMERA, metavar="SINK",
                   help=f"{VIRTUAL_CAMERA} (default; v4l2loopback on Linux, OBS Virtual Camera elsewhere), "
                   "FILE.mp4 (real timestamps; kept playable on Ctrl-C/SIGTERM) or null")
    head.add_argument("--overwrite", action="store_true", help="replace the output and --stats files if they exist")
    p = sub.add_parser("live", help="drive an avatar from a camera or stream in real time (virtual camera, file)",
                       parents=[head, model_options(), crop_options(), backend_options()])
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..io.capture import CameraCapture, StreamCapture
    from ..io.sinks import check_sink, open_sink
    from ..pipeline.live import LiveRunner

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
    options = SessionOptions(crop=crop_choice(args), paste_back=args.paste_back, output_size=args.output_size,
                             smoothing=args.smoothing, rate=capture.rate, detect_every=args.detect_every)
    session = Session(model, source, options, dtype, step=load_backend(args.backend, FrameStep(model, dtype)),
                      cache_dir=None if args.no_cache else args.cache_dir, source_name=args.source)
    sink = open_sink(args.output, *session.output_size, capture.rate)
    runner = LiveRunner(session, capture, sink, overlay=args.overlay, label=label,
                        max_frames=args.max_frames, lossless=bool(args.input) and args.no_pace)
    note(f"live from {args.input or f'camera {args.camera}'} to {args.output} ({device.type}, {dtype_name(dtype)}); "
         "press r (or send SIGUSR1) to reset the reference pose, Ctrl-C to stop")
    with contextlib.closing(session), reset_controls(runner):  # the session owns its tracker's MediaPipe graphs
        stats = runner.run()
    stats.update(device=device.type, dtype=dtype_name(dtype), batch=1,
                 input=args.input or f"camera {args.camera}", output_size=list(session.output_size),
                 model=args.checkpoint or f"untrained preset {args.untrained}")
    report(stats)
    if args.stats:
        with atomic.atomic_output(args.stats) as tmp:
            tmp.write_text(json.dumps(stats, indent=2))


def report(stats: dict) -> None:
    """The run's counts, fps and latency in one line."""
    latency = stats["latency"]
    note(f"{stats['frames_output']} frames out of {stats['frames_captured']} captured, {stats['fps']:.1f} fps, "
         f"latency p50 {latency.get('p50_ms', 0):.0f} ms p95 {latency.get('p95_ms', 0):.0f} ms p99 "
         f"{latency.get('p99_ms', 0):.0f} ms, dropped {stats['dropped_before_inference']} before and "
         f"{stats['dropped_before_output']} after inference, {stats['no_face_frames']} without a face")


@contextlib.contextmanager
def reset_controls(runner):
    """While the block runs, SIGUSR1 resets the reference pose (`runner.reset_reference`), and so does the key r
    when stdin is a terminal (q sets `runner.stop`). The terminal modules load only then: Windows has none."""
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: runner.reset_reference()) \
        if hasattr(signal, "SIGUSR1") else None
    restore = _keys_to(runner) if sys.stdin.isatty() else None
    try:
        yield
    finally:
        if restore is not None:
            restore()
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)


def _keys_to(runner):
    """Read single keys from the terminal on a thread; returns the function that gives the terminal back."""
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin)
    tty.setcbreak(sys.stdin)
    threading.Thread(target=_read_keys, args=(runner,), name="keys", daemon=True).start()
    return lambda: termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def _read_keys(runner) -> None:
    while not runner.stop.is_set():
        if select.select([sys.stdin], [], [], 0.2)[0]:
            key = sys.stdin.read(1).lower()
            if key == "r":
                runner.reset_reference()
            elif key == "q":
                runner.stop.set()
