"""Components one by one, where the target exposes them: text encoders, one transformer step, the VAE
decoder, and the pipeline's pure functions (packing, ids, the schedule and its shift); for a target that edits,
the VAE encoder and the conditioning tokens' packing and ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import images


@pytest.fixture
def parts(target):
    if not target.capabilities.components:
        pytest.skip(f"{target.name} does not expose its components")
    return target


def test_text_encoders(parts, recorder):
    txt, vec, _ = parts.encode(["a cat holding a sign", "a red fox"])
    assert vec.ndim == 2 and vec.shape[0] == 2                                  # CLIP pooled: (B, dim)
    assert txt.ndim == 3 and txt.shape[:2] == (2, parts.max_sequence_length)   # T5: (B, L, d)
    assert torch.isfinite(vec).all() and torch.isfinite(txt).all()
    assert not torch.equal(vec[0], vec[1]) and not torch.equal(txt[0], txt[1]), "two prompts, one encoding"
    recorder.metrics("unit.text", {"pooled_dim": vec.shape[1], "context_dim": txt.shape[2]})


def test_one_transformer_step(parts, profile):
    size = profile.get("load_size")
    txt, vec, _ = parts.encode(["a cat"])
    noise = parts.sampling.get_noise([0], size, size, parts.dtype).to(parts.device)
    img = parts.sampling.pack(noise)                                            # (1, L, 64)
    v = parts.velocity(img, txt, vec, sigma=1.0, guidance=3.5, height=size, width=size)
    assert v.shape == img.shape and v.dtype == parts.dtype and torch.isfinite(v).all()
    later = parts.velocity(img, txt, vec, sigma=0.5, guidance=3.5, height=size, width=size)
    assert not torch.equal(v, later), "the step ignores the timestep"


def test_vae_decode(parts, profile):
    size = profile.get("load_size")
    latents = parts.sampling.pack(parts.sampling.get_noise([1], size, size, parts.dtype).to(parts.device))
    images = parts.decode(latents, size, size)
    assert images.shape == (1, 3, size, size) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


@pytest.mark.parametrize("height,width", [(16, 16), (64, 128), (512, 256)])
def test_packing_and_ids(parts, height, width):
    s = parts.sampling
    x = s.get_noise([2], height, width, torch.float32)                           # (1, 16, H/8, W/8)
    packed = s.pack(x)
    assert packed.shape == (1, (height // 16) * (width // 16), 64)
    assert torch.equal(s.unpack(packed, height, width), x)
    ids = s.img_ids(height, width)
    assert ids.shape == (packed.shape[1], 3) and ids[:, 1].max() == height // 16 - 1 and ids[:, 2].max() == width // 16 - 1


def test_schedule_and_shift(parts):
    s = parts.sampling
    shift = parts.shift
    for steps in (1, 4, 28):
        sigmas = s.get_schedule(steps, 1024, shift)
        assert len(sigmas) == steps + 1 and sigmas[0] == 1 and sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()
    if shift.dynamic:  # larger images spend longer at high noise
        assert (s.get_schedule(8, 4096, shift)[1:-1] > s.get_schedule(8, 256, shift)[1:-1]).all()


@pytest.fixture
def encoder(parts, editor):
    """The target's components, where it edits: its VAE encoder among them."""
    return parts


def test_vae_encode(encoder, profile):
    size = profile.get("load_size")
    card = images.card(size, size)
    z = encoder.encode_image(card)
    assert z.shape == (1, 16, size // 8, size // 8) and torch.isfinite(z).all()     # 8x down, 16 channels
    assert torch.equal(z, encoder.encode_image(card)), "the encoder's mode, not a sample: an image encodes alike"
    assert not torch.equal(z, encoder.encode_image(np.ascontiguousarray(card[::-1]))), "two images, one encoding"


@pytest.mark.parametrize("height,width", [(16, 16), (64, 128)])
def test_conditioning_tokens_and_ids(encoder, height, width):
    s = encoder.sampling
    z = encoder.encode_image(images.card(height, width))
    tokens = s.pack(z)                                                            # (1, L_cond, 64)
    assert tokens.shape == (1, (height // 16) * (width // 16), 64)
    assert torch.equal(s.unpack(tokens, height, width), z)
    ids, cond = s.img_ids(height, width), s.img_ids(height, width, t=1)
    assert (ids[:, 0] == 0).all() and (cond[:, 0] == 1).all(), "the input's tokens are told apart by t = 1"
    assert torch.equal(cond[:, 1:], ids[:, 1:]), "with the rows and columns of an image of its size"
