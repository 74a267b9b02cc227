"""Image metrics: pixel (here), perceptual, semantic and distributional (later); catalogue.py names them all."""
from harness.metrics.pixel import channel_shift, max_abs_diff, mean_abs_diff, psnr, ssim

__all__ = ["channel_shift", "max_abs_diff", "mean_abs_diff", "psnr", "ssim"]
