"""Check an output file before any model work, so that a bad `-o` fails in a second, not after the whole run.

One rule for every command that writes a file (animate, convert, live's file sink): the folder exists and can be
written to, the extension is one the writer supports, the name fits the file system, the output is none of the
inputs, and an existing file is replaced only when the user said --overwrite.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mcnet_rt.errors import InputError
from mcnet_rt.io.atomic import NAME_MAX, temporary_name

# Containers that take H.264 video and AAC/MP3 audio (FFmpeg refuses libx264 in .gif, .webm and image formats).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
# Less free space than this is a full disk for our outputs (a short 128 px video is already ~100 kB); refusing it
# up front saves computing a whole video whose write would fail. Writes can still fail later; they stop the run.
MIN_FREE_BYTES = 1 << 20


def check_output_file(path: str | os.PathLike, extensions: Iterable[str], inputs: Iterable[str | os.PathLike] = (),
                      overwrite: bool = False) -> Path:
    """Return `path` if a new file can be written there; otherwise raise an InputError that says why.

    `extensions` are the accepted name endings (".mp4", ".pth.tar"); `inputs` are the files the run reads, which
    the output must never replace.
    """
    path = Path(path)
    try:
        _check(path, tuple(extensions), inputs, overwrite)
    except OSError as e:  # e.g. a folder name longer than the file system allows
        raise InputError(f"{path}: not a usable output path ({e.strerror or e})") from None
    return path


def _check(path: Path, extensions: tuple[str, ...], inputs: Iterable[str | os.PathLike], overwrite: bool) -> None:
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise InputError(f"{path.parent / path.name[:40]}…: file name too long ({len(os.fsencode(path.name))} bytes; "
                         f"file systems allow {NAME_MAX})")
    if not path.name or path.is_dir():
        raise InputError(f"{path}: is a directory, expected an output file name")
    for given in inputs:
        if _same_file(path, Path(given)):
            raise InputError(f"{path}: is an input of this run ({given}); writing it would destroy the input, "
                             "choose another output name")
    if not path.name.lower().endswith(extensions):
        raise InputError(f"{path}: cannot write this file type; use {', '.join(extensions)}")
    folder = path.parent
    if not folder.exists():
        raise InputError(f"{folder}: output directory does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder, so {path.name} cannot be written in it")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; set overwrite to replace it", options=("overwrite",))
    _check_writable(path)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_writable(path: Path) -> None:
    """Create and delete the temporary the writer will use (permissions, read-only or immutable folders show up
    here), and look at the free space."""
    probe = temporary_name(path)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
        disk = os.statvfs(path.parent)
    except OSError as e:
        raise InputError(f"{path}: cannot write in {path.parent} ({e.strerror or e})") from None
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_BYTES:
        raise InputError(f"{path}: no space left in {path.parent} ({free // 1024} kB free)")
