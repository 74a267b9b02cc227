"""What the suites share beyond the plugin's fixtures: the prompt sets and requests sized by the profile."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import images

DATA = Path(__file__).resolve().parents[1] / "harness" / "data"


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """The ten-prompt smoke set (harness/data/prompts.txt)."""
    return [line for line in (DATA / "prompts.txt").read_text().splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="session")
def edge_prompts() -> dict[str, str]:
    """Prompts a service must survive (harness/data/edge_prompts.json), by name."""
    return {k: v for k, v in json.loads((DATA / "edge_prompts.json").read_text()).items() if not k.startswith("_")}


@pytest.fixture(scope="session")
def make_request(profile):
    """make_request(prompt, **fields): a request at the profile's size and steps unless told otherwise."""
    return profile.request


@pytest.fixture(scope="session")
def load_request(profile, make_request):
    """load_request(i): the i-th request of a load test, small (the profile's load_size, load_steps)."""
    size = profile.get("load_size")
    return lambda i: make_request(f"load request {i}", height=size, width=size,
                                  num_inference_steps=profile.get("load_steps"), seed=i)


@pytest.fixture(scope="session")
def editor(target):
    """The target, where it takes an image to edit (a FLUX.1-Kontext model); the test skips, saying why, where
    it does not (so do the fixtures that ask for it)."""
    if not target.capabilities.images:
        pytest.skip(f"{target.name} takes no input image: its model is text to image (a Kontext model edits)")
    return target


@pytest.fixture(scope="session")
def make_edit(profile, make_request):
    """make_edit(prompt, **fields): a request to edit the card (harness.images.card) at the profile's size and
    steps, the input sized by the profile's image_fit."""
    size = profile.get("size")
    card = images.card(size, size)
    return lambda prompt="make the disc red", **fields: make_request(
        prompt, **{"image": card, "image_fit": profile.get("image_fit"), **fields})
