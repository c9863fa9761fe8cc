"""Evaluation of generated frames: the paper's metrics and protocols (`mcnet-rt evaluate`).

Per-image metrics on (B, 3, H, W) batches in [0, 1], each returning (B,):
    l1(a, b); psnr(a, b); ssim(a, b, mode="modern" | "released"); lpips(a, b)   # AlexNet LPIPS v0.1
Face metrics (motion_metrics; NaN where no face is found, at 256×256):
    akd(a, b, landmarks="mediapipe" | "dlib"); aed(a, b); pose_error(a, b)      # PRMSE per pair
    au_consistency(a, b, reference_a, reference_b)                              # a PROXY for AUCON, not AUCON
Protocols (protocols) and the report folder (report) are imported on demand: they load matplotlib.
"""
from .image_metrics import l1, psnr, ssim
from .motion_metrics import aed, akd, au_consistency, pose_error
from .perceptual import LPIPS, lpips

__all__ = ["l1", "psnr", "ssim", "lpips", "LPIPS", "akd", "aed", "pose_error", "au_consistency"]
