"""The dataset and sampler the training loop reads (on clips prepared by prepare-data), the augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mcnet_rt.errors import InputError
from mcnet_rt.training.augment import adjust_hue, augment
from mcnet_rt.training.config import AugmentationSection
from mcnet_rt.training.data import EpochSampler, VideoFrameDataset
from support.training_fixtures import SIZE

NO_JITTER = AugmentationSection(horizontal_flip=False, time_flip=False, brightness=0, contrast=0, saturation=0, hue=0)


def test_dataset_items_are_a_function_of_their_key(prepared):
    root, _ = prepared
    data = VideoFrameDataset(root, SIZE, AugmentationSection(), seed=3, num_repeats=5)
    assert len(data) == 2 * 5  # two identities × repeats
    a, b, c = data[(0, 1)], data[(0, 1)], data[(1, 1)]
    assert a["source"].shape == a["driving"].shape == (3, SIZE, SIZE)
    assert 0 <= a["source"].min() and a["source"].max() <= 1
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["seed"], c["seed"])


def test_dataset_resizes_frames_to_the_model_size(prepared):
    root, _ = prepared
    item = VideoFrameDataset(root, 96, NO_JITTER, seed=0)[(0, 0)]
    assert item["source"].shape == (3, 96, 96)


@pytest.mark.parametrize("layout, message", [
    ("missing", "dataset folder not found"),
    ("no_train", "no train/ folder"),
    ("empty_train", "no videos"),
])
def test_dataset_errors_name_the_problem(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_train":
        (root / "train").mkdir()
    with pytest.raises(InputError, match=message):
        VideoFrameDataset(root, SIZE, NO_JITTER, seed=0)


def test_empty_video_folder_is_named(tmp_path):
    (tmp_path / "train" / "id1#clip.mp4").mkdir(parents=True)
    data = VideoFrameDataset(tmp_path, SIZE, NO_JITTER, seed=0)
    with pytest.raises(InputError, match=r"id1#clip.mp4: no PNG or JPG frames"):
        data[(0, 0)]


def test_sampler_splits_global_batches_across_processes_and_resumes():
    single = list(EpochSampler(10, batch_size=4, seed=1))
    ranks = [list(EpochSampler(10, batch_size=2, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 8 and all(len(r) == 4 for r in ranks)  # whole global batches only
    for b in range(2):  # global batch b = the same four items either way
        assert sorted(single[4 * b: 4 * b + 4]) == sorted(ranks[0][2 * b: 2 * b + 2] + ranks[1][2 * b: 2 * b + 2])
    resumed = EpochSampler(10, batch_size=4, seed=1)
    resumed.set_epoch(0, skip_batches=1)
    assert list(resumed) == single[4:]
    with pytest.raises(InputError, match="fewer than one global batch"):
        EpochSampler(3, batch_size=2, seed=1, world_size=2)


def test_hue_rotation_and_joint_flips():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    assert torch.allclose(adjust_hue(red, 1 / 3), torch.roll(red, 1, dims=1), atol=1e-6)  # red -> green
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(adjust_hue(x, 0.0), x, atol=1e-5)
    flips = AugmentationSection(brightness=0, contrast=0, saturation=0, hue=0)
    outcomes = set()
    for seed in range(40):
        y = augment(x, flips, np.random.default_rng(seed))
        outcomes.add(("time" if torch.equal(y, x.flip(0)) else "mirror" if torch.equal(y, x.flip(-1))
                      else "none" if torch.equal(y, x) else "other"))
    assert outcomes == {"time", "mirror", "none"}  # never both, as released
