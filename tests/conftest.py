import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import mcnet_rt  # noqa: E402
from official_fixture import official_checkpoint_dict  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> Path:
    """The equivalence fixture's weights written as an official MCNet .pth.tar."""
    path = tmp_path_factory.mktemp("official") / "mcnet_seed1.pth.tar"
    torch.save(official_checkpoint_dict(mcnet_rt.build_model("vox-256")), path)
    return path


@pytest.fixture
def small_model() -> mcnet_rt.MCNet:
    torch.manual_seed(0)
    return mcnet_rt.build_model("small")
