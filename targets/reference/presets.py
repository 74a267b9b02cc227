"""Tiny, real-shaped FLUX models, built from a fixed seed and saved once in the diffusers layout.

Every part is the real class a FLUX.1 directory holds (CLIPTextModel, T5EncoderModel, AutoencoderKL with 16
latent channels and 8x downsampling, FluxTransformer2DModel, FlowMatchEulerDiscreteScheduler, CLIP and T5
tokenizers), only narrow and shallow, so every loader runs for real with no download.

Weights come from numpy's legacy RandomState (whose stream is frozen by policy) as uniform values, seeded
per tensor from its name: integer arithmetic and one exact scaling, so the same preset has the same bytes
on every machine, whatever torch's own initialisers do.
"""
from __future__ import annotations

import os
import re
import shutil
import string
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.cache import cache_dir
from targets.reference.model import FluxParams

VERSION = 2  # part of the cache path: bump it when what a preset builds changes


@dataclass(frozen=True)
class Tiny:
    """A small FLUX; the defaults make 512x512 at 4 steps take about a second on a CPU."""
    guidance: bool = True                    # dev-style guidance embedding; schnell has none
    kontext: bool = False                    # FLUX.1-Kontext: the same model, saved as FluxKontextPipeline,
                                             # which edits an input image (its VAE encoder is used)
    hidden: int = 64                         # transformer width = heads x head dim
    heads: int = 2
    axes_dim: tuple[int, ...] = (4, 14, 14)  # RoPE bands over (t, h, w), as FLUX's (16, 56, 56) of 128
    depth: int = 2                           # double-stream blocks
    depth_single: int = 4
    text_dim: int = 32                       # CLIP width (the pooled vector) and T5 d_model (the context)
    vae_channels: tuple[int, ...] = (8, 16, 32, 32)  # four levels: 8x down, as the real VAE
    seed: int = 0

    def params(self) -> FluxParams:
        return FluxParams(vec_in_dim=self.text_dim, context_in_dim=self.text_dim, hidden_size=self.hidden,
                          num_heads=self.heads, depth=self.depth, depth_single_blocks=self.depth_single,
                          axes_dim=list(self.axes_dim), guidance_embed=self.guidance)


PRESETS: dict[str, Tiny] = {
    "tiny-dev": Tiny(guidance=True),
    "tiny-schnell": Tiny(guidance=False),
    "tiny-kontext": Tiny(kontext=True, seed=1),  # its own weights: another model, as Kontext is
}


def ensure(name: str) -> Path:
    """The preset's directory, built on first use. Safe when several processes race to build it."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: unknown (known: {', '.join(PRESETS)})")
    path = cache_dir() / "presets" / f"{name}-v{VERSION}"
    if not (path / "model_index.json").is_file():
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save(PRESETS[name], tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process finished first: theirs is the same bytes
            shutil.rmtree(tmp)
    return path


def save(tiny: Tiny, path: Path) -> Path:
    """Write the model in the diffusers layout through diffusers' own save_pretrained, and a LoRA for it."""
    pipe = build(tiny)
    pipe.save_pretrained(path, safe_serialization=True)
    save_lora(pipe.transformer, path / "loras" / "tiny-style.safetensors", key=f"{tiny.seed}/lora")
    return path


def save_lora(transformer: nn.Module, path: Path, key: str, rank: int = 4) -> Path:
    """A rank-`rank` LoRA on every attention projection, in the layout diffusers and PEFT save (a trained
    one's B is not zero, so neither is this one's)."""
    from safetensors.torch import save_file

    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and re.search(r"attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0)$", name):
            a, b = nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, module.out_features, bias=False)
            fill(a, f"{key}/{name}/A")
            fill(b, f"{key}/{name}/B")
            state[f"transformer.{name}.lora_A.weight"] = a.weight.detach().contiguous()
            state[f"transformer.{name}.lora_B.weight"] = b.weight.detach().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    return path


def build(tiny: Tiny):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxPipeline, \
        FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    d = tiny.text_dim
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=d,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=d, d_kv=d // 2, d_ff=2 * d, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, pad_token_id=tokenizer_2.pad_token_id,
        eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=tokenizer_2.pad_token_id))
    levels = len(tiny.vae_channels)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tiny.vae_channels, layers_per_block=1, latent_channels=16,
        norm_num_groups=min(tiny.vae_channels), scaling_factor=0.3611, shift_factor=0.1159,  # FLUX.1's
        use_quant_conv=False, use_post_quant_conv=False)
    transformer = FluxTransformer2DModel(**tiny.params().to_diffusers())
    for name, module in [("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2), ("vae", vae),
                         ("transformer", transformer)]:
        fill(module, f"{tiny.seed}/{name}")
    # dev shifts its schedule by image size; schnell is distilled to run unshifted (as the real configs say)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True) if tiny.guidance \
        else FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipeline = FluxKontextPipeline if tiny.kontext else FluxPipeline
    return pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                    text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def fill(module: nn.Module, key: str) -> None:
    """Overwrite every parameter with uniform values seeded from key/name: matrices scaled by fan-in,
    norm gains near 1, biases near 0."""
    for name, p in module.named_parameters():
        u = np.random.RandomState(zlib.crc32(f"{key}/{name}".encode())).random_sample(p.numel()) * 2 - 1
        if p.ndim > 1:
            values = u * np.sqrt(3 / np.prod(p.shape[1:]))  # unit variance out for unit variance in
        elif name.endswith("bias"):
            values = u * 0.02
        else:
            values = 1 + u * 0.1
        with torch.no_grad():
            p.copy_(torch.from_numpy(values.reshape(p.shape)))


def clip_tokenizer():
    """Byte-level BPE over the 256 byte symbols, each alone or ending a word: CLIP's scheme with no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def t5_tokenizer():
    """A unigram vocabulary of printable characters, with and without the word-start marker, as T5's."""
    from transformers import T5Tokenizer

    chars = sorted(set(string.printable) - set(string.whitespace))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
