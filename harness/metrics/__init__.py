"""Image metrics: pixel (here), perceptual, semantic and distributional (later)."""
from harness.metrics.pixel import max_abs_diff, mean_abs_diff, psnr, ssim

__all__ = ["max_abs_diff", "mean_abs_diff", "psnr", "ssim"]
