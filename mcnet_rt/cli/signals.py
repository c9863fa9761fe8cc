"""SIGTERM and SIGHUP raised like Ctrl-C, so that every command's temporaries are removed on the way out; serve
and cluster raise `Terminated` themselves when their server stops on a signal, for the same exit status."""
from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (kill, timeout, a closed terminal), raised like Ctrl-C so that temporaries are removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def terminate(signum: int, frame) -> None:
    raise Terminated(signum)
