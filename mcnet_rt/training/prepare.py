"""`mcnet-rt prepare-data`: raw face videos -> the VoxCeleb training layout (root/{train,test}/<id>#<video>.mp4/
folders of PNG frames), cropped to a square around the face track at a fixed size.

The face is tracked with `mcnet_rt.faces` (MediaPipe detection, confirmed by FaceMesh, followed by overlap), and
only frames in which it was seen are written: a clip whose face leaves and comes back is split into one folder per
run of face frames, named as VoxCeleb names clips, `<id>#<video>#<first frame>#<end frame>.mp4`, unless one run
covers the whole clip. Within a run the crop square is steadied over time so that it does not jitter. Videos that
cannot be read or show a face in too few frames are skipped and reported; they never stop the run.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..errors import InputError
from ..faces import CropTransform, FaceTracker, crop_frame, face_runs, track_clip
from ..io.video import VIDEO_SUFFIXES, read_frames

MAX_MARGIN = 4.0  # a crop 9× the face box: beyond that the face is a dot
MAX_SIZE = 4096


@dataclass(frozen=True)
class PrepareOptions:
    size: int = 256
    margin: float = 0.4  # the square's side is the face box's larger side × (1 + 2·margin)
    max_frames: int = 0  # per video; 0: all
    test_fraction: float = 0.0  # of the identities, held out in test/
    min_face_fraction: float = 0.5  # skip videos with a face in fewer of their frames
    min_run_frames: int = 8  # shorter runs of face frames are left out (a training pair needs a stretch of motion)
    steady_frames: int = 15  # moving-average window over the crop squares of a run (steadying)

    def check(self) -> None:
        """Refuse values that would write nothing sensible, naming the option."""
        problems = {}
        if not 32 <= self.size <= MAX_SIZE:
            problems["size"] = f"between 32 and {MAX_SIZE}, got {self.size}"
        if not (math.isfinite(self.margin) and 0 <= self.margin <= MAX_MARGIN):
            problems["margin"] = f"a number between 0 and {MAX_MARGIN:g}, got {self.margin}"
        if self.max_frames < 0:
            problems["max_frames"] = f"0 (all) or a positive count, got {self.max_frames}"
        if not (math.isfinite(self.test_fraction) and 0 <= self.test_fraction < 1):
            problems["test_fraction"] = f"at least 0 and below 1, got {self.test_fraction}"
        if not (math.isfinite(self.min_face_fraction) and 0 <= self.min_face_fraction <= 1):
            problems["min_face_fraction"] = f"between 0 and 1, got {self.min_face_fraction}"
        if problems:
            raise InputError("prepare-data: " + "; ".join(f"{name} must be {why}" for name, why in problems.items()),
                             options=tuple(problems))


@dataclass
class PrepareReport:
    written: list[Path] = field(default_factory=list)  # one folder per run of face frames
    existing: list[Path] = field(default_factory=list)  # videos whose folders an earlier run wrote
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    frames_written: int = 0
    frames_left_out: int = 0  # frames of written videos without a confirmed face, or in too short runs


def find_videos(raw_dir: Path) -> list[Path]:
    return sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def identity_and_name(raw_dir: Path, video: Path) -> tuple[str, str]:
    """The identity is the first sub-folder under RAW_DIR (raw_dir/<id>/…/clip.mp4), else the file's stem."""
    parts = video.relative_to(raw_dir).parts
    clean = lambda s: s.replace("#", "_")  # noqa: E731 - '#' separates the identity in the layout
    identity = clean(parts[0] if len(parts) > 1 else video.stem)
    return identity, f"{identity}#{clean(video.stem)}"


def output_names(raw_dir: Path, videos: list[Path]) -> dict[Path, tuple[str, str]]:
    """(identity, base name) per video; clips that would share a name (clip.mp4 and clip.mov, id/a/x.mp4 and
    id/b/x.mp4) get a short hash of their path appended, so that each is written."""
    names = {video: identity_and_name(raw_dir, video) for video in videos}
    counts = Counter(name for _, name in names.values())
    for video, (identity, name) in names.items():
        if counts[name] > 1:
            digest = hashlib.sha1(str(video.relative_to(raw_dir)).encode()).hexdigest()[:6]
            names[video] = identity, f"{name}~{digest}"
    return names


