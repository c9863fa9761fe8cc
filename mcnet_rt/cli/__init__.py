"""The `mcnet-rt` command: animate, visualize, live, export, convert, info, doctor, evaluate, prepare-data, serve,
cluster. Each command is a module here pairing `add_parser` with `run`; what they share is in `options`."""
from __future__ import annotations

import argparse
import signal
import sys

import torch

from .. import __version__
from ..errors import InputError
from ..io import atomic
from . import animate, cluster, convert, doctor, evaluate, export, info, live, prepare_data, serve, visualize
from .signals import terminate

COMMANDS = (animate, visualize, live, export, convert, info, doctor, evaluate, prepare_data, serve, cluster)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, in the form of every other refusal (exit status 2); --help shows the usage."""

    def error(self, message: str):
        self.exit(2, f"mcnet-rt: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mcnet-rt", description="Real-time MCNet talking-head animation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def flag(option: str) -> str:
    """The command line's spelling of a library setting: best_frame -> --best-frame."""
    return "--" + option.replace("_", "-")


def error_line(error: InputError, prog: str = "mcnet-rt") -> str:
    """The one line a refused input prints: the library's message, and the flags of the settings it names."""
    see = f" (see {', '.join(map(flag, error.options))})" if error.options else ""
    return f"{prog}: error: {error}{see}"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 2 refused input (one line on stderr), 128+signal interrupted.

    An interrupt leaves no output behind: whatever was being written is removed, and 'interrupted' is only said
    when nothing new was written (an interrupt arriving after the output was complete counts as done).
    """
    args = build_parser().parse_args(argv)
    handlers = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    committed_before = len(atomic.committed)
    try:
        args.func(args)
    except InputError as e:
        print(error_line(e), file=sys.stderr)
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
