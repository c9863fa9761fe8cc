"""One face stack for animate, live, serve, prepare-data and evaluation.

Public API (frames are (H, W, 3) uint8 RGB; pixel coordinates span [0, W] × [0, H]):
    FaceDetector()(frame) -> list[Detection]          MediaPipe BlazeFace full-range (bundled), best score first;
                                                      Detection(box (x, y, w, h), score, keypoints (6, 2))
    FaceTracker(margin, min_score, ..., smoothing=OneEuroFilter(...)).update(frame) -> Track | None
                                                      causal; Track(detection, square (cx, cy, side), frame_size,
                                                      detected), Track.crop(out_size) -> CropTransform; reset()
    track_clip(frames, tracker, smooth_frames) -> (squares or None per frame, frame size)   whole-clip mode
    face_runs(tracks, min_length) -> [(start, stop)]  runs of consecutive face frames
    CropTransform.from_box(box, frame_size, margin, out_size) / .from_square(square, frame_size, out_size)
        .matrix (frame -> crop, (..., 2, 3)), .inverse (crop -> frame), .to_crop(points), .to_frame(points),
        .crop(images (B, C, H, W) float) -> (B, C, S, S), .paste(face, background, feather) -> (B, C, H, W),
        .paste_back(feather, like) -> PasteBack: paste prepared once, (face, background) per frame
        (torch on the images' device; outside the frame the crop is black)
    crop_frame(frame, transform) -> (S, S, 3) uint8   CPU convenience over CropTransform.crop (uint8 <-> float
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
from .tracking import FaceTracker, Track, face_runs, iou, track_clip

__all__ = ["CropTransform", "crop_frame", "feather_mask", "keep_inside", "square_from_box",
           "Detection", "FaceDetector", "quiet_stderr", "DlibFaces", "FaceMesh", "dlib_faces", "face_mesh",
           "normalised_landmarks",
           "ANALYSIS_SIZE", "FaceObservation", "observe", "observe_batch", "to_analysis_image", "OneEuroFilter",
           "FaceTracker", "Track", "face_runs", "iou", "track_clip"]
