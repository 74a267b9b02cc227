"""The in-process targets: the reference and diffusers agree, batches equal singles, bad requests are refused."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.types import InvalidRequest
from helpers import BF16, PRESET_NAMES, assert_equivalent, request
from targets.reference import layers, model, presets, target
from targets.reference.sampling import Shift, get_schedule

TARGETS = ["reference", "pipeline"]


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("size", [(64, 64), (128, 96), (256, 256)])
def test_reference_equals_diffusers(started, preset, size):
    req = request(height=size[0], width=size[1], num_inference_steps=3, seed=11)
    assert_equivalent(started(f"reference:preset={preset}"), started(f"pipeline:preset={preset}"), req)


def test_equivalence_holds_for_a_batch_and_a_guidance(started):
    req = request(prompt=["a red fox", "a blue bird"], num_images=2, guidance_scale=7.0, seed=3)
    assert_equivalent(started("reference:preset=tiny-dev"), started("pipeline:preset=tiny-dev"), req)


@pytest.mark.parametrize("tiny", [
    presets.Tiny(hidden=96, heads=3, axes_dim=(8, 12, 12), depth=1, depth_single=3),
    presets.Tiny(hidden=128, heads=4, axes_dim=(4, 14, 14), depth=3, depth_single=1, text_dim=48, guidance=False),
    presets.Tiny(hidden=48, heads=1, axes_dim=(16, 16, 16), depth=1, depth_single=0, seed=5),
], ids=["wide-3-heads", "deep-4-heads-schnell", "one-head-no-single-blocks"])
def test_equivalence_holds_beyond_the_presets(tmp_path, tiny):
    from targets.pipeline import PipelineTarget
    from targets.reference import ReferenceTarget

    path = str(presets.save(tiny, tmp_path / "model"))
    with ReferenceTarget(model=path) as ours, PipelineTarget(model=path) as theirs:
        assert_equivalent(ours, theirs, request(height=48, width=80, num_inference_steps=3))


def flip_rope_sign(x, pe):
    cos, sin = pe
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return (x * cos + layers.torch.stack([x1, -x0], dim=-1).flatten(-2) * sin).to(x.dtype)


MUTATIONS = {  # each is a one-line change to the reference that the equivalence test must catch
    "rope-rotates-backwards": (layers, "apply_rope", flip_rope_sign),
    "timestep-not-scaled": (model, "timestep_embedding", lambda t, dim: layers.timestep_embedding(t / 1000, dim)),
    "no-time-shift": (target, "get_schedule", lambda n, seq, shift: get_schedule(n, seq, Shift(dynamic=False))),
    "final-shift-scale-swapped": (layers.LastLayer, "forward", lambda self, x, vec: self.linear(
        self.norm_final(x) * (1 + self.adaLN_modulation(vec).chunk(2, 1)[0][:, None])
        + self.adaLN_modulation(vec).chunk(2, 1)[1][:, None])),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_equivalence_catches_a_drifted_reference(started, monkeypatch, mutation):
    owner, name, replacement = MUTATIONS[mutation]
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(AssertionError):
        assert_equivalent(started("reference:preset=tiny-dev"), started("pipeline:preset=tiny-dev"),
                          request(num_inference_steps=3, seed=11))


@pytest.mark.parametrize("name", TARGETS)
def test_a_batch_equals_single_requests(started, name):
    t = started(f"{name}:preset=tiny-dev")
    prompts = ["a red fox", "a blue bird", "a green frog"]
    batch = t.generate(request(prompt=prompts, seed=7)).images
    assert batch.shape == (3, 64, 64, 3) and batch.dtype == np.uint8
    for i, prompt in enumerate(prompts):
        single = t.generate(request(prompt=prompt, seed=7 + i)).images[0]
        assert np.abs(batch[i].astype(int) - single.astype(int)).max() <= 1, f"image {i} of the batch"
    repeated = t.generate(request(prompt="a red fox", num_images=2, seed=7)).images
    assert np.array_equal(repeated[0], batch[0])
    assert np.abs(repeated[1].astype(int) - t.generate(request(prompt="a red fox", seed=8)).images[0]).max() <= 1


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_decide_the_image(started, name):
    t = started(f"{name}:preset=tiny-schnell")
    a, b, c = (t.generate(request(seed=s)).images for s in (1, 1, 2))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5  # random weights: different noise, different image
    unseeded = [t.generate(request(seed=None)).images for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_guidance_changes_a_dev_image(started):
    t = started("reference:preset=tiny-dev")
    low, high = (t.generate(request(guidance_scale=g)).images for g in (1.0, 8.0))
    assert not np.array_equal(low, high)


BAD = [
    ("height", 100, "multiple of 16"), ("height", 0, "between 16"), ("width", -16, "between 16"),
    ("width", 4096, "between 16 and 2048"), ("height", 64.0, "integer"), ("width", True, "integer"),
    ("num_inference_steps", 0, "from 1"), ("num_inference_steps", -3, "from 1"),
    ("num_inference_steps", 10**6, "to 1000"), ("num_inference_steps", 2.5, "integer"),
    ("guidance_scale", math.nan, "finite"), ("guidance_scale", math.inf, "finite"),
    ("guidance_scale", -1.0, "from 0 to 100"), ("guidance_scale", 1e39, "from 0 to 100"), ("guidance_scale", "3.5", "number"),
    ("num_images", 0, ">= 1"), ("num_images", 9, "batch limit of 8"),
    ("prompt", None, "string"), ("prompt", 42, "string"), ("prompt", [], "at least one"), ("prompt", ["ok", 3], "string"),
    ("seed", -1, "integer from 0"), ("seed", "abc", "integer"), ("seed", 2**63, "integer from 0"),
]


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("field,value,rule", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_requests_are_refused_by_name(started, name, field, value, rule):
    t = started(f"{name}:preset=tiny-schnell")
    with pytest.raises(InvalidRequest) as error:
        t.generate(request(**{field: value}))
    assert f"{field}={value!r}" in str(error.value) and rule in str(error.value)


@pytest.mark.parametrize("name", TARGETS)
def test_target_still_serves_after_refusals(started, name):
    t = started(f"{name}:preset=tiny-schnell")
    with pytest.raises(InvalidRequest, match="batch limit"):
        t.generate(request(prompt=["a", "b", "c"], num_images=3))
    assert t.generate(request()).images.shape == (1, 64, 64, 3)


def test_edge_prompts_give_images_and_report_truncation(started):
    t = started("reference:preset=tiny-dev")
    long = " ".join(["word"] * 2000)
    result = t.generate(request(prompt=["", "<script>alert(1)</script> \x00\t🐱 ünïcødé", long]))
    assert result.images.shape == (3, 64, 64, 3)
    assert result.info["truncated_prompts"] == [2]


def test_result_carries_timings_and_info(started):
    result = started("reference:preset=tiny-dev").generate(request())
    assert set(result.timings) == {"encode", "denoise", "decode"} and all(v > 0 for v in result.timings.values())
    assert result.info["model"] == "tiny-dev" and result.info["dtype"] == "float32" and result.info["device"] == "cpu"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bf16_reference_equals_diffusers_loosely(started, preset):
    req = request(height=128, width=128, num_inference_steps=4, seed=2)
    assert_equivalent(started(f"reference:preset={preset},dtype=bf16"), started(f"pipeline:preset={preset},dtype=bf16"),
                      req, BF16)


@pytest.mark.parametrize("name", TARGETS)
def test_lora_strength_and_errors(started, name):
    t = started(f"{name}:preset=tiny-dev")
    assert t.loras() == ["tiny-style"]
    base = t.generate(request(seed=9)).images
    at = {s: t.generate(request(seed=9, lora="tiny-style", lora_scale=s)).images for s in (0.0, 0.5, 1.0)}
    assert np.array_equal(at[0.0], base)                       # scale 0: the model as it was, to the bit
    half, full = (np.abs(at[s].astype(int) - base.astype(int)).mean() for s in (0.5, 1.0))
    assert 0 < half < full                                     # the effect grows with the scale
    assert np.array_equal(t.generate(request(seed=9)).images, base)  # and the weights are restored after
    with pytest.raises(InvalidRequest, match="lora='missing'.*known: tiny-style"):
        t.generate(request(lora="missing"))
    with pytest.raises(InvalidRequest, match="lora_scale=nan"):
        t.generate(request(lora="tiny-style", lora_scale=math.nan))
    assert np.array_equal(t.generate(request(seed=9)).images, base)  # a refused request leaves no LoRA on


def test_lora_merge_matches_the_low_rank_update():
    # the merge goes through the key mapping: a LoRA on to_k must land in the k rows of our fused qkv
    import torch
    from diffusers import FluxTransformer2DModel
    from targets.reference.weights import from_diffusers, lora_deltas, to_diffusers

    params = presets.PRESETS["tiny-dev"].params()
    model = FluxTransformer2DModel(**params.to_diffusers())
    presets.fill(model, "test")
    theirs = model.state_dict()
    a, b = torch.randn(2, params.hidden_size), torch.randn(params.hidden_size, 2)
    deltas = lora_deltas({"transformer.transformer_blocks.0.attn.to_k.lora_A.weight": a,
                          "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": b}, scale=0.5)
    merged = from_diffusers({k: v + deltas.get(k, 0) for k, v in theirs.items()}, params)
    before = from_diffusers(theirs, params)
    change = merged["double_blocks.0.img_attn.qkv.weight"] - before["double_blocks.0.img_attn.qkv.weight"]
    dim = params.hidden_size
    assert torch.allclose(change[dim:2 * dim], 0.5 * b @ a, atol=1e-6)
    assert change[:dim].abs().max() == 0 and change[2 * dim:].abs().max() == 0
    assert to_diffusers(merged, params).keys() == theirs.keys()
