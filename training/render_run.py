"""Render a training run's TensorBoard log to one PNG: the total loss, every validation metric, and the latest
validation grid (mcnet_rt.visualize.panels.TRAINING_PANELS), read from the event files without a browser.

    python training/render_run.py runs/small run.png
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from mcnet_rt.cli import error_line  # noqa: E402
from mcnet_rt.errors import InputError  # noqa: E402
from mcnet_rt.training.validation import GRID_TAG as GRID  # noqa: E402


def render(log_dir: Path, output: Path) -> Path:
    if not (log_dir / "tensorboard").is_dir():
        raise InputError(f"{log_dir}: no tensorboard/ folder (expected a training run's log.dir)")
    board = EventAccumulator(str(log_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    board.Reload()
    tags = board.Tags()
    if "loss/total" not in tags["scalars"]:
        raise InputError(f"{log_dir}: no training scalars under tensorboard/ (is this a training run's log.dir?)")
    panels = ["loss/total"] + sorted(t for t in tags["scalars"] if t.startswith("validation/"))
    has_grid = GRID in tags["images"]
    figure = plt.figure(figsize=(4 * len(panels), 4 + (5 if has_grid else 0)), dpi=80)
    rows = 2 if has_grid else 1
    for i, tag in enumerate(panels):
        axis = figure.add_subplot(rows, len(panels), i + 1)
        events = board.Scalars(tag)
        axis.plot([e.step for e in events], [e.value for e in events], marker="." if len(events) < 30 else None)
        axis.set_title(tag)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    if has_grid:
        latest = board.Images(GRID)[-1]
        axis = figure.add_subplot(rows, 1, 2)
        axis.imshow(Image.open(io.BytesIO(latest.encoded_image_string)))
        axis.set_title(f"{GRID}, step {latest.step}")
        axis.axis("off")
    figure.suptitle(f"{log_dir}")
    figure.tight_layout()
    figure.savefig(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path, help="the run's log.dir (holds tensorboard/)")
    parser.add_argument("output", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {render(args.log_dir, args.output)}")
    except InputError as e:
        print(error_line(e, "render_run.py"), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
