"""Run by tests/test_training.py under torchrun (or alone): every process saves the gradient of the first batch
(averaged over processes by DDP) and its parameters after training a few steps, so that the test can compare
processes with each other and with a single process."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from support.training_fixtures import quick_config  # noqa: E402

from mcnet_rt.training.trainer import Trainer  # noqa: E402

root, log_dir, *overrides = sys.argv[1:]
trainer = Trainer(quick_config(Path(root), Path(log_dir), *overrides))
batch = next(iter(trainer.loader))
losses, _ = trainer.objective(batch["source"].to(trainer.dtype), batch["driving"].to(trainer.dtype), batch["seed"])
sum(losses.values()).backward()
grads = {f"grad.{k}": p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
trainer.model.zero_grad(set_to_none=True)
trainer.run()
state = grads | {f"{net}.{k}": v for net in ("kp_detector", "generator")
         for k, v in getattr(trainer.model, net).state_dict().items()}
torch.save(state, Path(log_dir) / f"params-rank{trainer.process.rank}.pt")
