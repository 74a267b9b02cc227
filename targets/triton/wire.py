"""The `flux` model's inputs as Triton tensors, both ways: the client builds them from a request, the BLS
model reads the request back from them. Shared, so the two sides cannot drift apart."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from harness import images
from harness.types import GenerationRequest, InvalidRequest

REQUIRED = object()  # the default of an input that may not be left out


class Input(NamedTuple):
    kind: str            # Triton's type
    dtype: type          # numpy's
    dims: list[int]
    default: Any = REQUIRED  # the request's value when the input is left out


INPUTS = {
    "prompt": Input("BYTES", np.object_, [-1]),
    "num_inference_steps": Input("INT32", np.int32, [1]),
    "guidance_scale": Input("FP32", np.float32, [1]),
    "height": Input("INT32", np.int32, [1], 1024),
    "width": Input("INT32", np.int32, [1], 1024),
    "seed": Input("INT64", np.int64, [1], None),   # left out: a random seed, as GenerationRequest(seed=None)
    "num_images": Input("INT32", np.int32, [1], 1),
    "image": Input("UINT8", np.uint8, [-1, -1, 3], None),  # RGB pixels to edit; left out: text to image
    "image_fit": Input("BYTES", np.object_, [1], "preferred"),
}


def inputs_of(request: GenerationRequest, max_image_side: int) -> dict[str, np.ndarray]:
    """One array per input the request sets; a value its Triton type cannot hold is refused here, naming the
    field. The image goes as its RGB pixels, whatever form the request holds it in: an encoded one is decoded
    here, so one with a side past max_image_side is refused from its header, before its pixels cost anything."""
    arrays = {}
    for name, (kind, dtype, _, _) in INPUTS.items():
        value = getattr(request, name)
        if value is None:
            continue
        if name == "image":
            arrays[name] = images.pixels(value, max_image_side)
        elif kind == "BYTES":
            texts = [value] if isinstance(value, str) else list(value)
            arrays[name] = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        elif np.issubdtype(dtype, np.integer) and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise InvalidRequest(f"{name}={value!r}: must fit {kind}, the type of Triton's input")
        else:
            arrays[name] = np.array([value], dtype=dtype)
    return arrays


def request_of(arrays: dict[str, np.ndarray | None]) -> GenerationRequest:
    """The request the arrays carry; required inputs missing, or not one value each, are InvalidRequest."""
    values = {}
    for name, spec in INPUTS.items():
        array = arrays.get(name)
        if array is None:
            if spec.default is REQUIRED:
                raise InvalidRequest(f"{name}: required")
            values[name] = spec.default
        elif name == "prompt":
            prompts = [p.decode("utf-8", errors="replace") for p in array.reshape(-1)]
            values[name] = prompts[0] if len(prompts) == 1 else prompts
        elif name == "image":
            values[name] = array  # its rules are check_request's, as any target's
        elif array.size != 1:
            raise InvalidRequest(f"{name}={array.tolist()!r}: must be one value")
        elif spec.kind == "BYTES":
            values[name] = array.reshape(-1)[0].decode("utf-8", errors="replace")
        else:
            values[name] = array.reshape(-1)[0].item()
    return GenerationRequest(**values)
