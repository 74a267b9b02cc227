"""The transformer's key mapping to the diffusers layout, at full size on the meta device and for real."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import FluxTransformer2DModel

from targets.reference.model import FLUX_DEV, FLUX_SCHNELL, Flux, FluxParams
from targets.reference.presets import PRESETS, Tiny, fill
from targets.reference.weights import from_diffusers, load_transformer, read_safetensors, to_diffusers


@pytest.mark.parametrize("params", [FLUX_DEV, FLUX_SCHNELL], ids=["flux-dev", "flux-schnell"])
def test_full_size_mapping_covers_every_parameter_both_ways(params):
    with torch.device("meta"):
        ours, theirs = Flux(params).state_dict(), FluxTransformer2DModel(**params.to_diffusers()).state_dict()
    converted = from_diffusers(theirs, params)
    assert converted.keys() == ours.keys()
    assert all(converted[k].shape == ours[k].shape for k in ours)
    back = to_diffusers(ours, params)
    assert back.keys() == theirs.keys()
    assert all(back[k].shape == theirs[k].shape for k in theirs)
    # the published sizes: about 11.9 B parameters, dev carries the guidance embedder on top of schnell
    assert round(sum(t.numel() for t in ours.values()) / 1e9, 1) == 11.9
    assert ("guidance_in.in_layer.weight" in ours) == params.guidance_embed


@pytest.mark.parametrize("tiny", [PRESETS["tiny-dev"], Tiny(hidden=96, heads=3, depth=1, depth_single=3,
                                                            guidance=False, axes_dim=(8, 12, 12))])
def test_round_trip_is_exact(tiny):
    params = tiny.params()
    diffusers_model = FluxTransformer2DModel(**params.to_diffusers())
    fill(diffusers_model, "test")
    theirs = diffusers_model.state_dict()
    ours = from_diffusers(theirs, params)
    back = to_diffusers(ours, params)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    assert all(torch.equal(from_diffusers(back, params)[k], ours[k]) for k in ours)


def test_fusions_follow_bfl_order():
    # BFL's qkv is [q; k; v] along the output dim, and its final adaLN is [shift; scale] where diffusers has
    # [scale; shift]: check the rows land where the math needs them
    params = PRESETS["tiny-dev"].params()
    model = FluxTransformer2DModel(**params.to_diffusers())
    fill(model, "test")
    theirs, dim = model.state_dict(), params.hidden_size
    ours = from_diffusers(theirs, params)
    qkv = ours["double_blocks.0.txt_attn.qkv.weight"]
    assert torch.equal(qkv[dim:2 * dim], theirs["transformer_blocks.0.attn.add_k_proj.weight"])
    linear1 = ours["single_blocks.1.linear1.bias"]
    assert torch.equal(linear1[3 * dim:], theirs["single_transformer_blocks.1.proj_mlp.bias"])
    ada = ours["final_layer.adaLN_modulation.1.weight"]
    assert torch.equal(ada[:dim], theirs["norm_out.linear.weight"][dim:])  # our shift is their second half


def test_missing_and_leftover_keys_are_named():
    params = PRESETS["tiny-dev"].params()
    theirs = FluxTransformer2DModel(**params.to_diffusers()).state_dict()
    with pytest.raises(KeyError, match="proj_out"):
        from_diffusers({k: v for k, v in theirs.items() if k != "proj_out.bias"}, params)
    with pytest.raises(KeyError, match="no place"):
        from_diffusers({**theirs, "extra.weight": torch.zeros(1)}, params)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    # FLUX.1-dev ships its transformer in shards with an index; load both forms from disk
    params = PRESETS["tiny-schnell"].params()
    model = FluxTransformer2DModel(**params.to_diffusers())
    fill(model, "test")
    model.save_pretrained(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert len(json.loads(next((tmp_path / "sharded").glob("*.index.json")).read_text())["weight_map"]) > 0
    assert len(read_safetensors(tmp_path / "sharded")) == len(model.state_dict())
    a = load_transformer(tmp_path / "single", torch.float32, torch.device("cpu")).state_dict()
    b = load_transformer(tmp_path / "sharded", torch.float32, torch.device("cpu")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        read_safetensors(tmp_path)


def test_params_round_trip_and_validation():
    assert FluxParams.from_diffusers(FLUX_DEV.to_diffusers()) == FLUX_DEV
    with pytest.raises(ValueError, match="head dim"):
        FluxParams(hidden_size=96, num_heads=2, axes_dim=[16, 16, 14])  # bands sum to 46, heads are 48 wide
    with pytest.raises(ValueError, match="head dim"):
        FluxParams(hidden_size=64, num_heads=2, axes_dim=[3, 15, 14])   # odd bands cannot hold pairs
    with pytest.raises(ValueError, match="patch_size"):
        FluxParams.from_diffusers({**FLUX_DEV.to_diffusers(), "patch_size": 2})
