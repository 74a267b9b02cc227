"""A Triton model repository for FLUX (python backend), laid out as the seed's Triton pipeline is: four
component models and the BLS model `flux` that runs the pipeline through them.

    clip_encoder   prompt BYTES [-1]                      -> pooled FP32 [-1, -1], truncated INT32 [-1]
    t5_encoder     prompt BYTES [-1]                      -> context FP32 [-1, -1, -1], truncated INT32 [-1]
    transformer    img, txt, vec, timestep, guidance FP32; height, width INT32 [1] -> velocity FP32 [-1, -1, 64]
    vae_decoder    latents FP32 [-1, -1, 64]; height, width INT32 [1]             -> images FP32 [-1, 3, -1, -1]
    flux           prompt BYTES [-1], num_inference_steps INT32 [1], guidance_scale FP32 [1]; optional
                   height, width INT32 [1] (1024), seed INT64 [1] (random), num_images INT32 [1] (1)
                   -> images FP32 [-1, 3, -1, -1] in [0, 1], truncated INT32 [-1]

The weights directory (a preset's or a FLUX.1 checkout's), dtype and device are each model's parameters.
"""
from __future__ import annotations

from pathlib import Path

from targets.triton.wire import INPUTS

ROOT = Path(__file__).resolve().parents[2]

MODELS = {  # name -> (class in targets.triton.models, inputs, outputs); a tensor is (name, type, dims)
    "clip_encoder": ("ClipEncoder", [("prompt", "BYTES", [-1])],
                     [("pooled", "FP32", [-1, -1]), ("truncated", "INT32", [-1])]),
    "t5_encoder": ("T5Encoder", [("prompt", "BYTES", [-1])],
                   [("context", "FP32", [-1, -1, -1]), ("truncated", "INT32", [-1])]),
    "transformer": ("Transformer", [("img", "FP32", [-1, -1, 64]), ("txt", "FP32", [-1, -1, -1]),
                                    ("vec", "FP32", [-1, -1]), ("timestep", "FP32", [-1]), ("guidance", "FP32", [-1]),
                                    ("height", "INT32", [1]), ("width", "INT32", [1])],
                    [("velocity", "FP32", [-1, -1, 64])]),
    "vae_decoder": ("VaeDecoder", [("latents", "FP32", [-1, -1, 64]), ("height", "INT32", [1]),
                                   ("width", "INT32", [1])],
                    [("images", "FP32", [-1, 3, -1, -1])]),
    "flux": ("Pipeline", [(name, kind, [-1] if name == "prompt" else [1]) for name, (kind, _, _) in INPUTS.items()],
             [("images", "FP32", [-1, 3, -1, -1]), ("truncated", "INT32", [-1])]),
}

MODEL_PY = '''# Written by fluxgate (targets/triton/repository.py): the model lives in the checkout below.
import sys

sys.path.insert(0, {root!r})
from targets.triton.models import {cls} as TritonPythonModel  # noqa: E402
'''


def tensors(kind: str, specs: list[tuple[str, str, list[int]]]) -> str:
    optional = {name for name, (_, _, default) in INPUTS.items() if default is not None}
    return ",\n".join(f'  {{ name: "{name}" data_type: TYPE_{"STRING" if dtype == "BYTES" else dtype} dims: {dims}'
                      f'{" optional: true" if kind == "input" and name in optional else ""} }}'
                      for name, dtype, dims in specs)


def config(name: str, inputs, outputs, params: dict[str, str], instances: int) -> str:
    parameters = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            f'input [\n{tensors("input", inputs)}\n]\noutput [\n{tensors("output", outputs)}\n]\n'
            f'instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n{parameters}\n')


def write(dest: Path, model_dir: Path, dtype: str = "fp32", device: str = "cpu",
          max_sequence_length: int = 512) -> Path:
    """The repository under `dest` for the weights in `model_dir`."""
    for name, (cls, inputs, outputs) in MODELS.items():
        params = {"model_dir": str(model_dir), "dtype": dtype, "device": device,
                  "max_sequence_length": str(max_sequence_length)}
        (dest / name / "1").mkdir(parents=True, exist_ok=True)
        (dest / name / "config.pbtxt").write_text(config(name, inputs, outputs, params, instances=1))
        (dest / name / "1" / "model.py").write_text(MODEL_PY.format(root=str(ROOT), cls=cls))
    return dest
