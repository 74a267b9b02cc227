"""Where the learned metrics find their weights: on disk, read by each library's own loader, never fetched during
a run (`python -m harness.metrics fetch` downloads them where the network allows).

$FLUXGATE_WEIGHTS (default $FLUXGATE_CACHE/weights, ~/.cache/fluxgate/weights) is laid out as torch's hub
directory is, beside open_clip's files:

    hub/checkpoints/alexnet-owt-7be5be79.pth                   LPIPS, net "alex": torchvision's AlexNet
    hub/checkpoints/vgg16-397923af.pth                         LPIPS, net "vgg": torchvision's VGG16
    hub/checkpoints/weights-inception-2015-12-05-6726825d.pth  FID: torch-fidelity's InceptionV3
    open_clip/<model>/<pretrained>.safetensors (or .bin)       CLIP score and CMMD

Each is also found where its library keeps it: torch's hub ($TORCH_HOME/hub/checkpoints) and, for open_clip's
named weights, the Hugging Face cache. LPIPS's linear layers ship inside the lpips package.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from harness.cache import cache_dir

LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}  # torchvision's file names
INCEPTION = "weights-inception-2015-12-05-6726825d.pth"                               # torch-fidelity's
CLIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class Missing(LookupError):
    """A metric's weights are nowhere on disk; the message names every file looked for."""

    def __init__(self, metric: str, paths: list[Path | str]):
        self.metric, self.paths = metric, [str(p) for p in paths]
        super().__init__(f"{metric}: no weights on disk: looked for {' or '.join(self.paths)} "
                         "(python -m harness.metrics fetch downloads them)")


def root() -> Path:
    """$FLUXGATE_WEIGHTS, else weights/ in the fluxgate cache."""
    if os.environ.get("FLUXGATE_WEIGHTS"):
        return Path(os.environ["FLUXGATE_WEIGHTS"])
    return cache_dir() / "weights"


def lpips_backbone(net: str) -> Path:
    """The checkpoint of LPIPS's backbone NET (its linear layers ship with the lpips package)."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"lpips_net={net!r}: must be one of {', '.join(LPIPS_BACKBONES)}")
    return checkpoint("lpips", LPIPS_BACKBONES[net])


def checkpoint(metric: str, filename: str) -> Path:
    """A torch hub checkpoint: ours first, then torch's own hub."""
    places = [root() / "hub" / "checkpoints" / filename, Path(torch.hub.get_dir()) / "checkpoints" / filename]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise Missing(metric, places)
    return found


@contextmanager
def hub_holding(path: Path):
    """torch's hub pointed at the one that holds a checkpoint, for loaders that read only from torch's hub
    (torchvision's pretrained backbones): it finds the file there and downloads nothing."""
    before = torch.hub._hub_dir  # None unless set_dir() was called: then $TORCH_HOME decides, again after
    torch.hub.set_dir(str(path.parent.parent))
    try:
        yield
    finally:
        torch.hub._hub_dir = before


def clip_checkpoint(model: str, pretrained: str) -> Path | None:
    """open_clip's weights for MODEL: PRETRAINED a file, or a tag (e.g. "openai") found under our root or in the
    Hugging Face cache; None for a "local-dir:" model, whose folder holds its own. Missing if not on disk."""
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise Missing("clip", [folder / "open_clip_config.json"])
        return None
    if not pretrained:
        raise ValueError(f"clip_pretrained='' for clip_model={model!r}: name an open_clip tag (e.g. 'openai') or a "
                         "weights file")
    if pretrained.endswith(CLIP_SUFFIXES):
        if not Path(pretrained).is_file():
            raise Missing("clip", [pretrained])
        return Path(pretrained)
    places: list[Path | str] = [root() / "open_clip" / model / f"{pretrained}{s}" for s in CLIP_SUFFIXES[:2]]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        cached, where = hf_cached(model, pretrained)
        found = cached
        places += where
    if found is None:
        raise Missing("clip", places)
    return Path(found)


def hf_cached(model: str, tag: str) -> tuple[str | None, list[str]]:
    """(the cached file, or None; where it was looked for) for open_clip's MODEL and TAG in the Hugging Face
    cache, under the names open_clip downloads (safetensors first)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg

    hub = get_pretrained_cfg(model, tag).get("hf_hub", "")
    if not hub:
        return None, [f"(open_clip knows no tag {tag!r} for {model!r} on the Hugging Face hub)"]
    repo, name = os.path.split(hub)
    names = [name] if name else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    looked = []
    for n in names:
        hit = try_to_load_from_cache(repo, n)
        if isinstance(hit, str):
            return hit, []
        looked.append(f"the Hugging Face cache's {repo}/{n}")
    return None, looked
