"""The paper's two evaluation protocols, run with any model the loader reads.

- Same identity (reconstruction): for every test video, the first frame is the source and every frame drives it;
  each generated frame is compared with the real one (L1, LPIPS, PSNR, SSIM at the model's resolution; AKD and
  AED at 256×256).
- Cross identity (animation): pairs from a CSV in one of the released formats (reference notes §4.3):
  `source_frame,driving_video` (the released `*_animate.csv`: a source image animated by a whole video) or
  `source,driving[,best_frame]` (the released `*_evaluation*.csv`: frame pairs). Each generated frame is compared
  with the source for identity (AED) and with the driving frame for expression (AU proxy) and head pose (PRMSE).
  Relative paths in the CSV are taken from the CSV's folder.

Motion is relative by default, as the released demo's `--relative --adapt_scale`: the anchor (the frame the
driver's motion is measured from) is a video's first frame, or a pair's `best_frame`. A pair without one is
anchored on its own driving frame, as the released `EvaluationDataset` does; relative motion then leaves the
source's pose, so such lists are meant for `motion="absolute"`.
"""
from __future__ import annotations

import csv
import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mcnet_rt import faces
from mcnet_rt.animate import AnimateOptions, Animator
from mcnet_rt.errors import InputError
from mcnet_rt.io.clips import clip_frames, frame_files
from mcnet_rt.io.frames import to_tensor
from mcnet_rt.io.image import fit_square, read_image
from mcnet_rt.io.messages import note
from mcnet_rt.io.video import VIDEO_SUFFIXES, probe_video
from mcnet_rt.iterables import batches
from mcnet_rt.models import MCNet
from mcnet_rt.pipeline.session import SessionOptions

from . import image_metrics, motion_metrics
from .perceptual import lpips

WORST_FRAMES = 4


@dataclass(frozen=True)
class Settings:
    """Everything that changes a number; written into the report next to the numbers."""

    ssim_mode: str = "modern"  # "released": old scikit-image compare_ssim (7×7 uniform window, data_range 2)
    lpips_released_scaling: bool = False  # True: [0, 1] images fed to LPIPS as the released metrics.py did
    akd_released: bool = False  # True: mean absolute coordinate difference (released cmp_akd)
    aed_squared: bool = False  # True: squared Euclidean distance (released cmp_aed)
    motion: str = "relative"
    adapt_scale: bool = True
    batch_size: int = 8
    limit: int | None = None  # frames per video (same identity, video pairs) or number of pairs (frame pairs)
    dtype: torch.dtype = torch.float32


@dataclass
class ProtocolResult:
    """Per-frame values of every metric of one protocol, and what the face models could not see."""

    name: str
    clips: list[dict] = field(default_factory=list)  # one entry per video / pair: names and frame counts
    frame_ids: list[tuple[int, int]] = field(default_factory=list)  # (clip number, frame number) per row
    values: dict[str, list[float]] = field(default_factory=dict)
    faces_not_found: dict[str, int] = field(default_factory=dict)  # "<role> (<model>)" -> frames
    worst: list = field(default_factory=list)  # heap of (score, counter, caption, panel image)
    notes: list[str] = field(default_factory=list)

    def add(self, clip: int, first_frame: int, metrics: dict[str, np.ndarray]) -> None:
        count = len(next(iter(metrics.values())))
        self.frame_ids.extend((clip, first_frame + i) for i in range(count))
        for name, values in metrics.items():
            self.values.setdefault(name, []).extend(float(v) for v in values)

    def count_missing(self, role: str, observations: list[faces.FaceObservation]) -> None:
        for model, attribute in (("FaceMesh", "mesh"), ("dlib", "dlib68")):
            key = f"{role} ({model})"
            missing = sum(getattr(o, attribute) is None for o in observations)
            self.faces_not_found[key] = self.faces_not_found.get(key, 0) + missing

    def keep_worst(self, scores: np.ndarray, captions: list[str], panels: Callable[[int], np.ndarray]) -> None:
        """Keep the WORST_FRAMES highest-scoring frames' panels (NaN scores are skipped)."""
        for i, score in enumerate(scores):
            if np.isnan(score):
                continue
            entry = (float(score), len(self.frame_ids) + i, captions[i])
            if len(self.worst) < WORST_FRAMES:
                heapq.heappush(self.worst, (*entry, panels(i)))
            elif entry[0] > self.worst[0][0]:
                heapq.heapreplace(self.worst, (*entry, panels(i)))


