"""Notes to the user: one line on stderr, "mcnet-rt: ...", printed above any progress bar rather than through it."""
from __future__ import annotations

import sys

from tqdm import tqdm


def note(message: str) -> None:
    """Tell the user `message` (a choice made for them, a fallback, a status line) without stopping."""
    tqdm.write(f"mcnet-rt: {message}", file=sys.stderr)
    sys.stderr.flush()
