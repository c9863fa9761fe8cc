"""Run by tests/test_training.py under torchrun (or alone): train a few steps, then every process saves its
parameters, so that the test can compare processes with each other and with a single process."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_fixtures import quick_config  # noqa: E402

from mcnet_rt.training.trainer import Trainer  # noqa: E402

root, log_dir, *overrides = sys.argv[1:]
trainer = Trainer(quick_config(Path(root), Path(log_dir), *overrides))
trainer.run()
state = {f"{net}.{k}": v for net in ("kp_detector", "generator")
         for k, v in getattr(trainer.model, net).state_dict().items()}
torch.save(state, Path(log_dir) / f"params-rank{trainer.process.rank}.pt")
