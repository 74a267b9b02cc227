"""CLIP (open_clip): how well an image matches its prompt, and embeddings of image sets for CMMD.

CLIP score follows torchmetrics' convention: 100 x max(cosine, 0) between the image's and the prompt's
embeddings, per image (seed 000's 0.52 cosine is 52 here).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from harness.metrics.weights import CLIP_SUFFIXES, clip_checkpoint


class CLIP:
    """`CLIP("ViT-L-14", "openai")`: open_clip's model with weights found on disk (harness/metrics/weights.py).
    PRETRAINED is a tag open_clip knows or a file; a "local-dir:FOLDER" model holds its config and weights."""

    def __init__(self, model: str = "ViT-L-14", pretrained: str = "openai", device: str | torch.device = "cpu"):
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg

        path = clip_checkpoint(model, pretrained)
        named = path is not None and not pretrained.endswith(CLIP_SUFFIXES)
        tag = get_pretrained_cfg(model, pretrained) if named else {}  # a tag's activation and normalisation
        options = {"force_quick_gelu": tag.get("quick_gelu", False),
                   **{f"image_{k}": tag[k] for k in ("mean", "std") if k in tag}}
        self.device = torch.device(device)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=str(path) if path else None, device=self.device, **options)
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model)

    @torch.inference_mode()
    def images(self, images: np.ndarray) -> np.ndarray:
        """Unit-length embeddings (N, d) of uint8 (N, H, W, 3) images, preprocessed as the model was trained."""
        batch = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        return self.model.encode_image(batch, normalize=True).float().cpu().numpy()

    @torch.inference_mode()
    def texts(self, prompts: list[str]) -> np.ndarray:
        """Unit-length embeddings (N, d) of prompts (cut at the model's context length)."""
        return self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True).float().cpu().numpy()

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """CLIP score of each image against its prompt: 100 x max(cosine, 0)."""
        return score(self.images(images), self.texts(prompts))


def score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """100 x max(cosine, 0) of each row pair of unit-length embeddings."""
    return 100 * np.maximum((image_embeddings * text_embeddings).sum(axis=1), 0).astype(np.float64)
