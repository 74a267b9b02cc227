"""A size off the 16-pixel grid: refused by name, and the target keeps serving."""
import pytest

from harness.types import GenerationRequest, InvalidRequest


def test_size_not_a_multiple_of_16_is_refused(target):
    with pytest.raises(InvalidRequest, match=r"height=1000.*multiple of 16"):
        target.generate(GenerationRequest("a cat", height=1000, width=1024, num_inference_steps=1))
    assert target.generate(GenerationRequest("a cat", height=64, width=64, num_inference_steps=1)).images.shape[0] == 1
