"""The training data: the VoxCeleb layout the released code reads, sampled as the released FramesDataset does.

Layout: `root/{train,test}/<id>#<video>.mp4/` folders of PNG (or JPG) frames, or `.mp4` files in their place
(slower: decoded whole). With identity sampling an epoch visits every identity `num_repeats` times, each time in a
random video of it; an item is two frames of one video (sorted, with replacement), flipped and jittered together.

Every item is a pure function of (seed, epoch, index): the sampler hands those keys to the dataset, so the data
do not depend on the number of DataLoader workers or processes, and a resumed run sees the same items.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import InputError
from ..io.clips import frame_files
from ..io.image import upright
from ..io.video import read_frames
from .augment import augment
from .config import AugmentationSection


def identity_of(video: Path) -> str:
    """VoxCeleb naming: the identity is the part of the name before the first '#'."""
    return video.name.split("#")[0]


def list_videos(split_dir: Path) -> list[Path]:
    """`<name>.mp4` entries of a split: frame folders or video files."""
    return sorted(p for p in split_dir.iterdir() if p.name.lower().endswith(".mp4"))


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(upright(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: unreadable frame ({e})") from None


def read_chosen(video: Path, choose: Callable[[int], Sequence[int]]) -> np.ndarray:
    """The frames `choose(number of frames)` picks, as an (N, H, W, 3) uint8 array."""
    if video.is_dir():
        frames = frame_files(video)
        if not frames:
            raise InputError(f"{video}: no PNG or JPG frames in this video folder")
        return np.stack([_read_rgb(frames[i]) for i in choose(len(frames))])
    frames = list(read_frames(video))
    return np.stack([frames[i] for i in choose(len(frames))])


def read_pair(video: Path, rng: np.random.Generator) -> np.ndarray:
    """Two frames (sorted indices, drawn with replacement) as a (2, H, W, 3) uint8 array."""
    return read_chosen(video, lambda n: np.sort(rng.integers(n, size=2)))


def to_model_size(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames as (N, 3, size, size) floats in [0, 1] (antialiased resize when needed)."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    if clip.shape[-2:] != (size, size):
        clip = F.interpolate(clip, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return clip


def split_videos(root: str | Path, split: str) -> list[Path]:
    """The videos of `root/split/`, with an error that names what is missing."""
    root = Path(root)
    if not str(root) or not root.is_dir():
        raise InputError(f"{root}: dataset folder not found (set data.root; `mcnet-rt prepare-data` makes one)")
    split_dir = root / split
    if not split_dir.is_dir():
        raise InputError(f"{root}: no {split}/ folder; expected {root}/{split}/<id>#<video>.mp4/ folders of PNG "
                         "frames (the layout `mcnet-rt prepare-data` writes)")
    videos = list_videos(split_dir)
    if not videos:
        raise InputError(f"{split_dir}: no videos (expected <id>#<video>.mp4 folders of PNG frames, or .mp4 files)")
    return videos


def held_out_clips(videos: list[Path]) -> list[Path]:
    """Validation by held-out clips: the last clip (by name) of every identity that has more than one."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for video in videos:
        groups[identity_of(video)].append(video)
    return [clips[-1] for _, clips in sorted(groups.items()) if len(clips) > 1]


class VideoFrameDataset(Dataset):
    """Items keyed by (epoch, index); returns source and driving frames (3, S, S) in [0, 1] and a seed for the
    per-sample random transform of the equivariance loss. `exclude`: videos held out for validation."""

    def __init__(self, root: str | Path, image_size: int, augmentation: AugmentationSection, seed: int,
                 id_sampling: bool = True, num_repeats: int = 1, split: str = "train", exclude: Sequence[Path] = ()):
        videos = [v for v in split_videos(root, split) if v not in set(exclude)]
        if not videos:
            raise InputError(f"{Path(root) / split}: every video is held out for validation; nothing to train on")
        groups: dict[str, list[Path]] = defaultdict(list)
        for video in videos:
            groups[identity_of(video) if id_sampling else video.name].append(video)
        self.groups = [groups[k] for k in sorted(groups)]
        self.image_size = image_size
        self.augmentation = augmentation
        self.seed = seed
        self.num_repeats = num_repeats

    def __len__(self) -> int:
        return len(self.groups) * self.num_repeats

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        group = self.groups[index % len(self.groups)]
        clip = augment(to_model_size(read_pair(group[rng.integers(len(group))], rng), self.image_size),
                       self.augmentation, rng)
        return {"source": clip[0].contiguous(), "driving": clip[1].contiguous(),
                "seed": torch.tensor(rng.integers(2 ** 62), dtype=torch.int64)}


class EpochSampler(Sampler):
    """A shuffled order per epoch, from (seed, epoch) alone, split across processes like DistributedSampler and
    cut to whole global batches; `set_epoch(epoch, skip_batches)` resumes in the middle of an epoch."""

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = length // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise InputError(f"the dataset has {length} items per epoch, fewer than one global batch of "
                             f"{batch_size * world_size} (batch size × processes): lower train.batch_size or raise "
                             "data.num_repeats")
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size

    def __iter__(self):
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        mine = order[: self.batches_per_epoch * self.batch_size * self.world_size][self.rank :: self.world_size]
        for index in mine[self.skip * self.batch_size :].tolist():
            yield self.epoch, index
