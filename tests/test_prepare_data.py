"""`mcnet-rt prepare-data` on real clips: the VoxCeleb layout, only frames with a confirmed face, clips split where
the face leaves, names that never collide, and clean refusals that leave nothing behind."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from mcnet_rt.cli import main
from support.training_fixtures import FRAMES, SIZE


def run(*args) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["prepare-data", *map(str, args), "--quiet"])
    return code, printed.getvalue()


def test_writes_the_voxceleb_layout_and_skips_bad_videos(prepared, raw_videos):
    root, printed = prepared
    videos = sorted(p.name for p in (root / "train").iterdir())
    assert videos == ["carphone#carphone.mp4", "webcam_man#single_face.mp4"]
    for name in videos:
        frames = sorted((root / "train" / name).iterdir())
        assert [f.name for f in frames] == [f"{i:07d}.png" for i in range(FRAMES)]
        image = np.asarray(Image.open(frames[0]))
        assert image.shape == (SIZE, SIZE, 3) and image.std() > 20  # a real picture, not padding
    assert (root / "test").is_dir() and not any((root / "test").iterdir())
    assert (f"2 videos written ({2 * FRAMES} frames; 0 frames without a face left out), 0 already there, "
            "2 skipped") in printed
    assert f"{raw_videos / 'no_face.mp4'}: no face found in 12 of 12 frames" in printed
    assert f"{raw_videos / 'broken.mp4'}: not a readable video" in printed


def test_crop_follows_the_face(prepared):
    """The crop is centred on the face: skin-toned centre, and the track is smooth (neighbouring frames alike)."""
    root, _ = prepared
    frames = [np.asarray(Image.open(p), dtype=np.float32)
              for p in sorted((root / "train" / "webcam_man#single_face.mp4").iterdir())]
    centre = frames[0][SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4].reshape(-1, 3).mean(0)
    assert centre[0] > centre[2]  # skin: more red than blue
    assert max(np.abs(a - b).mean() for a, b in zip(frames, frames[1:])) < 20


def test_rejects_unusable_input(tmp_path, raw_videos, capsys):
    assert main(["prepare-data", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "folder of raw videos not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"junk")
    assert main(["prepare-data", str(bad), str(tmp_path / "out"), "--quiet"]) == 2
    assert "none of its 1 videos could be used" in capsys.readouterr().err


@pytest.mark.slow
def test_only_face_frames_are_written_and_clips_split_where_the_face_leaves(tmp_path, feat_data):
    """face_noface.mov: a face for 72 frames, then a cartoon title card (where BlazeFace fires at 0.6-0.7);
    noface_face.mov: the reverse, the face from frame 96. Only the face frames are written, as VoxCeleb-style
    <id>#<clip>#<first>#<end>.mp4 folders; the faces are real pictures, not text or padding."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("face_noface.mov", "noface_face.mov"):
        (raw / name).symlink_to(feat_data / name)
    out = tmp_path / "data"
    code, printed = run(raw, out, "--size", 32, "--max-frames", 110)  # noface_face: a face in 14 of 110 frames
    assert code == 0
    assert "noface_face.mov: no face found in 96 of 110 frames (the least fraction of frames with a face is 0.5)" in printed
    assert "1 videos written (72 frames; 38 frames without a face left out)" in printed
    code, printed = run(raw, out, "--size", 32, "--max-frames", 110, "--min-face-fraction", 0.1)
    assert code == 0 and "1 videos written (14 frames; 96 frames without a face left out), 1 already there" in printed
    folders = {p.name: len(list(p.iterdir())) for p in (out / "train").iterdir()}
    assert folders == {"face_noface#face_noface#000000#000072.mp4": 72,
                       "noface_face#noface_face#000096#000110.mp4": 14}
    last = np.asarray(Image.open(out / "train" / "face_noface#face_noface#000000#000072.mp4" / "0000071.png"))
    assert last.shape == (32, 32, 3) and last.std() > 20
    assert not list(out.glob(".*"))  # no partial folders left


def test_clips_that_map_to_one_name_are_all_written(tmp_path, feat_data):
    raw = tmp_path / "raw"
    for sub in ("a", "b"):
        (raw / "man" / sub).mkdir(parents=True)
        (raw / "man" / sub / "clip.mp4").symlink_to(feat_data / "single_face.mp4")
    code, printed = run(raw, tmp_path / "data", "--size", 32, "--max-frames", 10)
    assert code == 0 and "2 videos written" in printed
    names = sorted(p.name for p in (tmp_path / "data" / "train").iterdir())
    assert len(names) == 2 and all(n.startswith("man#clip~") and n.endswith(".mp4") for n in names)


@pytest.mark.parametrize("args, message", [
    (["--max-frames", "-1"], "max_frames must be 0 (all) or a positive count, got -1 (see --max-frames)"),
    (["--margin", "nan"], "margin must be a number between 0 and 4, got nan (see --margin)"),
    (["--margin", "1e9"], "margin must be a number between 0 and 4, got 1000000000.0 (see --margin)"),
    (["--min-face-fraction", "1.5"], "min_face_fraction must be between 0 and 1, got 1.5 (see --min-face-fraction)"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, raw_videos, capsys, args, message):
    out = tmp_path / "new" / "data"
    assert main(["prepare-data", str(raw_videos), str(out), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_an_output_path_that_is_a_file_is_refused(tmp_path, raw_videos, capsys):
    target = tmp_path / "data"
    target.write_text("mine")
    assert main(["prepare-data", str(raw_videos), str(target), "--quiet"]) == 2
    assert f"{target}: exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "mine"


def test_a_failed_run_leaves_no_folders(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"junk")
    assert main(["prepare-data", str(bad), str(tmp_path / "new" / "data"), "--quiet"]) == 2
    assert "none of its 1 videos could be used" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
