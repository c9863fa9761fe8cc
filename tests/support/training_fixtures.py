"""Shared set-up of the training tests: a real prepared dataset and a quick configuration."""
from __future__ import annotations

from pathlib import Path

from mcnet_rt.training.config import load_config

FRAMES = 12
SIZE = 64


def quick_config(root: Path, log_dir: Path, *overrides: str):
    """The small preset at 64 px on the CPU: one batch of 2, no workers, every loss of the released recipe, no
    validation (the tests of validation switch it on)."""
    return load_config(Path(__file__).parents[2] / "training" / "configs" / "small.yaml", [
        f"data.root={root}", f"log.dir={log_dir}", f"model.image_size={SIZE}", "loss.scales=[1, 0.5, 0.25]",
        "data.num_workers=0", "data.num_repeats=2", "train.batch_size=2", "train.device=cpu", "log.progress=false",
        "validation.every=0", *overrides])


def held_out_identity_split(prepared: Path, where: Path) -> Path:
    """A dataset whose train/ holds the webcam clip and whose test/ holds the carphone clip (another identity):
    links to the prepared clips."""
    for split, clip in (("train", "webcam_man#single_face.mp4"), ("test", "carphone#carphone.mp4")):
        (where / split).mkdir(parents=True)
        (where / split / clip).symlink_to(prepared / "train" / clip)
    return where
