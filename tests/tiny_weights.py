"""Small random-weight files in the real formats of the learned metrics' weights, written where
harness/metrics/weights.py looks, so every library's own loader runs and nothing is downloaded.

torchvision's AlexNet (244 MB) and torch-fidelity's InceptionV3 (95 MB) keep their keys and shapes, but each
tensor is a strided view of a few random numbers: torch.save keeps the view's small storage, and the loaders
copy it into full-size parameters. open_clip's model is a tiny config of its own, in its "local-dir:" layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.metrics.weights import INCEPTION, LPIPS_BACKBONES

TINY_CLIP = {  # a ViT of 2 layers on 32-pixel images; the text tower keeps CLIP's vocabulary (its tokenizer's)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def strided(shape: torch.Size, generator: torch.Generator, fan_in: int) -> torch.Tensor:
    """A tensor of SHAPE whose elements repeat a few random numbers (the sum of its sizes), of variance
    1 / fan_in: through InceptionV3 the features stay near 1 (Kaiming's 2 / fan_in grows them about 3x a layer,
    these weights being correlated), so FID's float64 arithmetic keeps its precision."""
    base = torch.randn(max(sum(shape) - len(shape) + 1, 1), generator=generator) / fan_in**0.5
    return base.as_strided(shape, [1] * len(shape))


def small_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """MODEL's state dict (built on the meta device: no memory) as small tensors: weights strided and random,
    batch norms the identity (mean 0, variance 1, scale 1, shift 0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith(("running_var", "bn.weight")):
            out[key] = torch.ones(1).expand(value.shape)
        elif key.endswith(("running_mean", "bias")):
            out[key] = torch.zeros(1).expand(value.shape)
        else:
            out[key] = strided(value.shape, g, max(value[0].numel(), 1) if value.dim() > 1 else 1)
    return out


def write_lpips_backbone(root: Path, net: str = "alex") -> Path:
    import torchvision

    with torch.device("meta"):
        model = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}[net]()
    path = root / "hub" / "checkpoints" / LPIPS_BACKBONES[net]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small_state(model), path)
    return path


def write_inception(root: Path) -> Path:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Shapes(FeatureExtractorInceptionV3):  # its layers without loading weights: we are making them
        def load_state_dict(self, *args, **kwargs):
            return None

    empty = root / "empty.pth"
    empty.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, empty)
    with torch.device("meta"):
        model = Shapes("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    empty.unlink()
    path = root / "hub" / "checkpoints" / INCEPTION
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small_state(model), path)
    return path


def write_clip(folder: Path) -> str:
    """A tiny open_clip model in the "local-dir:" layout (config and weights); returns its model name."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights there yet: randomly initialised
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return f"local-dir:{folder}"
