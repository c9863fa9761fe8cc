"""The training loop of the released recipe: Adam for the generator and the keypoint detector, MultiStepLR per
epoch (with an optional warm-up), gradient-norm clipping, non-finite steps skipped and counted, optional AMP and
weight averaging, DDP under torchrun, atomic checkpoints with exact resume, validation on held-out clips with the
best checkpoint kept, TensorBoard logs."""
from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import CheckpointError, InputError
from .. import checkpoint as ckpt_io
from ..models import MCNet
from ..visualize.panels import TRAINING_PANELS, draw_grid, samples
from . import state as ckpt
from .config import TrainConfig, describe, differences
from .data import EpochSampler, VideoFrameDataset, held_out_clips, split_videos
from .distributed import any_process, init_process, sync_batchnorm
from .ema import WeightAverage
from .losses import Objective
from .schedule import set_learning_rates
from .validation import GRID_TAG, Validator, is_improvement
from .vgg import perceptual_network

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Settings that fix which items each step sees: a resume with other values would not continue the same run.
DATA_ORDER = ("train.batch_size", "train.seed", "data.num_repeats", "data.id_sampling", "validation.holdout")


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already trained on
    skipped: int = 0  # steps whose loss or gradient was not finite


@dataclass
class StepResult:
    losses: dict[str, float]
    total: float
    skipped: bool
    grad_norms: tuple[float, float]
    visuals: dict[str, torch.Tensor] = field(default_factory=dict)


