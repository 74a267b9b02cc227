"""The sampler's pure functions: packing, ids, noise and the schedule, as properties and against diffusers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils.torch_utils import randn_tensor
from hypothesis import given, settings
from hypothesis import strategies as st

from targets.reference.sampling import Shift, get_noise, get_schedule, img_ids, latent_shape, pack, unpack

sides = st.integers(1, 12).map(lambda k: 16 * k)  # pixel sizes that obey the contract


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.sampled_from([4, 16]), h=sides, w=sides, seed=st.integers(0, 2**31))
def test_unpack_inverts_pack_and_matches_diffusers(b, c, h, w, seed):
    x = torch.randn((b, c, *latent_shape(h, w)[2:]), generator=torch.Generator().manual_seed(seed))
    packed = pack(x)
    assert packed.shape == (b, (h // 16) * (w // 16), c * 4)
    assert torch.equal(unpack(packed, h, w), x)
    hl, wl = x.shape[2:]
    assert torch.equal(packed, FluxPipeline._pack_latents(x, b, c, hl, wl))
    assert torch.equal(unpack(packed, h, w), FluxPipeline._unpack_latents(packed, h, w, 8))


@settings(max_examples=40, deadline=None)
@given(h=sides, w=sides, data=st.data())
def test_ids_name_the_patch_each_token_holds(h, w, data):
    ids = img_ids(h, w)
    assert ids.shape == ((h // 16) * (w // 16), 3)
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(1, h // 16, w // 16, "cpu", torch.float32))
    assert (ids[:, 0] == 0).all() and len({tuple(r) for r in ids.tolist()}) == len(ids)
    # token k of pack() is the 2x2 patch at (row, col) = ids[k, 1:], its channels outermost
    x = torch.randn(1, 16, *latent_shape(h, w)[2:])
    k = data.draw(st.integers(0, len(ids) - 1))
    r, c = (int(v) for v in ids[k, 1:])
    assert torch.equal(pack(x)[0, k], x[0, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**40), n=st.integers(1, 4), h=sides, w=sides)
def test_noise_is_per_image_and_matches_diffusers(seed, n, h, w):
    noise = get_noise([seed + i for i in range(n)], h, w, torch.float32)
    assert noise.shape == (n, *latent_shape(h, w)[1:])
    for i in range(n):  # image i alone, with its own seed, draws the same noise
        assert torch.equal(noise[i:i + 1], get_noise([seed + i], h, w, torch.float32))
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
    assert torch.equal(noise, randn_tensor(noise.shape, generator=generators, dtype=torch.float32))


DEV = {"shift": 3.0, "use_dynamic_shifting": True}
SCHNELL = {"shift": 1.0, "use_dynamic_shifting": False}


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 60), seq_len=st.integers(16, 8192),
       config=st.sampled_from([DEV, SCHNELL, {"shift": 3.0, "use_dynamic_shifting": False}]))
def test_schedule_matches_diffusers_to_the_bit(steps, seq_len, config):
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    mu = calculate_shift(seq_len) if config["use_dynamic_shifting"] else None
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    ours = get_schedule(steps, seq_len, Shift.from_scheduler_config(dict(scheduler.config)))
    assert torch.equal(ours, scheduler.sigmas)
    assert ours[0] == 1 and ours[-1] == 0 and (ours[1:] < ours[:-1]).all()


def test_larger_images_spend_longer_at_high_noise():
    shift = Shift()
    small, large = get_schedule(8, 256, shift), get_schedule(8, 4096, shift)
    assert (large[1:-1] > small[1:-1]).all()
    assert shift.mu(256) == pytest.approx(0.5) and shift.mu(4096) == pytest.approx(1.15)
    unshifted = get_schedule(4, 4096, Shift(dynamic=False))
    assert torch.allclose(unshifted, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
