"""The learned metrics' weights: where each is found, or the files it expects; and how to get them.

    python -m harness.metrics [--profile P]         each metric, found (the file) or missing (every file looked
                                                    for); exit 1 if any is missing
    python -m harness.metrics fetch [--profile P]   download what is missing, by each library's own download
                                                    code, into $FLUXGATE_WEIGHTS (open_clip: the Hugging Face cache)
    python -m harness.metrics merge RUN RUN ...     FID and CMMD over the images of several runs together (runs
                                                    over shards of a prompt set give the whole set's)

The profile's settings choose the LPIPS network and the CLIP model (default: cpu-tiny's).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from harness.metrics.weights import INCEPTION, Missing, checkpoint, clip_checkpoint, lpips_backbone, root


def finders(settings) -> dict[str, Callable[[], Path | None]]:
    """Metric -> a function that returns its weights' file (None: a folder holds them) or raises Missing."""
    net, model, tag = settings.lpips_net, settings.clip_model, settings.clip_pretrained
    clip = lambda: clip_checkpoint(model, tag)  # noqa: E731
    return {f"lpips ({net})": lambda: lpips_backbone(net),
            f"clip_score ({model}, {tag})": clip, f"cmmd ({model}, {tag})": clip,
            "fid (InceptionV3)": lambda: checkpoint("fid", INCEPTION)}


def downloads(settings) -> dict[str, tuple[str, Callable[[], object]]]:
    """Network -> (where it comes from, the owning library's download into where weights.py looks)."""
    import torch
    from huggingface_hub.constants import ENDPOINT
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    def torch_hub(url: str) -> tuple[str, Callable[[], object]]:
        return url, lambda: torch.hub.load_state_dict_from_url(url, model_dir=str(root() / "hub" / "checkpoints"))

    cfg = get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    if not cfg:
        raise ValueError(f"open_clip knows no tag {settings.clip_pretrained!r} for {settings.clip_model!r} to fetch")
    backbone = {"alex": AlexNet_Weights, "vgg": VGG16_Weights}[settings.lpips_net].IMAGENET1K_V1
    return {"lpips": torch_hub(backbone.url), "fid": torch_hub(URL_INCEPTION_V3),
            "clip": (ENDPOINT if cfg.get("hf_hub") else cfg["url"], lambda: download_pretrained(cfg))}


def reachable(url: str) -> str | None:
    """Why URL's host cannot be reached (None: it can), found in seconds: the libraries' own downloads retry
    for a minute or more before they give up."""
    host = urlsplit(url).hostname
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        return f"cannot reach {host}: {e}"
    return None


def show(settings) -> int:
    missing = 0
    for name, find in finders(settings).items():
        try:
            path = find()
            print(f"found    {name}: {path or settings.clip_model.removeprefix('local-dir:')}")
        except Missing as e:
            missing += 1
            print(f"missing  {name}: looked for {', '.join(e.paths)}")
    print(f"(weights: {root()}; python -m harness.metrics fetch downloads what is missing)")
    return 1 if missing else 0


def fetch(settings) -> int:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        print("fetch: HF_HUB_OFFLINE is set, so nothing is downloaded: unset it to fetch", file=sys.stderr)
        return 1
    failed = 0
    for network, (url, download) in downloads(settings).items():
        why = reachable(url)
        try:
            if why:
                raise ConnectionError(why)
            download()
            print(f"fetched  {network}")
        except Exception as e:  # any reason a download fails is reported, and the others are still tried
            failed += 1
            print(f"fetch {network}: failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else show(settings)


def merge(runs: list[str]) -> int:
    from harness.metrics.shards import merge as merged

    if len(runs) < 2:
        raise ValueError("merge: give two runs or more")
    for name, (value, counts) in merged(runs).items():
        print(f"{name} = {value:.6g} over {sum(counts)} images ({' + '.join(map(str, counts))} from {len(runs)} runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["list", "fetch", "merge"], default="list")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="merge: run folders or their report.json")
    parser.add_argument("--profile", default="cpu-tiny", metavar="NAME|PATH")
    args = parser.parse_args(argv)
    from harness.gates import Profile

    try:
        if args.command == "merge":
            return merge(args.runs)
        if args.runs:
            raise ValueError(f"{args.command} takes no runs (merge does)")
        settings = Profile.load(args.profile).settings
        return fetch(settings) if args.command == "fetch" else show(settings)
    except ValueError as e:  # a profile, network or tag that cannot be
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
