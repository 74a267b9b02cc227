"""Perceptual, semantic and distributional distances between the target's images and the reference's, measured
by networks whose weights are on disk (harness/metrics/weights.py). Without its weights a metric skips, naming
the files it looked for; a profile that requires it (`require = ["lpips"]`) fails the run instead, so a gate
cannot pass for want of its metric."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from harness.metrics.floor import over
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
def embeddings(clip, pairs) -> dict[str, np.ndarray]:
    """CLIP's embeddings of the target's images, the reference's and the floor's, for CLIP score and CMMD."""
    return sets(clip.images, pairs)


@pytest.fixture(scope="module")
def inception(profile):
    from harness.metrics.distribution import Inception

    return loaded({"fid"}, profile, lambda: Inception(DEVICE, profile.get("fid_features")))


def test_lpips_against_the_reference(lpips, pairs, recorder):
    d, floor = lpips(pairs.ours, pairs.theirs), lpips(pairs.floor, pairs.theirs)
    recorder.metrics("quality.lpips", {"mean": float(d.mean()), "max": float(d.max())}, better="lower", n=len(d))
    against_floor(recorder, "quality.lpips", float(d.mean()), float(floor.mean()), len(d))
    recorder.note(f"LPIPS ({lpips.net}) over {len(d)} prompts")


def test_an_edit_that_asks_for_no_change_keeps_the_input_by_lpips(lpips, identity_edit, recorder):
    source, edit = identity_edit
    recorder.metric("edit.identity.lpips", float(lpips(edit[None], source[None])[0]), better="lower")


def test_clip_score(clip, pairs, embeddings, recorder):
    from harness.metrics.semantic import score

    texts = clip.texts(pairs.prompts)
    mine, reference = score(embeddings["target"], texts), score(embeddings["reference"], texts)
    n = len(pairs.prompts)
    recorder.metric("clip_score", float(mine.mean()), better="higher", n=n)
    recorder.metric("clip_score.reference", float(reference.mean()), n=n)
    recorder.metric("clip_score.delta", float((mine - reference).mean()), better="higher", n=n)


def test_cmmd_between_the_image_sets(embeddings, recorder):
    from harness.metrics.distribution import cmmd

    between(recorder, "quality.cmmd", cmmd, embeddings)
    recorder.artifact("clip-embeddings.npz", npz(embeddings))  # shards merge by concatenation


def test_fid_between_the_image_sets(inception, pairs, recorder):
    from harness.metrics.distribution import fid

    features = sets(inception, pairs)
    between(recorder, "quality.fid", fid, features)
    recorder.artifact("inception-features.npz", npz(features))  # shards merge by concatenation


def sets(embed, pairs) -> dict[str, np.ndarray]:
    """EMBED of each image set: the target's, the reference's, the floor's (the names shards.py reads)."""
    return {"target": embed(pairs.ours), "reference": embed(pairs.theirs), "floor": embed(pairs.floor)}


def between(recorder, name: str, distance, features: dict[str, np.ndarray]) -> None:
    """NAME, the DISTANCE between the target's set and the reference's, and against the floor's."""
    value, n = distance(features["target"], features["reference"]), len(features["target"])
    recorder.metric(name, value, better="lower", n=n)
    against_floor(recorder, name, value, distance(features["floor"], features["reference"]), n)


def against_floor(recorder, name: str, value: float, floor: float, n: int) -> None:
    """NAME's floor, and VALUE as a multiple of it, each over N images."""
    recorder.metric(f"{name}.floor", floor, n=n)
    recorder.metric(f"{name}.over_floor", over(value, floor), "x", better="lower", n=n)


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()
