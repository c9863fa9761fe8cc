"""Validation during training (small preset, 64 px, CPU): metrics and the image grid in TensorBoard, the best
checkpoint, and held-out identities or clips."""
from __future__ import annotations

import io
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from mcnet_rt.errors import InputError
from mcnet_rt.training import state as train_state
from mcnet_rt.training.config import AugmentationSection, ValidationSection
from mcnet_rt.training.data import VideoFrameDataset, held_out_clips, split_videos
from mcnet_rt.training.trainer import Trainer
from mcnet_rt.training.validation import GRID_TAG, ValidationResult, Validator, is_improvement
from mcnet_rt.visualize.panels import LABEL_HEIGHT, TRAINING_PANELS, keypoint_colours
from support.training_fixtures import SIZE, held_out_identity_split, quick_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
import render_run  # noqa: E402


def test_validation_logs_metrics_and_grid_and_keeps_the_best_checkpoint(prepared, tmp_path):
    root = held_out_identity_split(prepared[0], tmp_path / "data")
    trainer = Trainer(quick_config(root, tmp_path / "run", "train.max_steps=3", "validation.every=1",
                                   "validation.pairs=2", "validation.grid_pairs=2",
                                   "validation.metrics=[l1, psnr, lpips, akd]", "validation.best_metric=psnr",
                                   "log.log_every=1"))
    trainer.run()
    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    board.Reload()
    logged = {name: [e.value for e in board.Scalars(f"validation/{name}")] for name in ("l1", "psnr", "lpips", "akd")}
    print("validation at steps 1-3:", logged)
    assert [e.step for e in board.Scalars("validation/l1")] == [1, 2, 3]
    assert all(0 < v < 1 for v in logged["l1"] + logged["lpips"]) and all(5 < v < 60 for v in logged["psnr"])
    missing = [e.value for e in board.Scalars("validation/akd_faces_missing")]
    assert all(m in (0, 1, 2) for m in missing)
    assert all(math.isnan(akd) == (m == 2) for akd, m in zip(logged["akd"], missing))  # NaN only without any face
    images = board.Images(GRID_TAG)
    assert [e.step for e in images] == [1, 2, 3]
    # 2 pairs × the training panels (visualize's renderer), each labelled above.
    assert (images[0].height, images[0].width) == (2 * (SIZE + LABEL_HEIGHT), len(TRAINING_PANELS) * SIZE)
    # The training step's images are drawn by the same renderer: keypoints in their fixed colours on the source.
    train_images = board.Images("train: " + " | ".join(TRAINING_PANELS))
    assert train_images[0].step == 1 and train_images[0].width == len(TRAINING_PANELS) * SIZE
    for image in (images[0], train_images[0]):
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        source_panel = pixels[LABEL_HEIGHT:SIZE + LABEL_HEIGHT, :SIZE].reshape(-1, 3)
        colours = keypoint_colours(trainer.model.config.num_kp)
        assert (source_panel[:, None] == colours[None]).all(-1).any(0).sum() >= 2  # keypoints overlap when untrained
    # best.pt is the step with the highest PSNR (higher is better), with that value recorded.
    best_step = max(range(3), key=lambda i: logged["psnr"][i]) + 1
    best = train_state.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["step"] == best["best"]["step"] == best_step and best["best"]["metric"] == "psnr"
    assert best["best"]["value"] == pytest.approx(logged["psnr"][best_step - 1], rel=1e-6)
    assert trainer.best == best["best"]
    # training/render_run.py draws the same log (loss, the four metrics, the latest grid) without a browser.
    picture = Image.open(render_run.render(tmp_path / "run", tmp_path / "run.png"))
    assert picture.width == 4 * 80 * 6 and picture.height == 9 * 80  # six panels of 4 in at 80 dpi, grid below


def test_the_best_metric_knows_which_way_is_better():
    assert is_improvement("lpips", 0.2, None) and is_improvement("lpips", 0.2, 0.3)
    assert not is_improvement("lpips", 0.3, 0.2) and not is_improvement("lpips", 0.2, 0.2)
    assert is_improvement("psnr", 25.0, 20.0) and not is_improvement("psnr", 20.0, 25.0)
    assert is_improvement("akd", 1.0, 2.0) and is_improvement("l1", 0.1, 0.2)
    assert not is_improvement("akd", math.nan, None) and not is_improvement("akd", math.nan, 2.0)


@pytest.mark.parametrize("metric, values, best_step", [("lpips", [0.3, 0.2, 0.25], 2), ("psnr", [20, 18, 22], 3),
                                                       ("akd", [math.nan, 3.0, 3.5], 2)])
def test_best_checkpoint_is_replaced_only_by_a_better_validation(prepared, tmp_path, metric, values, best_step):
    """The rule in the loop, with the validator's numbers scripted (a real validator's come out of training)."""
    root = held_out_identity_split(prepared[0], tmp_path / "data")
    trainer = Trainer(quick_config(root, tmp_path / "run", "validation.every=1", "validation.pairs=1",
                                   f"validation.metrics=[{metric}]", f"validation.best_metric={metric}"))
    trainer.writer = SummaryWriter(str(tmp_path / "run" / "tensorboard"))
    scripted = iter(values)
    trainer.validator = lambda model: ValidationResult({metric: next(scripted)}, np.zeros((8, 8, 3), np.uint8), 0)
    for step in (1, 2, 3):
        trainer.progress.step = step
        trainer.validate()
    trainer.writer.close()
    best = train_state.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["step"] == best_step and best["best"] == {"metric": metric, "value": values[best_step - 1],
                                                          "step": best_step}


def test_held_out_clips_leave_training_and_form_the_validation_pairs(prepared, tmp_path):
    """validation.holdout=clips: the last clip of each identity with several is validated on, not trained on."""
    webcam = prepared[0] / "train" / "webcam_man#single_face.mp4"
    frames = sorted(webcam.iterdir())
    for name, part in (("webcam_man#a.mp4", frames[:6]), ("webcam_man#b.mp4", frames[6:])):
        (tmp_path / "train" / name).mkdir(parents=True)
        for frame in part:
            shutil.copy(frame, tmp_path / "train" / name / frame.name)
    (tmp_path / "train" / "carphone#carphone.mp4").symlink_to(prepared[0] / "train" / "carphone#carphone.mp4")
    held_out = held_out_clips(split_videos(tmp_path, "train"))
    assert [v.name for v in held_out] == ["webcam_man#b.mp4"]  # carphone has one clip: it stays in training
    dataset = VideoFrameDataset(tmp_path, SIZE, AugmentationSection(), 0, exclude=held_out)
    assert [[v.name for v in group] for group in dataset.groups] == [["carphone#carphone.mp4"],
                                                                     ["webcam_man#a.mp4"]]
    validator = Validator(ValidationSection(holdout="clips", pairs=3), tmp_path, SIZE, seed=0)
    first = torch.from_numpy(np.array(Image.open(frames[6]))).float()
    assert validator.source.shape == (3, 3, SIZE, SIZE)
    assert torch.allclose(validator.source[0].permute(1, 2, 0) * 255, first, atol=0.5)  # source: the clip's frame 0
    assert not torch.equal(validator.source, validator.driving)


def test_validation_without_held_out_data_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(InputError, match="validation.holdout=clips, or validation.every=0"):
        Trainer(quick_config(prepared[0], tmp_path / "run", "validation.every=10"))
    with pytest.raises(InputError, match="no identity has more than one clip"):
        Trainer(quick_config(prepared[0], tmp_path / "run", "validation.every=10", "validation.holdout=clips"))
