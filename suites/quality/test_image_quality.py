"""Image quality: similarity to the reference over a prompt set, seed consistency, the effect of guidance;
perceptual, semantic and distributional metrics where their weights are on disk."""
from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import max_abs_diff, mean_abs_diff, psnr, ssim


def test_similar_to_the_reference_over_prompts(target, reference, make_request, prompts, profile, recorder):
    scores = {"psnr": [], "ssim": []}
    for i, prompt in enumerate(prompts[: profile.get("quality_prompts", 4)]):
        request = make_request(prompt, seed=100 + i)
        ours, theirs = target.generate(request).images, reference.generate(request).images
        scores["psnr"].append(psnr(ours, theirs))
        scores["ssim"].append(ssim(ours, theirs))
        if i == 0:
            recorder.image("target", ours[0])
            recorder.image("reference", theirs[0])
    for name, values in scores.items():
        recorder.metrics(f"quality.{name}", {"mean": float(np.mean(values)), "min": float(np.min(values))},
                         "dB" if name == "psnr" else "", better="higher")


def test_repeated_requests_are_consistent(target, make_request, profile, recorder):
    if not target.capabilities.deterministic:
        pytest.skip(f"{target.name} does not promise the same image for the same seed")
    runs = [target.generate(make_request(seed=21)).images for _ in range(profile.get("consistency_runs", 3))]
    recorder.metric("quality.consistency.max_abs_diff", max(max_abs_diff(runs[0], r) for r in runs[1:]), "levels",
                    better="lower")


def test_guidance_moves_the_image_steadily(target, make_request, profile, recorder):
    if not target.capabilities.guidance:
        pytest.skip(f"{target.name}'s model is not guidance-distilled: guidance_scale has no effect")
    scales = profile.get("guidance_scales", [1.0, 3.5, 7.0])
    images = [target.generate(make_request(guidance_scale=g, seed=5)).images for g in scales]
    steps = [mean_abs_diff(a, b) for a, b in zip(images, images[1:])]
    recorder.metric("quality.guidance.min_step", min(steps), "levels", better="higher")
    for g, im in zip(scales, images):
        recorder.image(f"guidance-{g}", im[0])


@pytest.mark.parametrize("metric", ["lpips", "clip_score", "fid"])
def test_learned_metrics(metric):
    pytest.skip(f"{metric}: needs pretrained weights on disk; a later issue adds the loaders and the skip-if-absent")
