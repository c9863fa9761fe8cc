"""The training loop of the released recipe: Adam for the generator and the keypoint detector, MultiStepLR per
epoch, gradient-norm clipping, non-finite steps skipped and counted, optional AMP, DDP under torchrun, atomic
checkpoints with exact resume, TensorBoard logs."""
from __future__ import annotations

import contextlib
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import checkpoint
from ..errors import CheckpointError, InputError
from ..models import MCNet
from . import state as ckpt
from .config import TrainConfig
from .data import EpochSampler, VideoFrameDataset
from .distributed import any_process, init_process, sync_batchnorm
from .losses import Objective
from .vgg import perceptual_network

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        self.dataset = VideoFrameDataset(c.data.root, model_config.image_size, c.data.augmentation, c.train.seed,
                                         c.data.id_sampling, c.data.num_repeats)
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
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, c.train.milestones, c.train.gamma)
                           for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.train.amp == "fp16")
        self.progress = Progress()
        self.stop_signal: int | None = None
        self.loader = DataLoader(self.dataset, batch_size=c.train.batch_size, sampler=self.sampler,
                                 num_workers=c.data.num_workers, drop_last=True,
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
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
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
        self.model.kp_detector.load_state_dict(state["kp_detector"])
        self.model.generator.load_state_dict(state["generator"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(state["step"], state["epoch"], state["batch"], state["skipped"])
        ckpt.set_rng_state(state["rng"])

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
        bar = tqdm(total=self.total_steps(), initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=not (main and c.log.progress))
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
                    for s in self.schedulers.values():
                        s.step()
                if main:
                    self._log(result, bar)
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
            checkpoint.save(self.model, self.log_dir / "final.safetensors")

    def _log(self, result: StepResult, bar: tqdm) -> None:
        c, step = self.config.log, self.progress.step
        bar.update(1)
        bar.set_postfix(loss=f"{result.total:.3f}", skipped=self.progress.skipped, refresh=False)
        if step % c.log_every == 0:
            for name, value in result.losses.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("loss/total", result.total, step)
            self.writer.add_scalar("train/grad_norm_generator", result.grad_norms[0], step)
            self.writer.add_scalar("train/grad_norm_kp_detector", result.grad_norms[1], step)
            self.writer.add_scalar("train/lr_generator", self.optimizers["generator"].param_groups[0]["lr"], step)
            self.writer.add_scalar("train/skipped_steps", self.progress.skipped, step)
            self.writer.add_scalar("train/epoch", self.progress.epoch, step)
        if step % c.image_every == 0 or step == 1:
            self.writer.add_image("source | driving | prediction | occlusion", self._grid(result), step)

    def _grid(self, result: StepResult) -> torch.Tensor:
        """Rows of up to 4 samples: source | driving | prediction | occlusion, as a (3, H, W) image."""
        v = result.visuals
        n = min(4, v["source"].shape[0])
        occlusion = F.interpolate(v["occlusion"][:n].float(), size=v["source"].shape[-2:], mode="bilinear",
                                  align_corners=False).expand(-1, 3, -1, -1)
        panels = [v["source"][:n], v["driving"][:n], v["prediction"][:n], occlusion]
        rows = torch.cat([p.float().cpu() for p in panels], dim=3)  # (n, 3, H, 4W)
        return torch.cat(list(rows), dim=1).clamp(0, 1)
