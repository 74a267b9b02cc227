"""Transformer weights in the diffusers layout: the key mapping, both ways, and the loader.

Our modules keep black-forest-labs' names and fusions (one qkv projection, one linear1 for a single block's
q, k, v and MLP input); diffusers splits them. So a rule maps one of our tensors to one or more of theirs:
concatenated along the output dimension, or, for the final adaLN, with its two halves swapped (diffusers
orders it scale, shift; BFL shift, scale).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from targets.reference.model import Flux, FluxParams


@dataclass(frozen=True)
class Rule:
    ours: str                    # without .weight / .bias
    theirs: tuple[str, ...]      # concatenated in this order along dim 0
    swap: bool = False           # our halves are theirs swapped


# a double block's streams in diffusers: modulation, q, k, v, q-norm, k-norm, out projection, MLP
STREAMS = {
    "img": ("norm1", "to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out.0", "ff"),
    "txt": ("norm1_context", "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k",
            "to_add_out", "ff_context"),
}


def rules(params: FluxParams) -> list[Rule]:
    def same(ours: str, theirs: str) -> Rule:
        return Rule(ours, (theirs,))

    out = [
        same("img_in", "x_embedder"),
        same("txt_in", "context_embedder"),
        same("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
        same("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
        same("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
        same("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
        Rule("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap=True),
        same("final_layer.linear", "proj_out"),
    ]
    if params.guidance_embed:
        out += [same("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                same("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")]
    for i in range(params.depth):
        ours, theirs = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for stream, (mod, q, k, v, q_norm, k_norm, proj, ff) in STREAMS.items():
            out += [
                same(f"{ours}.{stream}_mod.lin", f"{theirs}.{mod}.linear"),
                Rule(f"{ours}.{stream}_attn.qkv", tuple(f"{theirs}.attn.{x}" for x in (q, k, v))),
                same(f"{ours}.{stream}_attn.norm.query_norm", f"{theirs}.attn.{q_norm}"),
                same(f"{ours}.{stream}_attn.norm.key_norm", f"{theirs}.attn.{k_norm}"),
                same(f"{ours}.{stream}_attn.proj", f"{theirs}.attn.{proj}"),
                same(f"{ours}.{stream}_mlp.0", f"{theirs}.{ff}.net.0.proj"),
                same(f"{ours}.{stream}_mlp.2", f"{theirs}.{ff}.net.2"),
            ]
    for i in range(params.depth_single_blocks):
        ours, theirs = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        out += [
            Rule(f"{ours}.linear1", tuple(f"{theirs}.{x}" for x in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"))),
            same(f"{ours}.linear2", f"{theirs}.proj_out"),
            same(f"{ours}.norm.query_norm", f"{theirs}.attn.norm_q"),
            same(f"{ours}.norm.key_norm", f"{theirs}.attn.norm_k"),
            same(f"{ours}.modulation.lin", f"{theirs}.norm.linear"),
        ]
    return out


# RMSNorm holds `scale` in BFL's naming and `weight` in diffusers'; Linear holds weight and bias in both.
def _suffixes(rule: Rule) -> list[tuple[str, str]]:
    if rule.ours.endswith("_norm"):
        return [("scale", "weight")]
    return [("weight", "weight"), ("bias", "bias")]


def from_diffusers(state: dict[str, Tensor], params: FluxParams) -> dict[str, Tensor]:
    """A diffusers FluxTransformer2DModel state dict -> ours. Raises on a missing or a leftover key."""
    state, out = dict(state), {}
    for rule in rules(params):
        for ours, theirs in _suffixes(rule):
            parts = [state.pop(f"{t}.{theirs}") for t in rule.theirs]
            tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            out[f"{rule.ours}.{ours}"] = tensor.roll(tensor.shape[0] // 2, dims=0) if rule.swap else tensor
    if state:
        raise KeyError(f"{len(state)} transformer weights have no place in the reference model, e.g. {sorted(state)[:3]}")
    return out


def to_diffusers(state: dict[str, Tensor], params: FluxParams) -> dict[str, Tensor]:
    """Ours -> diffusers' names and splits; the inverse of from_diffusers."""
    state, out = dict(state), {}
    dim, mlp_hidden = params.hidden_size, int(params.hidden_size * params.mlp_ratio)
    for rule in rules(params):
        for ours, theirs in _suffixes(rule):
            tensor = state.pop(f"{rule.ours}.{ours}")
            if rule.swap:
                tensor = tensor.roll(tensor.shape[0] // 2, dims=0)
            sizes = [dim] * 3 + [mlp_hidden] * (len(rule.theirs) - 3) if len(rule.theirs) > 1 else [tensor.shape[0]]
            for name, part in zip(rule.theirs, tensor.split(sizes, dim=0)):
                out[f"{name}.{theirs}"] = part
    if state:
        raise KeyError(f"{len(state)} reference weights have no diffusers name, e.g. {sorted(state)[:3]}")
    return out


def lora_deltas(state: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """A diffusers/PEFT LoRA (transformer.<module>.lora_A/B.weight, optional .alpha) -> the change it makes
    to each weight, by diffusers name: scale * alpha / rank * B @ A."""
    deltas = {}
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight").removeprefix("transformer.")
        up = state[key.replace("lora_A", "lora_B")]
        alpha = state.get(key.replace("lora_A.weight", "alpha"))
        rank_scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        deltas[f"{module}.weight"] = scale * rank_scale * (up.float() @ down.float())
    if not deltas:
        raise ValueError("no lora_A / lora_B pairs for the transformer")
    return deltas


def read_safetensors(folder: Path) -> dict[str, Tensor]:
    """All tensors of a diffusers model folder: one file, or shards listed in an index."""
    index = next(folder.glob("*.safetensors.index.json"), None)
    files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()}) if index \
        else sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_transformer(folder: Path, dtype: torch.dtype, device: str | torch.device) -> Flux:
    params = FluxParams.from_diffusers(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        model = Flux(params)
    state = from_diffusers(read_safetensors(folder), params)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
