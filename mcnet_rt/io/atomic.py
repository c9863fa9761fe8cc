"""Write outputs under a temporary name, so that a crash, Ctrl-C or kill never leaves a half-written file."""

import contextlib
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from mcnet_rt.errors import InputError

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_TMP_MARK = ".tmp-"
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

# Outputs renamed into place by this process, in order: an interrupt that arrives after the last one was
# committed finds the run's work done (the CLI then reports success, not "interrupted").
committed: list[Path] = []


def temporary_name(path: Path) -> Path:
    """A hidden sibling of `path` with its suffix (writers such as FFmpeg pick the format from it), short enough
    for the file system even when `path`'s own name is near the limit."""
    tail = f"{_TMP_MARK}{secrets.token_hex(4)}{path.suffix}"
    room = NAME_MAX - len(os.fsencode("." + tail))
    stem = os.fsencode(path.name)[:room].decode(errors="ignore")
    return path.with_name(f".{stem}{tail}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, cache: bool = False) -> Iterator[Path]:
    """Yield a temporary path that replaces `path` only if the block completes; otherwise delete it.

    The temporary lives in the same directory (so the final rename stays on one file system and is
    atomic) and is hidden. The block turns its own write failures into `write_failed` errors. A `cache` entry
    is not one of the run's outputs (see `committed`).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an output file name")
    tmp = temporary_name(path)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create files readable by the owner only
            _commit(tmp, path, cache)
        except OSError as e:
            raise write_failed(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _commit(tmp: Path, path: Path, cache: bool = False) -> None:
    """Rename `tmp` to `path` and record it (unless it is a cache entry), with interrupts held until both are
    done."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        os.replace(tmp, path)
        if not cache:
            committed.append(path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP while the block runs (in the main thread; elsewhere the block runs as
    is): a second stop request must not cut short the clean-up of the first, which would leave a temporary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _INTERRUPTS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_failed(path: Path, error: BaseException) -> InputError:
    """One line for a failed write (full disk, no permission, read-only file system), naming the output."""
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0] or type(error).__name__
    return InputError(f"{path}: cannot write the output ({reason})")


def check_new_directory(path: str | os.PathLike) -> Path:
    """Refuse an output folder that exists with contents (or as a file), or whose parent is missing.

    A folder of earlier results is never mixed with, or overwritten by, a new run; an empty one may be replaced.
    Call it before long work, so that the user learns at once.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise InputError(f"{path}: already exists; choose a new output folder or remove it")
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, cache: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes `path` (see check_new_directory) only if the block completes;
    otherwise delete it. Before the block runs, the temporary is created and an existing empty `path` is renamed
    and back, so that a folder that cannot be written to, or an output that cannot be replaced, is refused at
    once rather than after the work. A `cache` entry is not one of the run's outputs (see `committed`)."""
    path = check_new_directory(path)
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{token}")
    try:
        tmp.mkdir()
        if path.exists():
            aside = path.with_name(f".{path.name}.old-{token}")
            path.rename(aside)
            aside.rename(path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{path}: cannot write the output folder there ({e.strerror or e})") from None
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        _commit(tmp, path, cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