def _video_frames(path: Path, size: int, limit: int | None) -> Iterator[np.ndarray]:
    return itertools.islice((fit_square(f, size)[0] for f in clip_frames(path)), limit)


def _frame_count(path: Path) -> int:
    return len(frame_files(path)) if path.is_dir() else probe_video(path).num_frames


def _expected_frames(videos: list[Path], limit: int | None) -> int:
    """Frames the progress bar expects (container headers may not say: 0 then, which shows no total)."""
    counts = [_frame_count(v) for v in videos]
    if limit:
        counts = [min(n, limit) if n else limit for n in counts]
    return sum(counts)


def _options(settings: Settings) -> AnimateOptions:
    return AnimateOptions(relative=settings.motion == "relative", batch_size=settings.batch_size,
                          session=SessionOptions(adapt_scale=settings.adapt_scale))


def _panel(*images: np.ndarray) -> np.ndarray:
    return np.concatenate(images, axis=1)


def find_videos(folder: str | Path) -> list[Path]:
    """The test videos of a same-identity folder, sorted: video files, and folders of PNG/JPG frames as
    `prepare-data` writes them (its test/ split); each checked so that a bad one fails before any work."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of test videos")
    videos = sorted(p for p in folder.iterdir()
                    if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and frame_files(p)))
    if not videos:
        hint = (f"; a prepare-data output? pass its split, e.g. {folder / 'test'}"
                if (folder / "test").is_dir() or (folder / "train").is_dir() else "")
        raise InputError(f"{folder}: contains no videos ({', '.join(VIDEO_SUFFIXES)}) or folders of PNG/JPG "
                         f"frames{hint}")
    for video in videos:
        if video.is_file():
            probe_video(video)
    return videos


def same_identity(model: MCNet, videos: list[Path], settings: Settings, progress: bool = True) -> ProtocolResult:
    """Reconstruct every video from its first frame and compare each generated frame with the real one."""
    size = model.config.image_size
    result = ProtocolResult("same_identity")
    device = next(model.parameters()).device
    total = _expected_frames(videos, settings.limit)
    with tqdm(total=total or None, unit="frame", desc="same identity", disable=not progress) as bar:
        for clip, video in enumerate(videos):
            frames = _video_frames(video, size, settings.limit)
            source = next(frames)
            animator = Animator(model, source, _options(settings), settings.dtype)
            count = 0
            for batch in batches(itertools.chain([source], frames), settings.batch_size):
                real = np.stack(batch)
                generated = animator(real)
                g, r = to_tensor(generated, device), to_tensor(real, device)
                g_obs, r_obs = faces.observe_batch(generated), faces.observe_batch(real)
                result.count_missing("generated", g_obs)
                result.count_missing("real", r_obs)
                l1 = image_metrics.l1(g, r).cpu().numpy()
                result.add(clip, count, {
                    "l1": l1,
                    "lpips": lpips(g, r, settings.lpips_released_scaling).cpu().numpy(),
                    "psnr": image_metrics.psnr(g, r).cpu().numpy(),
                    "ssim": image_metrics.ssim(g, r, settings.ssim_mode).cpu().numpy(),
                    "akd_dlib": motion_metrics.akd(g_obs, r_obs, "dlib", settings.akd_released),
                    "akd_facemesh": motion_metrics.akd(g_obs, r_obs, "mediapipe", settings.akd_released),
                    "aed": motion_metrics.aed(g_obs, r_obs, settings.aed_squared),
                })
                result.keep_worst(l1, [f"{video.name} frame {count + i}: L1 {v:.4f}" for i, v in enumerate(l1)],
                                  lambda i: _panel(source, real[i], generated[i], real[i]))
                count += len(batch)
                bar.update(len(batch))
            result.clips.append({"video": str(video), "frames": count})
    return result


@dataclass(frozen=True)
class Pair:
    line: int
    source: Path
    driving: Path  # a video (video pairs) or an image (frame pairs)
    anchor: Path | None  # frame pairs: the best_frame column, if any


_FORMATS = {("source_frame", "driving_video"): "video", ("source", "driving"): "frames"}


def read_pairs(csv_path: str | Path) -> tuple[str, list[Pair]]:
    """("video" | "frames", pairs) from a released-format CSV; every file named must exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # spreadsheets save UTF-8 with a BOM
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{csv_path}: not a readable CSV file ({e})") from e
    header = [h.strip() for h in rows[0]] if rows else []
    kind = _FORMATS.get(tuple(header[:2]))
    if kind is None:
        raise InputError(f"{csv_path}: expected a header 'source_frame,driving_video' or "
                         f"'source,driving[,best_frame]', found {','.join(header) or 'an empty file'!r}")
    has_anchor = kind == "frames" and "best_frame" in header
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or (has_anchor and len(row) < 3):
            raise InputError(f"{csv_path}: line {line}: expected {len(header)} columns, found {len(row)}")
        paths = [csv_path.parent / cell.strip() for cell in row[:3 if has_anchor else 2]]
        for path in paths:
            if not path.is_file():
                raise InputError(f"{csv_path}: line {line}: {path}: file not found")
        pairs.append(Pair(line, paths[0], paths[1], paths[2] if has_anchor else None))
    if not pairs:
        raise InputError(f"{csv_path}: lists no pairs")
    if kind == "video":
        for pair in pairs:
            probe_video(pair.driving)
    return kind, pairs


