"""Perceptual, semantic and distributional distances between the target's images and the reference's, measured
by networks whose weights are on disk (harness/metrics/weights.py). Without its weights a metric skips, naming
the files it looked for; a profile that requires it (`require = ["lpips"]`) fails the run instead, so a gate
cannot pass for want of its metric."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from harness.metrics.weights import Missing

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # after the performance suite: its peaks are measured


def loaded(metrics: set[str], profile, build):
    """BUILD(), the network METRICS are measured with; a skip naming the weights it could not find, or a
    failure where the profile requires one of METRICS."""
    try:
        return build()
    except Missing as e:
        required = sorted(metrics & set(profile.require))
        if required:
            pytest.fail(f"profile {profile.name} requires {', '.join(required)}: {e}", pytrace=False)
        pytest.skip(str(e))


# Each network is a fixture before `pairs`: without its weights a test skips before any image is rendered.
@pytest.fixture(scope="module")
def lpips(profile):
    from harness.metrics.perceptual import LPIPS

    return loaded({"lpips"}, profile, lambda: LPIPS(profile.get("lpips_net"), DEVICE))


@pytest.fixture(scope="module")
def clip(profile):
    from harness.metrics.semantic import CLIP

    return loaded({"clip_score", "cmmd"}, profile,
                  lambda: CLIP(profile.get("clip_model"), profile.get("clip_pretrained"), DEVICE))


@pytest.fixture(scope="module")
def embeddings(clip, pairs) -> tuple[np.ndarray, np.ndarray]:
    """CLIP's embeddings of the target's images and of the reference's, for CLIP score and CMMD alike."""
    return clip.images(pairs.ours), clip.images(pairs.theirs)


@pytest.fixture(scope="module")
def inception(profile):
    from harness.metrics.distribution import Inception

    return loaded({"fid"}, profile, lambda: Inception(DEVICE, profile.get("fid_features")))


def test_lpips_against_the_reference(lpips, pairs, recorder):
    d = lpips(pairs.ours, pairs.theirs)
    recorder.metrics("quality.lpips", {"mean": float(d.mean()), "max": float(d.max())}, better="lower")
    recorder.note(f"LPIPS ({lpips.net}) over {len(d)} prompts")


def test_clip_score(clip, pairs, embeddings, recorder):
    from harness.metrics.semantic import score

    texts = clip.texts(pairs.prompts)
    ours, theirs = embeddings
    mine, reference = score(ours, texts), score(theirs, texts)
    recorder.metric("clip_score", float(mine.mean()), better="higher")
    recorder.metric("clip_score.reference", float(reference.mean()))
    recorder.metric("clip_score.delta", float((mine - reference).mean()), better="higher")


def test_cmmd_between_the_image_sets(embeddings, recorder):
    from harness.metrics.distribution import cmmd

    ours, theirs = embeddings
    recorder.metric("quality.cmmd", cmmd(ours, theirs), better="lower")
    recorder.artifact("clip-embeddings.npz", npz(target=ours, reference=theirs))  # shards merge by concatenation


def test_fid_between_the_image_sets(inception, pairs, recorder):
    from harness.metrics.distribution import fid

    ours, theirs = inception(pairs.ours), inception(pairs.theirs)
    recorder.metric("quality.fid", fid(ours, theirs), better="lower")
    recorder.artifact("inception-features.npz", npz(target=ours, reference=theirs))  # shards merge by concatenation


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()
