"""Pixel similarity to the reference on the same weights."""
import numpy as np

from harness.types import GenerationRequest


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))  # identical images: capped at 100 dB


def test_images_match_the_reference(target, reference, profile, recorder):
    size = profile.get("size", 256)
    request = GenerationRequest("a bowl of fruit on a table", height=size, width=size,
                                num_inference_steps=profile.get("steps", 4), seed=3)
    ours, theirs = target.generate(request).images, reference.generate(request).images
    recorder.metric("psnr", psnr(ours, theirs), "dB", better="higher")
    recorder.metric("equivalence.max_abs_diff", np.abs(ours.astype(int) - theirs.astype(int)).max(), "levels",
                    better="lower")
    recorder.image("target", ours[0])
    recorder.image("reference", theirs[0])
