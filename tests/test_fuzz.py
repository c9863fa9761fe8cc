"""Seeded byte mutations of images, videos and checkpoints: the only allowed outcomes are success or a clean
InputError (CheckpointError for checkpoints), never another exception. A few hundred cases, seconds each kind."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mcnet_rt
from mcnet_rt.errors import CheckpointError, InputError
from mcnet_rt.io.image import read_image
from mcnet_rt.io.video import VideoWriter, probe_video, read_timed_frames
from support.media_fixtures import pattern, write_video

pytestmark = pytest.mark.slow


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip a few bytes, cut the file, insert junk, blank a run; half of the time near the start or the
    end, where headers, indexes (moov, zip directory) and metadata live."""
    data = bytearray(data)
    size = len(data)
    region = rng.choice(["anywhere", "start", "end"])
    low, high = {"anywhere": (0, size), "start": (0, min(size, 512)), "end": (max(0, size - 512), size)}[region]
    position = rng.randrange(low, high)
    operation = rng.choice(["flip", "flip", "cut", "insert", "blank"])
    if operation == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(low, high)] = rng.randrange(256)
    elif operation == "cut":
        del data[position:]
    elif operation == "insert":
        data[position:position] = rng.randbytes(rng.randint(1, 64))
    else:
        data[position:position + rng.randint(1, 256)] = bytes([rng.choice([0, 255])]) * rng.randint(1, 256)
    return bytes(data)


def cases(seed_files: list[Path], count: int, tmp_path: Path, seed: int):
    rng = random.Random(seed)
    for index in range(count):
        original = seed_files[index % len(seed_files)]
        path = tmp_path / f"case{index}{''.join(original.suffixes)}"
        path.write_bytes(mutate(original.read_bytes(), rng))
        yield path


def outcome(action, path: Path, allowed=InputError) -> str:
    try:
        action(path)
    except allowed:
        return "refused"
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        pytest.fail(f"{path.name} ({path.stat().st_size} bytes): {type(e).__name__}: {e}")
    return "ok"


def test_mutated_images(tmp_path):
    seeds = []
    for suffix in (".png", ".jpg", ".gif", ".tif", ".webp", ".bmp"):
        seeds.append(tmp_path / f"seed{suffix}")
        Image.fromarray(pattern(3, 48)).save(seeds[-1])
    results = [outcome(read_image, path) for path in cases(seeds, 300, tmp_path, seed=11)]
    assert results.count("refused") > 20 and results.count("ok") > 20  # the mutations reach both outcomes


def _use_video(path: Path) -> None:
    probe_video(path)
    frames = [frame for frame, _ in zip(read_timed_frames(path), range(8))]
    with VideoWriter(path.with_name("out.mp4"), 25, 64, 64, audio_from=path) as writer:
        for frame, _ in frames[:2]:
            writer.write(np.ascontiguousarray(frame[:64, :64]) if min(frame.shape[:2]) >= 64 else pattern(0))


def test_mutated_videos(tmp_path):
    seeds = [write_video(tmp_path / "seed.mp4", frames=4, audio="aac", title="fuzz"),
             write_video(tmp_path / "seed.mkv", frames=4, audio="pcm_s16le"),
             write_video(tmp_path / "seed.avi", frames=4, audio="pcm_u8", audio_rate=11024)]
    results = [outcome(_use_video, path) for path in cases(seeds, 150, tmp_path, seed=12)]
    assert results.count("refused") > 5 and results.count("ok") > 5
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary output left by a failed write


@pytest.fixture(scope="module")
def checkpoint_seeds(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    model = mcnet_rt.build_model("small")
    mcnet_rt.save(model, folder / "seed.safetensors")
    mcnet_rt.save_official(model, folder / "seed.pth.tar")
    return [folder / "seed.safetensors", folder / "seed.pth.tar"]


def test_mutated_checkpoints(tmp_path, checkpoint_seeds):
    results = [outcome(mcnet_rt.load, path, CheckpointError) for path in cases(checkpoint_seeds, 40, tmp_path, 13)]
    assert results.count("refused") > 5
