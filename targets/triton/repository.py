"""A Triton model repository for FLUX (python backend), laid out as the seed's Triton pipeline is: component
models (the seed's four and a VAE encoder, for an image to edit) and the BLS model `flux` that runs the pipeline
through them.

    clip_encoder   prompt BYTES [-1]                      -> pooled FP32 [-1, -1], truncated INT32 [-1]
    t5_encoder     prompt BYTES [-1]                      -> context FP32 [-1, -1, -1], truncated INT32 [-1]
    vae_encoder    image UINT8 [-1, -1, 3] (RGB, at the size the model sees it) -> latents FP32 [1, 16, -1, -1]
    transformer    img, txt, vec, timestep, guidance FP32; height, width INT32 [1]; optional, for an image to
                   edit: cond FP32 [-1, -1, 64] (its packed latents), cond_height, cond_width INT32 [1]
                   -> velocity FP32 [-1, -1, 64]
    vae_decoder    latents FP32 [-1, -1, 64]; height, width INT32 [1]             -> images FP32 [-1, 3, -1, -1]
    flux           prompt BYTES [-1], num_inference_steps INT32 [1], guidance_scale FP32 [1]; optional
                   height, width INT32 [1] (1024), seed INT64 [1] (random), num_images INT32 [1] (1),
                   image UINT8 [-1, -1, 3] (RGB to edit; none: text to image), image_fit BYTES [1] ("preferred")
                   -> images FP32 [-1, 3, -1, -1] in [0, 1], truncated INT32 [-1]

The weights directory (a preset's or a FLUX.1 checkout's), dtype and device are each model's parameters.
"""
from __future__ import annotations

from pathlib import Path

from targets.triton.wire import INPUTS, REQUIRED

ROOT = Path(__file__).resolve().parents[2]

MODELS = {  # name -> (class in targets.triton.models, inputs, outputs, the inputs that may be left out);
            # a tensor is (name, type, dims)
    "clip_encoder": ("ClipEncoder", [("prompt", "BYTES", [-1])],
                     [("pooled", "FP32", [-1, -1]), ("truncated", "INT32", [-1])], set()),
    "t5_encoder": ("T5Encoder", [("prompt", "BYTES", [-1])],
                   [("context", "FP32", [-1, -1, -1]), ("truncated", "INT32", [-1])], set()),
    "vae_encoder": ("VaeEncoder", [("image", "UINT8", [-1, -1, 3])], [("latents", "FP32", [1, 16, -1, -1])], set()),
    "transformer": ("Transformer", [("img", "FP32", [-1, -1, 64]), ("txt", "FP32", [-1, -1, -1]),
                                    ("vec", "FP32", [-1, -1]), ("timestep", "FP32", [-1]), ("guidance", "FP32", [-1]),
                                    ("height", "INT32", [1]), ("width", "INT32", [1]), ("cond", "FP32", [-1, -1, 64]),
                                    ("cond_height", "INT32", [1]), ("cond_width", "INT32", [1])],
                    [("velocity", "FP32", [-1, -1, 64])], {"cond", "cond_height", "cond_width"}),
    "vae_decoder": ("VaeDecoder", [("latents", "FP32", [-1, -1, 64]), ("height", "INT32", [1]),
                                   ("width", "INT32", [1])],
                    [("images", "FP32", [-1, 3, -1, -1])], set()),
    "flux": ("Pipeline", [(name, spec.kind, spec.dims) for name, spec in INPUTS.items()],
             [("images", "FP32", [-1, 3, -1, -1]), ("truncated", "INT32", [-1])],
             {name for name, spec in INPUTS.items() if spec.default is not REQUIRED}),
}

MODEL_PY = '''# Written by fluxgate (targets/triton/repository.py): the model lives in the checkout below.
import sys

sys.path.insert(0, {root!r})
from targets.triton.models import {cls} as TritonPythonModel  # noqa: E402
'''


def tensors(specs: list[tuple[str, str, list[int]]], optional: set[str] = frozenset()) -> str:
    return ",\n".join(f'  {{ name: "{name}" data_type: TYPE_{"STRING" if dtype == "BYTES" else dtype} dims: {dims}'
                      f'{" optional: true" if name in optional else ""} }}'
                      for name, dtype, dims in specs)


def config(name: str, inputs, outputs, optional: set[str], params: dict[str, str], instances: int) -> str:
    parameters = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            f'input [\n{tensors(inputs, optional)}\n]\noutput [\n{tensors(outputs)}\n]\n'
            f'instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n{parameters}\n')


def write(dest: Path, model_dir: Path, dtype: str = "fp32", device: str = "cpu",
          max_sequence_length: int = 512) -> Path:
    """The repository under `dest` for the weights in `model_dir`."""
    for name, (cls, inputs, outputs, optional) in MODELS.items():
        params = {"model_dir": str(model_dir), "dtype": dtype, "device": device,
                  "max_sequence_length": str(max_sequence_length)}
        (dest / name / "1").mkdir(parents=True, exist_ok=True)
        (dest / name / "config.pbtxt").write_text(config(name, inputs, outputs, optional, params, instances=1))
        (dest / name / "1" / "model.py").write_text(MODEL_PY.format(root=str(ROOT), cls=cls))
    return dest
