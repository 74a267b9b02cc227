"""diffusers' pipeline target, piece by piece: each component agrees with the reference's, and its LoRAs
(through diffusers' loader and PEFT) give the reference's images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import FP32, request

PROMPTS = ["a cat holding a sign", "a red fox", " ".join(["word"] * 100)]  # the last one is cut by CLIP


@pytest.fixture(scope="module")
def pair(started):
    return started("reference:preset=tiny-dev"), started("pipeline:preset=tiny-dev")


def test_encoders_agree(pair):
    ours, theirs = pair
    (txt, vec, cut), (their_txt, their_vec, their_cut) = ours.encode(PROMPTS), theirs.encode(PROMPTS)
    torch.testing.assert_close(their_txt, txt, rtol=0, atol=1e-6)   # (3, 512, d)
    torch.testing.assert_close(their_vec, vec, rtol=0, atol=1e-6)   # (3, d)
    assert their_cut == cut == [2]


@pytest.mark.parametrize("sigma,guidance", [(1.0, 3.5), (0.6131872, 7.0)])  # the second from a 4-step schedule
def test_one_transformer_call_agrees(pair, sigma, guidance):
    ours, theirs = pair
    txt, vec, _ = ours.encode(PROMPTS[:2])
    img = theirs.sampling.pack(theirs.sampling.get_noise([0, 1], 64, 96, torch.float32))  # (2, 24, 64)
    v = theirs.velocity(img, txt, vec, sigma, guidance, 64, 96)
    assert v.shape == img.shape and v.dtype == torch.float32
    torch.testing.assert_close(v, ours.velocity(img, txt, vec, sigma, guidance, 64, 96), rtol=0, atol=FP32.latent_atol)


def test_decoders_agree(pair):
    ours, theirs = pair
    latents = theirs.sampling.pack(theirs.sampling.get_noise([3, 4], 64, 96, torch.float32))
    images = theirs.decode(latents, 64, 96)
    assert images.shape == (2, 3, 64, 96)
    torch.testing.assert_close(images, ours.decode(latents, 64, 96), rtol=0, atol=1e-6)


@pytest.mark.parametrize("height,width", [(16, 16), (64, 128), (512, 256)])
def test_noise_packing_and_ids_equal(pair, height, width):
    ours, theirs = (t.sampling for t in pair)
    noise = theirs.get_noise([5, 6], height, width, torch.float32)
    assert torch.equal(noise, ours.get_noise([5, 6], height, width, torch.float32))
    assert torch.equal(theirs.pack(noise), ours.pack(noise))
    assert torch.equal(theirs.unpack(theirs.pack(noise), height, width), noise)
    assert torch.equal(theirs.img_ids(height, width), ours.img_ids(height, width))


@pytest.mark.parametrize("preset", ["tiny-dev", "tiny-schnell"])  # a dynamic shift and a fixed one
def test_schedules_agree(started, preset):
    ours, theirs = started(f"reference:preset={preset}"), started(f"pipeline:preset={preset}")
    assert theirs.shift.dynamic == ours.shift.dynamic
    for steps, seq_len in [(1, 16), (4, 256), (28, 1024), (50, 4096)]:
        sigmas = theirs.sampling.get_schedule(steps, seq_len, theirs.shift)
        assert sigmas.shape == (steps + 1,)
        torch.testing.assert_close(sigmas, ours.sampling.get_schedule(steps, seq_len, ours.shift), rtol=0, atol=1e-7)


def test_schedule_leaves_the_pipelines_scheduler_alone(pair):
    scheduler = pair[1].pipe.scheduler
    before = scheduler.sigmas.clone()
    pair[1].sampling.get_schedule(4, 256, pair[1].shift)
    assert torch.equal(scheduler.sigmas, before)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_lora_images_agree_with_the_reference(pair, scale):
    # the LoRA file has no alpha: PEFT then takes alpha = rank, a scaling of 1, as the reference's merge does
    ours, theirs = pair
    req = request(seed=9, lora="tiny-style", lora_scale=scale)
    a, b = ours.generate(req).images, theirs.generate(req).images
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= FP32.max_levels and diff.mean() <= FP32.mean_levels, \
        f"images differ by {diff.mean():.3f} levels on average, {diff.max()} at worst"


def test_lora_loads_once(pair):
    pipeline = pair[1]
    for scale in (0.3, 0.8):
        pipeline.generate(request(lora="tiny-style", lora_scale=scale))
    assert pipeline.pipe.get_list_adapters() == {"transformer": ["tiny-style"]}