def _source(path: Path, size: int) -> tuple[np.ndarray, faces.FaceObservation]:
    image = fit_square(read_image(path), size)[0]
    observation = faces.observe(image)
    if observation.embedding is None or observation.mesh is None:
        missing = " and ".join(m for m, v in (("dlib", observation.embedding), ("FaceMesh", observation.mesh))
                               if v is None)
        raise InputError(f"{path}: no face found in the source image ({missing})")
    return image, observation


def _cross_metrics(result: ProtocolResult, settings: Settings, clip: int, first: int,
                   source: tuple[np.ndarray, faces.FaceObservation], driving: np.ndarray, generated: np.ndarray,
                   anchor_obs: faces.FaceObservation, caption: str) -> None:
    source_image, source_obs = source
    g_obs, d_obs = faces.observe_batch(generated), faces.observe_batch(driving)
    result.count_missing("generated", g_obs)
    result.count_missing("driving", d_obs)
    pose = motion_metrics.pose_error(g_obs, d_obs)
    aed = motion_metrics.aed(g_obs, [source_obs] * len(g_obs), settings.aed_squared)
    result.add(clip, first, {
        "aed": aed,
        "au_proxy": motion_metrics.au_consistency(g_obs, d_obs, source_obs, anchor_obs),
        "prmse": pose,
    })
    result.keep_worst(pose, [f"{caption} frame {first + i}: pose error {v:.1f}°" for i, v in enumerate(pose)],
                      lambda i: _panel(source_image, driving[i], generated[i]))


def cross_identity(model: MCNet, kind: str, pairs: list[Pair], settings: Settings,
                   progress: bool = True) -> ProtocolResult:
    """Animate each pair's source with its driver; compare identity with the source, motion with the driver."""
    size = model.config.image_size
    result = ProtocolResult("cross_identity")
    if kind == "frames":
        pairs = pairs[: settings.limit]
        if settings.motion == "relative" and pairs[0].anchor is None:
            result.notes.append("the pair list has no best_frame column: each pair is anchored on its own driving "
                                "frame (as the released EvaluationDataset), so relative motion keeps the source's "
                                "pose; use motion='absolute' or a list with best_frame")
            note(f"note: {result.notes[-1]}")
    total = len(pairs) if kind == "frames" else _expected_frames([p.driving for p in pairs], settings.limit)
    with tqdm(total=total or None, unit="frame", desc="cross identity", disable=not progress) as bar:
        for clip, pair in enumerate(pairs):
            source = _source(pair.source, size)
            animator = Animator(model, source[0], _options(settings), settings.dtype)
            caption = f"{pair.source.name} by {pair.driving.name}"
            if kind == "frames":
                driving = fit_square(read_image(pair.driving), size)[0]
                anchor = driving if pair.anchor is None else fit_square(read_image(pair.anchor), size)[0]
                generated = animator(np.stack([anchor, driving]))[1:]
                _cross_metrics(result, settings, clip, 0, source, driving[None], generated, faces.observe(anchor),
                               caption)
                count = 1
                bar.update(1)
            else:
                frames = _video_frames(pair.driving, size, settings.limit)
                first = next(frames)
                anchor_obs = faces.observe(first)
                count = 0
                for batch in batches(itertools.chain([first], frames), settings.batch_size):
                    driving = np.stack(batch)
                    _cross_metrics(result, settings, clip, count, source, driving, animator(driving), anchor_obs,
                                   caption)
                    count += len(batch)
                    bar.update(len(batch))
            result.clips.append({"csv_line": pair.line, "source": str(pair.source), "driving": str(pair.driving),
                                 "anchor": str(pair.anchor) if pair.anchor else None, "frames": count})
    return result