def initial_weights(path: str, config) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint at `path`, which must hold a model of `config` (memory noise aside)."""
    loaded = ckpt_io.load(path)
    if loaded.config.with_memory_noise(False) != config.with_memory_noise(False):
        raise InputError(f"config model.init={path}: holds a {loaded.config.image_size} px model of another "
                         "configuration than model.preset/model.image_size; convert it first (mcnet-rt convert "
                         "--upscale-to PRESET)")
    return loaded.state_dict()


class Trainer:
    """Everything one process holds; `run()` trains until the epochs or `train.max_steps` are done, or a signal."""

    def __init__(self, config: TrainConfig, resume: str | None = None):
        self.config = config
        c = config
        self.process, self.device = init_process(c.train.device)
        if c.train.amp == "fp16" and self.device.type != "cuda":
            raise InputError("config train.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
        if c.train.amp != "none" and c.train.dtype != "float32":
            raise InputError(f"config train.amp={c.train.amp} needs train.dtype=float32, not {c.train.dtype}")
        self.dtype = getattr(torch, c.train.dtype)
        model_config = c.model_config()
        # Data first: a missing or empty dataset is reported before any network is built.
        held_out = (held_out_clips(split_videos(c.data.root, "train")) if c.validation.holdout == "clips" else [])
        self.dataset = VideoFrameDataset(c.data.root, model_config.image_size, c.data.augmentation, c.train.seed,
                                         c.data.id_sampling, c.data.num_repeats, exclude=held_out)
        self.validator = (Validator(c.validation, c.data.root, model_config.image_size, c.train.seed)
                          if c.validation.every else None)
        self.sampler = EpochSampler(len(self.dataset), c.train.batch_size, c.train.seed, self.process.rank,
                                    self.process.world_size)
        self.log_dir = Path(c.log.dir)
        self.checkpoint_dir = self.log_dir / "checkpoints"
        resume_path = self._resume_path(resume)

        torch.manual_seed(c.train.seed)
        np.random.seed(c.train.seed)
        random.seed(c.train.seed)
        self.model = MCNet(model_config).to(self.device, self.dtype).train()
        # Only the released noise uses this weight; with the noise off it would get no gradient, which DDP rejects.
        self.model.generator.memory.iicm.noise_strength.requires_grad_(c.model.memory_noise)
        if c.model.init and resume_path is None:
            self.model.load_state_dict(initial_weights(c.model.init, model_config))
        self.average = WeightAverage(self.model, c.train.ema) if c.train.ema else None
        vgg = perceptual_network(c.loss.vgg19_weights).to(self.device, self.dtype) if sum(c.loss.perceptual) else None
        objective = Objective(self.model, c.loss, vgg).to(self.device, self.dtype)
        if self.process.distributed:
            if c.train.sync_batchnorm:
                sync_batchnorm(self.model, self.device)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            objective = DistributedDataParallel(objective, device_ids=device_ids)
        self.objective = objective
        betas = tuple(c.train.betas)
        self.optimizers = {
            "generator": torch.optim.Adam(self.model.generator.parameters(), c.train.lr_generator, betas),
            "kp_detector": torch.optim.Adam(self.model.kp_detector.parameters(), c.train.lr_kp_detector, betas),
        }
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.train.amp == "fp16")
        self.progress = Progress()
        self.best: dict | None = None  # {"metric", "value", "step"} of the best validation so far
        self.stop_signal: int | None = None
        self.loader = DataLoader(self.dataset, batch_size=c.train.batch_size, sampler=self.sampler,
                                 num_workers=c.data.num_workers, drop_last=True,
                                 persistent_workers=c.data.persistent_workers and c.data.num_workers > 0,
                                 pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(c.train.seed + self.process.rank))
        if resume_path is not None:
            self.restore(ckpt.load(resume_path))
        self.writer = None

    # ------------------------------------------------------------------------------------------ state

    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            found = ckpt.list_checkpoints(self.checkpoint_dir)
            return found[-1] if found else None
        return Path(resume)

    def state(self) -> dict:
        return {
            "format": "mcnet_rt-train",
            "model_config": self.model.config.to_json(),
            "config": self.config.to_yaml(),
            "kp_detector": self.model.kp_detector.state_dict(),
            "generator": self.model.generator.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "ema": self.average.state_dict() if self.average else {},
            "best": self.best or {},
            "scaler": self.scaler.state_dict(),
            "step": self.progress.step, "epoch": self.progress.epoch, "batch": self.progress.batch,
            "skipped": self.progress.skipped,
            "world_size": self.process.world_size,
            "rng": ckpt.rng_state(),
        }

    def restore(self, state: dict) -> None:
        if state["model_config"] != self.model.config.to_json():
            raise CheckpointError("the checkpoint's model configuration differs from this config's (model.preset, "
                                  "model.image_size); resume with the config it was trained with")
        if state["world_size"] != self.process.world_size:
            raise CheckpointError(f"the checkpoint was written by {state['world_size']} processes; resume with as many "
                                  "(the data order depends on it)")
        self._check_changes(state)
        self.model.kp_detector.load_state_dict(state["kp_detector"])
        self.model.generator.load_state_dict(state["generator"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(state["step"], state["epoch"], state["batch"], state["skipped"])
        ckpt.set_rng_state(state["rng"])
        if self.average and state["ema"]:
            self.average.load_state_dict(state["ema"])
        elif self.average:
            self.average = WeightAverage(self.model, self.config.train.ema)
            self.note(f"resume: the checkpoint has no weight average; train.ema starts it from step {state['step']}")
        best = state["best"]
        if best and best["metric"] == self.config.validation.best_metric:
            self.best = best
        elif best:
            self.note(f"resume: validation.best_metric is now {self.config.validation.best_metric}, not "
                      f"{best['metric']}; best.pt will be replaced at the next validation")

    def _check_changes(self, state: dict) -> None:
        """Refuse a resume that would change which items the steps see; report every other change of the
        configuration, which the resumed run applies (the learning-rate schedule included)."""
        changes = differences(yaml.safe_load(state["config"]), self.config.to_dict())
        refused = {k: v for k, v in changes.items() if k in DATA_ORDER}
        if refused:
            raise CheckpointError(f"these settings differ from the checkpoint's and would change the data order; "
                                  f"resume with the checkpoint's values:\n{describe(refused)}")
        if changes:
            self.note(f"resume: the configuration differs from the checkpoint's; from step {state['step']} on, this "
                      f"run applies:\n{describe(changes)}")

    def note(self, message: str) -> None:
        if self.process.main:
            print(message, flush=True)

    def save_checkpoint(self) -> Path | None:
        if not self.process.main:
            return None
        path = ckpt.checkpoint_path(self.checkpoint_dir, self.progress.step)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save(path, self.state(), self.config.log.keep_checkpoints)
        return path

    # ------------------------------------------------------------------------------------------ one step

    def autocast(self):
        if self.config.train.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.config.train.amp])

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepResult:
        set_learning_rates(self.optimizers, self.config.train, self.progress.step, self.progress.epoch)
        source = batch["source"].to(self.device, self.dtype, non_blocking=True)
        driving = batch["driving"].to(self.device, self.dtype, non_blocking=True)
        with self.autocast():
            losses, visuals = self.objective(source, driving, batch["seed"])
        total = sum(losses.values())
        self.scaler.scale(total).backward()
        for opt in self.optimizers.values():
            self.scaler.unscale_(opt)
        clip = self.config.train.clip_grad_norm
        norms = (torch.nn.utils.clip_grad_norm_(self.model.generator.parameters(), clip),
                 torch.nn.utils.clip_grad_norm_(self.model.kp_detector.parameters(), clip))
        finite = bool(torch.isfinite(total).item()) and all(bool(torch.isfinite(n).item()) for n in norms)
        skipped = any_process(not finite, self.process, self.device)
        if skipped:
            self.progress.skipped += 1
        else:
            for opt in self.optimizers.values():
                self.scaler.step(opt)
            if self.average:
                self.average.update(self.model)
        self.scaler.update()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.progress.step += 1
        visuals.update(source=source.detach(), driving=driving.detach())
        return StepResult({k: v.item() for k, v in losses.items()}, total.item(), skipped,
                          (norms[0].item(), norms[1].item()), visuals)

    # ------------------------------------------------------------------------------------------ the loop

    def total_steps(self) -> int:
        c = self.config.train
        planned = c.epochs * self.sampler.batches_per_epoch
        return min(planned, c.max_steps) if c.max_steps else planned

    def _finished(self) -> bool:
        return self.progress.step >= self.total_steps() or self.progress.epoch >= self.config.train.epochs

    def _on_signal(self, signum, _frame) -> None:
        self.stop_signal = signum

    def run(self) -> Progress:
        """Train to the end (or a SIGTERM/SIGINT, after which the current step completes and a checkpoint is
        written); returns the progress reached."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._loop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.writer is not None:
                self.writer.close()
        return self.progress

    def _loop(self) -> None:
        c = self.config
        main = self.process.main
        if main:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "config.yaml").write_text(c.to_yaml())
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir / "tensorboard"))
        # tqdm's own rate is left out: the postfix shows the current step's loss, steps/s and frames/s.
        bar = tqdm(total=self.total_steps(), initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=not (main and c.log.progress),
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self._clock, self._step_seconds = time.perf_counter(), None
        last_saved = self.progress.step
        stop = self._finished()
        while not stop:
            self.sampler.set_epoch(self.progress.epoch, self.progress.batch)
            for batch in self.loader:
                result = self.train_step(batch)
                self.progress.batch += 1
                if self.progress.batch == self.sampler.batches_per_epoch:
                    self.progress.epoch += 1
                    self.progress.batch = 0
                if main:
                    self._log(result, bar)
                    if self.validator and self.progress.step % c.validation.every == 0:
                        self.validate()
                        self._clock = time.perf_counter()  # the validation's time is not the next step's
                stop = self._finished() or any_process(self.stop_signal is not None, self.process, self.device)
                if self.progress.step % c.log.checkpoint_every == 0 or stop:
                    self.save_checkpoint()
                    last_saved = self.progress.step
                if stop or self.progress.batch == 0:
                    break
        bar.close()
        if last_saved != self.progress.step:
            self.save_checkpoint()
        if main and self._finished():
            ckpt.export_model(self.state(), self.log_dir / "final.safetensors")

    def validated_model(self) -> MCNet:
        """The weights that validation measures and export writes by default: the average when there is one."""
        return self.average.model if self.average else self.model

    def validate(self) -> None:
        """Validation metrics and grid to TensorBoard; checkpoints/best.pt when `validation.best_metric` improved."""
        step, metric = self.progress.step, self.config.validation.best_metric
        result = self.validator(self.validated_model())
        for name, value in result.metrics.items():
            self.writer.add_scalar(f"validation/{name}", value, step)
        if "akd" in result.metrics:
            self.writer.add_scalar("validation/akd_faces_missing", result.faces_missing, step)
        self.writer.add_image(GRID_TAG, result.grid, step, dataformats="HWC")
        if is_improvement(metric, result.metrics[metric], self.best["value"] if self.best else None):
            self.best = {"metric": metric, "value": result.metrics[metric], "step": step}
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            ckpt.save(ckpt.best_path(self.checkpoint_dir), self.state(), self.config.log.keep_checkpoints)

    def _log(self, result: StepResult, bar: tqdm) -> None:
        c, step = self.config.log, self.progress.step
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        # Smoothed as tqdm smooths its rate: recent steps weigh most, one slow step does not dominate.
        self._step_seconds = seconds if self._step_seconds is None else 0.7 * self._step_seconds + 0.3 * seconds
        steps_per_s = 1 / self._step_seconds
        frames_per_s = steps_per_s * self.config.train.batch_size * self.process.world_size
        bar.set_postfix({"loss": f"{result.total:.3f}", "steps/s": f"{steps_per_s:.2f}",
                         "frames/s": f"{frames_per_s:.1f}", "skipped": self.progress.skipped}, refresh=False)
        bar.update(1)
        if step % c.log_every == 0:
            self.writer.add_scalar("train/steps_per_s", steps_per_s, step)
            self.writer.add_scalar("train/frames_per_s", frames_per_s, step)
            for name, value in result.losses.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("loss/total", result.total, step)
            self.writer.add_scalar("train/grad_norm_generator", result.grad_norms[0], step)
            self.writer.add_scalar("train/grad_norm_kp_detector", result.grad_norms[1], step)
            self.writer.add_scalar("train/lr_generator", self.optimizers["generator"].param_groups[0]["lr"], step)
            self.writer.add_scalar("train/skipped_steps", self.progress.skipped, step)
            self.writer.add_scalar("train/epoch", self.progress.epoch, step)
        if step % c.image_every == 0 or step == 1:
            self.writer.add_image("train: " + " | ".join(TRAINING_PANELS), self._grid(result), step,
                                  dataformats="HWC")

    def _grid(self, result: StepResult) -> np.ndarray:
        """Rows of up to 4 samples drawn as `mcnet-rt visualize` draws them (TRAINING_PANELS), (H, W, 3) uint8."""
        v = result.visuals
        rows = samples(v["source"][:4], v["driving"][:4], v["prediction"][:4], v["kp_source"], v["kp_driving"],
                       motion=v["motion"], deformed=v["deformed"])
        return draw_grid(rows, TRAINING_PANELS)
