"""Additions to the released recipe and their resume rules (small preset, 64 px, CPU): learning-rate warm-up
composed with MultiStepLR, the weight average (EMA) and which weights export writes, a changed configuration on
resume, and the entry point's overrides report and thread count."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import mcnet_rt
from mcnet_rt.errors import CheckpointError, InputError
from mcnet_rt.training import state as train_state
from mcnet_rt.training.config import OptimSection
from mcnet_rt.training.schedule import lr_factor
from mcnet_rt.training.trainer import Trainer
from support.training_fixtures import quick_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
import train as train_entry  # noqa: E402

SMALL = Path(__file__).parents[1] / "training" / "configs" / "small.yaml"


def test_warm_up_multiplies_the_released_multistep_schedule():
    train = OptimSection(milestones=[1, 3], gamma=0.5, warmup_steps=4)
    # Steps 0-3 warm up linearly (1/4 … 4/4); epochs change every 2 steps here; milestones at epochs 1 and 3.
    epochs = [0, 0, 1, 1, 2, 2, 3, 3]
    assert [lr_factor(train, s, e) for s, e in enumerate(epochs)] == pytest.approx(
        [0.25, 0.5, 0.75 * 0.5, 1.0 * 0.5, 0.5, 0.5, 0.25, 0.25])
    # Without warm-up: the factors of torch's MultiStepLR, epoch by epoch.
    train.warmup_steps = 0
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    released = torch.optim.lr_scheduler.MultiStepLR(optimizer, train.milestones, train.gamma)
    for epoch in range(6):
        assert lr_factor(train, 100, epoch) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        released.step()


def test_the_loop_uses_the_warm_up_learning_rate(prepared, tmp_path):
    trainer = Trainer(quick_config(prepared[0], tmp_path / "run", "train.warmup_steps=4", "train.max_steps=1"))
    trainer.run()
    assert trainer.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2e-4 / 4)
    assert trainer.optimizers["kp_detector"].param_groups[0]["lr"] == pytest.approx(2e-4 / 4)


def test_weight_average_differs_from_the_raw_weights_and_export_picks_either(prepared, tmp_path):
    trainer = Trainer(quick_config(prepared[0], tmp_path / "run", "train.ema=0.75", "train.max_steps=1"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    raw, average = trainer.model.state_dict(), trainer.average.model.state_dict()
    weights = [k for k, _ in trainer.model.named_parameters() if not torch.equal(before[k], raw[k])]
    assert len(weights) > 50
    for k in weights:  # one update: 0.75 · initial + 0.25 · trained, not the trained weights
        assert torch.allclose(average[k], 0.75 * before[k] + 0.25 * raw[k], atol=1e-7)
        assert not torch.equal(average[k], raw[k])
    state = train_state.load(train_state.list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    # The run's final export and a default export hold the average, and say so; "raw" holds the last step's.
    for path, weights_kind, expected in ((tmp_path / "run" / "final.safetensors", "ema (decay 0.75)", average),
                                         (train_state.export_model(state, tmp_path / "ema.safetensors"),
                                          "ema (decay 0.75)", average),
                                         (train_state.export_model(state, tmp_path / "raw.safetensors", "raw"),
                                          "raw (last step, no weight average)", raw)):
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["weights"] == weights_kind
        loaded = mcnet_rt.load(path).state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in weights)
    official = train_state.export_model(state, tmp_path / "ema.pth.tar")
    assert torch.load(official, weights_only=True)["weights"] == "ema (decay 0.75)"


def test_export_of_a_run_without_average_says_raw_and_refuses_ema(prepared, tmp_path):
    trainer = Trainer(quick_config(prepared[0], tmp_path / "run", "train.max_steps=1"))
    state = trainer.state()
    with safe_open(str(train_state.export_model(state, tmp_path / "m.safetensors")), "pt") as f:
        assert f.metadata()["weights"] == "raw (last step, no weight average)"
    with pytest.raises(InputError, match="no weight average"):
        train_state.export_model(state, tmp_path / "m.safetensors", "ema")


def test_resume_applies_a_changed_schedule_and_refuses_a_changed_data_order(prepared, tmp_path, capsys):
    """Two steps (one epoch) with the milestone at epoch 5; resumed with the milestone at epoch 1 and other betas,
    the third step (epoch 1) runs at γ · lr with the new betas, and the run says what changed."""
    first = Trainer(quick_config(prepared[0], tmp_path / "run", "train.max_steps=2", "train.milestones=[5]"))
    first.run()
    assert first.progress.epoch == 1 and first.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2e-4)
    capsys.readouterr()
    resumed = Trainer(quick_config(prepared[0], tmp_path / "run", "train.max_steps=3", "train.milestones=[1]",
                                   "train.betas=[0.9, 0.99]"), resume="auto")
    printed = capsys.readouterr().out
    assert "the configuration differs from the checkpoint's; from step 2 on, this run applies:" in printed
    assert "train.milestones: [5] -> [1]" in printed and "train.betas: [0.5, 0.999] -> [0.9, 0.99]" in printed
    assert "train.max_steps: 2 -> 3" in printed
    resumed.run()
    for optimizer in resumed.optimizers.values():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-5)
        assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(CheckpointError, match=r"would change the data order(.|\n)*train.batch_size: 2 -> 1"):
        Trainer(quick_config(prepared[0], tmp_path / "run", "train.max_steps=4", "train.batch_size=1"), resume="auto")


def test_entry_point_prints_the_overrides_against_the_file_and_sets_threads(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        code = train_entry.main(["--config", str(SMALL), "--threads", "1", "--set", "train.lr_generator=1e-4",
                                 "--set", "train.batch_size=4", "--set", f"data.root={tmp_path / 'nowhere'}"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert code == 2 and "dataset folder not found" in captured.err  # the data are checked after the report
    assert captured.out.splitlines()[:3] == [f"overrides of {SMALL}:",
                                            f"  data.root: 'data/small' -> '{tmp_path / 'nowhere'}'",
                                            "  train.lr_generator: 0.0002 -> 0.0001"]  # batch_size 4: as in the file
    with pytest.raises(SystemExit):
        train_entry.parse(["--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err