def is_test_identity(identity: str, fraction: float) -> bool:
    """A stable split: the same identity lands in the same split whatever else is in the folder."""
    digest = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


def already_written(split_dir: Path, base: str) -> bool:
    return (split_dir / f"{base}.mp4").is_dir() or any(split_dir.glob(f"{base}#*#*.mp4"))


def prepare_video(video: Path, split_dir: Path, base: str, tracker: FaceTracker,
                  options: PrepareOptions) -> tuple[list[Path], int, int]:
    """Write one video's face runs as frame folders in split_dir (all of them or none); returns the folders, the
    frames written and the frames left out."""
    squares, frame_size = track_clip(itertools.islice(read_frames(video), options.max_frames or None), tracker,
                                     options.steady_frames)
    found = sum(s is not None for s in squares)
    if found < max(1, options.min_face_fraction * len(squares)):
        raise InputError(f"no face found in {len(squares) - found} of {len(squares)} frames "
                         f"(the least fraction of frames with a face is {options.min_face_fraction:g})",
                         options=("min_face_fraction",))
    runs = face_runs(squares, options.min_run_frames)
    if not runs:
        raise InputError(f"no run of {options.min_run_frames} consecutive frames with a face")
    whole = runs == [(0, len(squares))]
    names = [f"{base}.mp4" if whole else f"{base}#{start:06d}#{stop:06d}.mp4" for start, stop in runs]
    partials = [split_dir.parent / f".{name}.partial" for name in names]
    run_of = {i: k for k, (start, stop) in enumerate(runs) for i in range(start, stop)}
    try:
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
        for i, frame in enumerate(itertools.islice(read_frames(video), runs[-1][1])):
            if i in run_of:
                transform = CropTransform.from_square(squares[i], frame_size, options.size)
                Image.fromarray(crop_frame(frame, transform)).save(
                    partials[run_of[i]] / f"{i - runs[run_of[i]][0]:07d}.png")
        split_dir.mkdir(exist_ok=True)
        targets = [split_dir / name for name in names]
        for partial, target in zip(partials, targets):
            os.replace(partial, target)
    except BaseException:
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    written = sum(stop - start for start, stop in runs)
    return targets, written, len(squares) - written


def _make_folder(path: Path) -> list[Path]:
    """Create `path` and its missing parents; return the folders created, outermost first."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; choose a folder for the prepared data")
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot create the output folder ({e.strerror})") from None
    return missing


def prepare_dataset(raw_dir: str | Path, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
                    progress: bool = True) -> PrepareReport:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    options.check()
    if not raw_dir.is_dir():
        raise InputError(f"{raw_dir}: folder of raw videos not found")
    videos = find_videos(raw_dir)
    if not videos:
        raise InputError(f"{raw_dir}: no videos found ({', '.join(VIDEO_SUFFIXES)})")
    created = _make_folder(out_dir)
    report = PrepareReport()
    try:
        tracker = FaceTracker(margin=options.margin)
        names = output_names(raw_dir, videos)
        bar = tqdm(videos, unit="video", disable=not progress, dynamic_ncols=True)
        for video in bar:
            identity, base = names[video]
            split_dir = out_dir / ("test" if is_test_identity(identity, options.test_fraction) else "train")
            bar.set_postfix_str(base, refresh=False)
            if already_written(split_dir, base):
                report.existing.append(video)
                continue
            try:
                folders, written, left_out = prepare_video(video, split_dir, base, tracker, options)
            except (InputError, OSError) as e:
                reason = str(e).removeprefix(f"{video}: ")
                report.skipped.append((video, reason))
                bar.write(f"skipped {video}: {reason}")
                continue
            report.written.extend(folders)
            report.frames_written += written
            report.frames_left_out += left_out
        if report.written or report.existing:
            for split in ("train", "test"):
                (out_dir / split).mkdir(exist_ok=True)
    finally:
        if not (report.written or report.existing):  # nothing usable: leave no empty folders behind
            for folder in reversed(created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return report
