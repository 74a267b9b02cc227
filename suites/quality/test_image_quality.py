"""Image quality: pixel similarity to the reference over a prompt set, seed consistency, the effect of guidance.
(Perceptual, semantic and distributional measures: test_learned_metrics.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import channel_shift, max_abs_diff, mean_abs_diff, psnr, ssim


def test_similar_to_the_reference_over_prompts(pairs, profile, recorder):
    record_similarity(pairs, profile, recorder, "prompt")


def test_edits_similar_to_the_references_over_prompts(edit_pairs, profile, recorder):
    """The same gates for edits of the card: the target's edit against the reference's, prompt by prompt."""
    record_similarity(edit_pairs, profile, recorder, "edit")


def test_an_edit_that_asks_for_no_change_keeps_the_input(identity_edit, recorder):
    """How much of the input survives an edit whose prompt asks for none (reported: a trained Kontext keeps
    most of it; the tiny presets' random weights keep none)."""
    source, edit = identity_edit
    recorder.metric("edit.identity.ssim", ssim(edit[None], source[None]), better="higher")
    recorder.metric("edit.identity.psnr", psnr(edit[None], source[None]), "dB", better="higher")
    recorder.image("identity-input", source, caption="the input, at the edit's size")
    recorder.image("identity-edit", edit, caption="its edit by 'Keep the image exactly as it is. Change nothing.'")


def record_similarity(pairs, profile, recorder, name: str) -> None:
    scores = {name: [metric(a[None], b[None]) for a, b in zip(pairs.ours, pairs.theirs)]
              for name, metric in (("psnr", psnr), ("ssim", ssim), ("mean_abs_diff", mean_abs_diff),
                                   ("channel_shift", channel_shift))}
    for i in np.argsort(scores["psnr"], kind="stable")[: profile.get("gallery_prompts")]:  # the worst first
        recorder.comparison(f"{name}-{i}", pairs.ours[i], pairs.theirs[i], pairs.prompts[i],
                            {f"quality.{name}": values[i] for name, values in scores.items()})
    n = len(pairs.prompts)  # what a shard's mean weighs in the merge
    for name in ("psnr", "ssim"):  # the worst prompt and the average, higher is better
        recorder.metrics(f"quality.{name}", {"mean": float(np.mean(scores[name])), "min": float(np.min(scores[name]))},
                         "dB" if name == "psnr" else "", better="higher", n=n)
    for name in ("mean_abs_diff", "channel_shift"):  # the worst prompt, in levels
        recorder.metric(f"quality.{name}.max", float(np.max(scores[name])), "levels", better="lower", n=n)


def test_repeated_requests_are_consistent(target, make_request, profile, recorder):
    if not target.capabilities.deterministic:
        pytest.skip(f"{target.name} does not promise the same image for the same seed")
    runs = [target.generate(make_request(seed=21)).images for _ in range(profile.get("consistency_runs"))]
    recorder.metric("quality.consistency.max_abs_diff", max(max_abs_diff(runs[0], r) for r in runs[1:]), "levels",
                    better="lower")


def test_guidance_moves_the_image_steadily(target, make_request, profile, recorder):
    if not target.capabilities.guidance:
        pytest.skip(f"{target.name}'s model is not guidance-distilled: guidance_scale has no effect")
    scales = profile.get("guidance_scales")
    images = [target.generate(make_request(guidance_scale=g, seed=5)).images for g in scales]
    steps = [mean_abs_diff(a, b) for a, b in zip(images, images[1:])]
    recorder.metric("quality.guidance.min_step", min(steps), "levels", better="higher")
    for g, im in zip(scales, images):
        recorder.image(f"guidance-{g}", im[0], caption=f"guidance_scale {g}")
