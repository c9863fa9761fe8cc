"""`mcnet-rt serve`: a web page that turns the browser's camera into the avatar over WebRTC."""
from __future__ import annotations

import argparse
import logging

from ..engine import load_backend
from ..errors import InputError
from ..pipeline.session import SessionOptions
from ..pipeline.step import FrameStep
from .options import (backend_options, crop_choice, face_options, group, model_from_args, model_options, pick_device,
                      pick_dtype, port_number)
from .signals import Terminated

TOKEN_HELP = "access token (at least 16 characters); generated when binding a non-loopback address without one"


def add_parser(sub) -> None:
    head = group()
    head.add_argument("--host", default="127.0.0.1", help="address to listen on (any non-loopback one needs a token)")
    head.add_argument("--port", type=port_number, default=8080, help="TCP port (default 8080; 0: any free port)")
    p = sub.add_parser("serve", help="a web page that turns the browser's camera into the avatar over WebRTC",
                       parents=[head, model_options(), face_options(), backend_options()])
    p.add_argument("--max-sessions", type=int, default=8, help="callers served at once; the next is refused")
    p.add_argument("--token", help=TOKEN_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..serve import server  # aiohttp and aiortc load only for this command

    token = start_serving(args, args.max_sessions, "--max-sessions")
    app = server.build_app(*serve_session_functions(args), args.max_sessions, token)
    raise Terminated(server.serve(app, args.host, args.port, token))


def start_serving(args: argparse.Namespace, sessions: int, flag: str) -> str:
    """What `serve` and `cluster` do first: refuse fewer than one caller (`sessions`, set by `flag`), log at INFO,
    and return the access token for `args.host`."""
    from ..serve import security

    if sessions < 1:
        raise InputError(f"{flag} must be at least 1, got {sessions}")
    token = security.access_token(args.host, args.token)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return token


def serve_session_functions(args: argparse.Namespace):
    """(make_session, process) for the model options in `args`: `serve`'s, and each `cluster` replica's on its GPU."""
    from ..serve import server

    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    model, _ = model_from_args(args, device)
    step = load_backend(args.backend, FrameStep(model, dtype))
    options = SessionOptions(crop=crop_choice(args), detect_every=args.detect_every)
    return server.model_session_functions(model, step, dtype, options)
