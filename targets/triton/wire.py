"""The `flux` model's inputs as Triton tensors, both ways: the client builds them from a request, the BLS
model reads the request back from them. Shared, so the two sides cannot drift apart."""
from __future__ import annotations

import numpy as np

from harness.types import GenerationRequest, InvalidRequest

# name -> (Triton type, numpy type, the default when the input is left out; None: required)
INPUTS = {
    "prompt": ("BYTES", np.object_, None),
    "num_inference_steps": ("INT32", np.int32, None),
    "guidance_scale": ("FP32", np.float32, None),
    "height": ("INT32", np.int32, 1024),
    "width": ("INT32", np.int32, 1024),
    "seed": ("INT64", np.int64, "random"),   # left out: a random seed, as GenerationRequest(seed=None)
    "num_images": ("INT32", np.int32, 1),
}


def inputs_of(request: GenerationRequest) -> dict[str, np.ndarray]:
    """One array per input; a value its Triton type cannot hold is refused here, naming the field."""
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    arrays = {"prompt": np.array([p.encode("utf-8") for p in prompts], dtype=np.object_)}
    for name, (kind, dtype, _) in INPUTS.items():
        value = getattr(request, name)
        if name == "prompt" or value is None:
            continue
        if np.issubdtype(dtype, np.integer) and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise InvalidRequest(f"{name}={value!r}: must fit {kind}, the type of Triton's input")
        arrays[name] = np.array([value], dtype=dtype)
    return arrays


def request_of(arrays: dict[str, np.ndarray | None]) -> GenerationRequest:
    """The request the arrays carry; required inputs missing, or not one value each, are InvalidRequest."""
    values = {}
    for name, (_, _, default) in INPUTS.items():
        array = arrays.get(name)
        if array is None:
            if default is None:
                raise InvalidRequest(f"{name}: required")
            values[name] = None if default == "random" else default
        elif name == "prompt":
            prompts = [p.decode("utf-8", errors="replace") for p in array.reshape(-1)]
            values[name] = prompts[0] if len(prompts) == 1 else prompts
        elif array.size != 1:
            raise InvalidRequest(f"{name}={array.tolist()!r}: must be one value")
        else:
            values[name] = array.reshape(-1)[0].item()
    return GenerationRequest(**values)
