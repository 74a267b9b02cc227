"""What the suites share beyond the plugin's fixtures: the prompt sets and requests sized by the profile."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
