"""`mcnet-rt cluster`: serve's page on a running Ray cluster, one engine per GPU."""
from __future__ import annotations

import argparse
import functools

from .options import backend_options, face_options, group, model_options, number, port_number
from .serve import TOKEN_HELP, serve_session_functions, start_serving
from .signals import Terminated


def add_parser(sub) -> None:
    head = group()
    head.add_argument("--address", default="auto", help="the Ray cluster to join (default auto: the one started on "
                      "this machine with `ray start`)")
    head.add_argument("--host", default="127.0.0.1", help="address the page listens on (any non-loopback one needs "
                      "a token)")
    head.add_argument("--port", type=port_number, default=8080, help="TCP port of the page (default 8080; 0: any)")
    p = sub.add_parser("cluster", help="serve's page on a running Ray cluster: one engine per GPU, callers placed "
                       "on a GPU with a free slot", parents=[head, model_options(), face_options(), backend_options()])
    p.add_argument("--sessions-per-gpu", type=int, default=8, help="callers per GPU; when every GPU is full the "
                   "next caller is told to retry (default 8)")
    p.add_argument("--gpus", type=number(int, 1, what="a number of GPUs, at least 1"),
                   help="engines to start, one per GPU (default: every GPU in the cluster)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL", help="a stun: or turn: server "
                   "for the page and the engines (repeatable); needed when a GPU machine is behind NAT")
    p.add_argument("--ice-username", help="username for the turn: servers")
    p.add_argument("--ice-credential", help="credential for the turn: servers")
    p.add_argument("--token", help=TOKEN_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:

    token = start_serving(args, args.sessions_per_gpu, "--sessions-per-gpu")
    from ..cluster import deploy  # Ray loads only for this command

    raise Terminated(deploy.run(args, token, functools.partial(serve_session_functions, args)))
