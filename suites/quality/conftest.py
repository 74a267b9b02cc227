"""What the quality suite's comparisons share: the target's and the reference's images over the prompt set
(and their edits of the card, for a target that edits), rendered once for every test that compares them."""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from harness import images


@dataclass
class Pairs:
    prompts: list[str]
    ours: np.ndarray    # uint8 (N, H, W, 3): the target's image for each prompt
    theirs: np.ndarray  # the reference's, for the same requests
    floor: np.ndarray   # the reference's again, each the first of a batch of two: the noise floor
                        # (harness/metrics/floor.py), as far as images the contract calls equal are apart here


@pytest.fixture(scope="module")
def pairs(target, _oracle, prompt_share, make_request) -> Pairs:
    """One image per prompt from the target and from the reference, and the reference's through a batch, for
    the profile's first quality_prompts prompts of the set (a shard's share of them: prompt_share). A prompt's
    seed comes from its text, so its images are the same in any set, and runs over shards of a set draw the
    images of one run over the whole."""
    return render(target, _oracle, prompt_share, make_request)


@pytest.fixture(scope="module")
def edit_pairs(editor, _oracle, prompt_share, make_edit) -> Pairs:
    """The same for edits of the card (make_edit), where the target edits."""
    return render(editor, _oracle, prompt_share, make_edit)


def render(target, oracle, chosen, make) -> Pairs:
    """The pairs for MAKE(prompt, seed=...) of each prompt. The reference's renderer, if a miss started one, is
    closed before the tests run: a second model must not sit beside the target and the metrics' networks."""
    ours, theirs, floor = [], [], []
    try:
        for prompt in chosen:
            request = make(prompt.text, seed=zlib.crc32(prompt.text.encode()))
            ours.append(target.generate(request).images[0])
            theirs.append(oracle.generate(request).images[0])
            floor.append(oracle.generate(dataclasses.replace(request, num_images=2)).images[0])
    finally:
        oracle.close()
    return Pairs([p.text for p in chosen], *map(np.stack, (ours, theirs, floor)))


@pytest.fixture(scope="module")
def identity_edit(editor, make_edit) -> tuple[np.ndarray, np.ndarray]:
    """(input, edit) for a prompt that asks for no change, the input at the edit's size: what of the input an
    edit keeps."""
    request = make_edit("Keep the image exactly as it is. Change nothing.", seed=1)
    edit = editor.generate(request).images[0]
    return images.resized(images.pixels(request.image), *edit.shape[:2]), edit
