"""What the quality suite's comparisons share: the target's and the reference's images over the prompt set,
rendered once for every test that compares them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class Pairs:
    prompts: list[str]
    ours: np.ndarray    # uint8 (N, H, W, 3): the target's image for each prompt
    theirs: np.ndarray  # the reference's, for the same requests


@pytest.fixture(scope="module")
def pairs(target, _oracle, prompts, make_request, profile) -> Pairs:
    """One image per prompt from the target and from the reference (seed 100 + i), for the profile's first
    quality_prompts prompts. The reference's renderer, if a miss started one, is closed before the tests run."""
    chosen = prompts[: profile.get("quality_prompts")]
    ours, theirs = [], []
    try:
        for i, prompt in enumerate(chosen):
            request = make_request(prompt, seed=100 + i)
            ours.append(target.generate(request).images[0])
            theirs.append(_oracle.generate(request).images[0])
    finally:
        _oracle.close()
    return Pairs(chosen, np.stack(ours), np.stack(theirs))
