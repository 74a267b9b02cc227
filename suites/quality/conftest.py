"""What the quality suite's comparisons share: the target's and the reference's images over the prompt set,
rendered once for every test that compares them."""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class Pairs:
    prompts: list[str]
    ours: np.ndarray    # uint8 (N, H, W, 3): the target's image for each prompt
    theirs: np.ndarray  # the reference's, for the same requests
    floor: np.ndarray   # the reference's again, each the first of a batch of two: the noise floor
                        # (harness/metrics/floor.py), as far as images the contract calls equal are apart here


@pytest.fixture(scope="module")
def pairs(target, _oracle, prompt_set, make_request, profile) -> Pairs:
    """One image per prompt from the target and from the reference, and the reference's through a batch, for
    the profile's first quality_prompts prompts of the set. A prompt's seed comes from its text, so its images
    are the same in any set, and runs over shards of a set draw the images of one run over the whole. The
    reference's renderer, if a miss started one, is closed before the tests run."""
    chosen = prompt_set[: profile.get("quality_prompts")]
    ours, theirs, floor = [], [], []
    try:
        for prompt in chosen:
            request = make_request(prompt.text, seed=zlib.crc32(prompt.text.encode()))
            ours.append(target.generate(request).images[0])
            theirs.append(_oracle.generate(request).images[0])
            floor.append(_oracle.generate(dataclasses.replace(request, num_images=2)).images[0])
    finally:
        _oracle.close()
    return Pairs([p.text for p in chosen], *map(np.stack, (ours, theirs, floor)))
