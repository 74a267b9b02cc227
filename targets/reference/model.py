"""The FLUX transformer: a flow-matching DiT over packed latents, conditioned on T5, CLIP and time."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from targets.reference.layers import DoubleStreamBlock, EmbedND, LastLayer, MLPEmbedder, SingleStreamBlock, \
    timestep_embedding


@dataclass
class FluxParams:
    in_channels: int = 64            # 16 latent channels x 2x2 packing
    vec_in_dim: int = 768            # CLIP-L pooled output
    context_in_dim: int = 4096       # T5-XXL hidden size
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19                  # double-stream blocks
    depth_single_blocks: int = 38
    axes_dim: list[int] = field(default_factory=lambda: [16, 56, 56])  # RoPE bands for (t, h, w); sum = head dim
    theta: int = 10_000
    guidance_embed: bool = True      # dev is guidance-distilled; schnell is not

    def __post_init__(self):
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or sum(self.axes_dim) != head_dim or any(d % 2 for d in self.axes_dim):
            raise ValueError(f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, axes_dim={self.axes_dim}: "
                             "the head dim must be whole and equal the sum of even RoPE axes")

    @classmethod
    def from_diffusers(cls, config: dict) -> FluxParams:
        """From a diffusers FluxTransformer2DModel config.json."""
        if config.get("patch_size", 1) != 1 or config.get("out_channels") not in (None, config["in_channels"]):
            raise ValueError(f"unsupported transformer config: patch_size={config.get('patch_size')}, "
                             f"out_channels={config.get('out_channels')} (FLUX packs 2x2 before the model)")
        return cls(
            in_channels=config["in_channels"],
            vec_in_dim=config["pooled_projection_dim"],
            context_in_dim=config["joint_attention_dim"],
            hidden_size=config["num_attention_heads"] * config["attention_head_dim"],
            num_heads=config["num_attention_heads"],
            depth=config["num_layers"],
            depth_single_blocks=config["num_single_layers"],
            axes_dim=list(config["axes_dims_rope"]),
            guidance_embed=config["guidance_embeds"],
        )

    def to_diffusers(self) -> dict:
        return dict(
            patch_size=1, in_channels=self.in_channels, out_channels=None,
            num_layers=self.depth, num_single_layers=self.depth_single_blocks,
            attention_head_dim=self.hidden_size // self.num_heads, num_attention_heads=self.num_heads,
            joint_attention_dim=self.context_in_dim, pooled_projection_dim=self.vec_in_dim,
            guidance_embeds=self.guidance_embed, axes_dims_rope=tuple(self.axes_dim),
        )


FLUX_DEV = FluxParams()
FLUX_SCHNELL = FluxParams(guidance_embed=False)


class Flux(nn.Module):
    def __init__(self, params: FluxParams):
        super().__init__()
        self.params = params
        dim = params.hidden_size
        self.pe_embedder = EmbedND(params.theta, params.axes_dim)
        self.img_in = nn.Linear(params.in_channels, dim)
        self.time_in = MLPEmbedder(256, dim)
        self.vector_in = MLPEmbedder(params.vec_in_dim, dim)
        self.guidance_in = MLPEmbedder(256, dim) if params.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(params.context_in_dim, dim)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(dim, params.num_heads, params.mlp_ratio) for _ in range(params.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(dim, params.num_heads, params.mlp_ratio) for _ in range(params.depth_single_blocks))
        self.final_layer = LastLayer(dim, params.in_channels)

    def forward(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, timesteps: Tensor, y: Tensor,
                guidance: Tensor | None = None) -> Tensor:
        # img: (B, L_img, in_channels), txt: (B, L_txt, context_in_dim), y: (B, vec_in_dim)
        # ids: (L, 3); timesteps, guidance: (B,) in [0, 1], scaled by 1000 here as diffusers does
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timesteps.to(img.dtype) * 1000, 256).to(y.dtype))
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("this model is guidance-distilled: pass a guidance value")
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(img.dtype) * 1000, 256).to(y.dtype))
        vec = vec + self.vector_in(y)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=0))

        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        x = torch.cat((txt, img), dim=1)
        for block in self.single_blocks:
            x = block(x, vec, pe)
        return self.final_layer(x[:, txt.shape[1]:], vec)  # (B, L_img, in_channels)
