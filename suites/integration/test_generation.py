"""End to end through the target: one prompt, batches, seeds, guidance, the reference, a prompt set; and for a
target that edits images (FLUX.1-Kontext), the same of an edit, and that the input image decides it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.metrics import channel_shift, max_abs_diff, mean_abs_diff, psnr, ssim
from harness.timing import timed_generate
from harness.types import InvalidRequest


def test_one_prompt_gives_one_image(target, make_request, recorder):
    result = timed_generate(target, make_request("A cat holding a sign that says hello world"))
    size = result.images.shape[1]
    assert result.images.shape == (1, size, size, 3) and result.images.dtype == np.uint8
    assert result.images.std() > 0, "a constant image"
    recorder.metric("latency.single", result.timings["total"], "s")
    recorder.image("hello-world", result.images[0])


def test_a_batch_equals_single_requests(target, make_request, prompts, recorder):
    compare_batch_with_singles(target, make_request, prompts[:3], recorder)


def compare_batch_with_singles(target, make, prompts, recorder):
    if not target.capabilities.batching:
        pytest.skip(f"{target.name} takes one prompt per request")
    batch = target.generate(make(prompts, seed=7)).images
    singles = np.concatenate([target.generate(make(p, seed=7 + i)).images for i, p in enumerate(prompts)])
    recorder.metric("batch.max_abs_diff", max_abs_diff(batch, singles), "levels", better="lower")


def test_seeds_decide_the_image(target, make_request, recorder):
    compare_seeds(target, make_request, recorder)


def compare_seeds(target, make, recorder):
    if not target.capabilities.deterministic:
        pytest.skip(f"{target.name} does not promise the same image for the same seed")
    first, again, other = (target.generate(make(seed=s)).images for s in (11, 11, 12))
    recorder.metric("seed.repeat_max_abs_diff", max_abs_diff(first, again), "levels", better="lower")
    recorder.metric("seed.other_mean_abs_diff", mean_abs_diff(first, other), "levels", better="higher")
    assert not np.array_equal(first, other), "seeds 11 and 12 gave the same image: the seed is ignored"


def test_guidance_changes_the_image(target, make_request, recorder):
    if not target.capabilities.guidance:
        pytest.skip(f"{target.name}'s model is not guidance-distilled: guidance_scale has no effect")
    low, high = (target.generate(make_request(guidance_scale=g)).images for g in (1.0, 7.0))
    recorder.metric("guidance.mean_abs_diff", mean_abs_diff(low, high), "levels", better="higher")


def test_equivalent_to_the_reference(target, reference, make_request, recorder):
    compare_with_the_reference(target, reference, make_request("A bowl of ripe fruit on a wooden table", seed=3),
                               recorder)


def compare_with_the_reference(target, reference, request, recorder, name="equivalence"):
    """The target's images against the reference's for one request, under the equivalence gates."""
    ours, theirs = target.generate(request).images, reference.generate(request).images
    recorded = [recorder.metric("equivalence.max_abs_diff", max_abs_diff(ours, theirs), "levels", better="lower"),
                recorder.metric("equivalence.mean_abs_diff", mean_abs_diff(ours, theirs), "levels", better="lower"),
                recorder.metric("equivalence.channel_shift", channel_shift(ours, theirs), "levels", better="lower"),
                recorder.metric("equivalence.psnr", psnr(ours, theirs), "dB", better="higher"),
                recorder.metric("equivalence.ssim", ssim(ours, theirs), better="higher")]
    recorder.comparison(name, ours[0], theirs[0], request.prompt, {m.name: m.value for m in recorded})


def test_every_smoke_prompt_succeeds(target, make_request, prompts, profile, recorder):
    size = profile.get("load_size")
    failures = []
    for i, prompt in enumerate(prompts):
        try:
            result = target.generate(make_request(prompt, height=size, width=size, seed=i))
            assert result.images.shape == (1, size, size, 3)
        except Exception as e:  # counted, so the rate says how many of the set failed
            failures.append(f"{prompt!r}: {type(e).__name__}: {e}")
    recorder.metric("success_rate", 1 - len(failures) / len(prompts), better="higher")
    for failure in failures:
        recorder.note(failure)


def test_lora(target, make_request, recorder):
    if not target.capabilities.lora:
        pytest.skip(f"{target.name} does not support LoRA")
    names = target.loras()
    if not names:
        pytest.skip(f"{target.name} offers no LoRA for its model")
    request = make_request("a cat in the style of the LoRA", seed=9)
    base = target.generate(request).images
    off = target.generate(dataclasses.replace(request, lora=names[0], lora_scale=0.0)).images
    on = target.generate(dataclasses.replace(request, lora=names[0], lora_scale=1.0)).images
    recorder.metric("lora.scale0_max_abs_diff", max_abs_diff(base, off), "levels", better="lower")
    recorder.metric("lora.scale1_mean_abs_diff", mean_abs_diff(base, on), "levels", better="higher")
    with pytest.raises(InvalidRequest, match="lora='no-such-lora'"):
        target.generate(dataclasses.replace(request, lora="no-such-lora"))
    after = target.generate(request).images
    recorder.metric("lora.restored_max_abs_diff", max_abs_diff(base, after), "levels", better="lower")


# Editing: the gates of text to image hold for an edit (the same metric names, so the same thresholds), and the
# input image must decide the edit.

def test_an_edit_repeats_per_seed(editor, make_edit, recorder):
    compare_seeds(editor, make_edit, recorder)


def test_the_input_image_decides_the_edit(editor, make_edit, recorder):
    request = make_edit(seed=5)
    turned = dataclasses.replace(request, image=np.ascontiguousarray(request.image[::-1, ::-1]))  # half a turn
    edit, other = editor.generate(request).images, editor.generate(turned).images
    recorder.metric("edit.input_mean_abs_diff", mean_abs_diff(edit, other), "levels", better="higher")
    recorder.image("input", request.image, caption="the input image (harness.images.card)")
    recorder.image("edit", edit[0], caption=request.prompt)
    recorder.image("edit-of-turned-input", other[0], caption="the same request with the input turned half round")


def test_an_edit_batch_equals_single_requests(editor, make_edit, prompts, recorder):
    compare_batch_with_singles(editor, make_edit, prompts[:2], recorder)


def test_an_edit_is_equivalent_to_the_references(editor, reference, make_edit, recorder):
    compare_with_the_reference(editor, reference, make_edit("turn the disc into a sun at dusk", seed=3), recorder,
                               "edit-equivalence")
