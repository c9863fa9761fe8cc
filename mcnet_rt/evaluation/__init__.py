"""Evaluation of generated frames: per-image metrics on (B, 3, H, W) batches in [0, 1], each returning (B,).

    l1(a, b); psnr(a, b); ssim(a, b, mode="modern" | "released"); lpips(a, b)   # AlexNet LPIPS v0.1
"""
from .image_metrics import l1, psnr, ssim
from .perceptual import LPIPS, lpips

__all__ = ["l1", "psnr", "ssim", "lpips", "LPIPS"]
