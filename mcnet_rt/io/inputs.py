"""Check an input before a decoder opens it, so that the message says what it is: a path must be a regular file
(a FIFO or device would block the decoder forever), and a URL must name a network stream or a local file."""
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mcnet_rt.errors import InputError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
          (stat.S_ISSOCK, "a socket"))
# Network streams FFmpeg reads with a connect/read timeout. Other schemes (FFmpeg's pipe, subfile, cache, concat
# and such) could reach local files, FIFOs or devices past check_input_file.
STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "rtp", "udp", "tcp")


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


def is_url(name: str | os.PathLike) -> bool:
    """A URL (rtsp://, http://, file://, ...) rather than a path."""
    return "://" in str(name)


def check_input(name: str | os.PathLike) -> Path | str:
    """A file as a checked Path (a file:// URL included: it gets the same checks), or a network stream URL
    (str); any other URL is an InputError."""
    if not is_url(name):
        return check_input_file(name)
    url = urlsplit(str(name))
    if url.scheme.lower() == "file":
        if url.netloc not in ("", "localhost"):
            raise InputError(f"{name}: a file URL on another host ({url.netloc}) cannot be read")
        return check_input_file(unquote(url.path))
    if url.scheme.lower() not in STREAM_SCHEMES:
        raise InputError(f"{name}: {url.scheme}:// is not a stream this tool reads; use a file or an "
                         f"{', '.join(STREAM_SCHEMES)} URL")
    return str(name)
