"""One prompt through the whole target."""
import numpy as np

from harness.timing import timed_generate
from harness.types import GenerationRequest


def test_one_prompt_gives_one_image(target, profile, recorder):
    size = profile.get("size", 256)
    result = timed_generate(target, GenerationRequest("a cat holding a sign that says hello world", height=size,
                                                      width=size, num_inference_steps=profile.get("steps", 4)))
    assert result.images.shape == (1, size, size, 3) and result.images.dtype == np.uint8
    assert result.images.std() > 0, "a constant image"
    recorder.metric("latency.single", result.timings["total"], "s", better="lower")
    recorder.image("hello-world", result.images[0])
