"""One face stack for animate, live, serve, prepare-data and evaluation.

Public API (frames are (H, W, 3) uint8 RGB; pixel coordinates span [0, W] × [0, H]):
    FaceDetector(min_score, model=full|short)(frame) -> list[Detection]   MediaPipe BlazeFace (bundled), best score
                                                      first; Detection(box (x, y, w, h), score, keypoints (6, 2)),
                                                      .roll (eye line, radians), .frontal, .mapped(matrix)
    FaceFinder(min_score).find(frame) -> Found(faces left to right, passes tried)   every confirmed face of a still:
                                                      upright, padded, tiled and turned passes; .look/.run/.confirm
    choose(faces, choice, frame_size) -> (index, why) choice: largest | centre | left | right | N (1 = leftmost)
    CropOptions(mode=auto|centre|none, margin, face, align)  what decides a crop (frozen; SessionOptions.crop)
    FaceTracker(margin, min_score, ..., steadying=OneEuroFilter(...), choice, align=roll|none).update(frame)
                                                      -> Track | None, causal, keeps the person; Track(detection,
                                                      square (cx, cy, side), frame_size, detected, roll),
                                                      Track.crop(out_size) -> CropTransform; reset(); close()
    track_clip(frames, tracker, steady_frames) -> (squares or None per frame, frame size)   whole-clip mode
    face_runs(tracks, min_length) -> [(start, stop)]  runs of consecutive face frames
    CropTransform.from_box(box, frame_size, margin, out_size, roll=0) / .from_square(square, frame_size, out_size,
        roll=0)  a similarity map (the crop turned by roll levels the face)
        .matrix (frame -> crop, (..., 2, 3)), .inverse (crop -> frame), .to_crop(points), .to_frame(points),
        .crop(images (B, C, H, W) float) -> (B, C, S, S), .paste(face, background, feather, mask=None) -> (B, C,
        H, W), .paste_back(feather, like, mask=None) -> PasteBack: paste prepared once, (face, background) per
        frame, .paste_mask(feather, like): the feathered square less what the crop took from outside the frame
        (torch on the images' device; outside the frame the crop is black)
    crop_frame(frame, transform, quick=False) -> (S, S, 3) uint8   CPU convenience over CropTransform.crop (quick:
                                                      one OpenCV warp, for the detectors) (uint8 <-> float
                                                      conversions: mcnet_rt.io.frames)
    OneEuroFilter(min_cutoff, beta, d_cutoff, rate)(x, dt=None); reset()   any shape, NumPy or torch (on its device)
    FaceMesh()(image) -> (478, 3) or None; face_mesh() the process's instance
    normalised_landmarks(points) -> (N, 2)            centred, divided by sqrt(hull area) (best-frame matching)
    DlibFaces / dlib_faces(), FaceObservation, observe(image), observe_batch(images), ANALYSIS_SIZE  (evaluation)
    quiet_stderr()                                    silences MediaPipe's C++ logging
"""
from .crop import CropTransform, crop_frame, feather_mask, keep_inside, square_from_box
from .detection import Detection, FaceDetector, quiet_stderr
from .landmarks import DlibFaces, FaceMesh, dlib_faces, face_mesh, normalised_landmarks
from .observation import ANALYSIS_SIZE, FaceObservation, observe, observe_batch, to_analysis_image
from .one_euro import OneEuroFilter
from .finding import CHOICES, FaceFinder, Found, check_choice, choose, iou
from .tracking import ALIGNS, FaceTracker, Track, face_runs, track_clip
from .crop_options import CROPS, CropOptions

__all__ = ["CropTransform", "crop_frame", "feather_mask", "keep_inside", "square_from_box",
           "Detection", "FaceDetector", "quiet_stderr", "DlibFaces", "FaceMesh", "dlib_faces", "face_mesh",
           "normalised_landmarks",
           "ANALYSIS_SIZE", "FaceObservation", "observe", "observe_batch", "to_analysis_image", "OneEuroFilter",
           "CHOICES", "FaceFinder", "Found", "check_choice", "choose", "iou",
           "ALIGNS", "FaceTracker", "Track", "face_runs", "track_clip", "CROPS", "CropOptions"]
