"""Check that an input path is a regular file before a decoder opens it, so that the message says what it is."""
import os
import stat
from pathlib import Path

from mcnet_rt.errors import InputError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
          (stat.S_ISSOCK, "a socket"))


def check_input_file(path: str | os.PathLike) -> Path:
    """Return `path` if it is a regular file; otherwise an InputError says it is missing, a folder, or a
    FIFO, device or socket (which a decoder would block on or read forever)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a folder, expected a file")
    for is_kind, kind in _KINDS:
        if is_kind(mode):
            raise InputError(f"{path}: is {kind}, not a regular file")
    return path
