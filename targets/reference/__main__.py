"""python -m targets.reference: generate with the reference and with diffusers, compare, write both images.

    python -m targets.reference --prompt "a cat" --size 512 --steps 4 --out results/reference
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness.target import make_target
from harness.types import GenerationRequest, InvalidRequest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="tiny-dev (default) or tiny-schnell")
    parser.add_argument("--model", default=None, help="a FLUX directory in the diffusers layout, instead of a preset")
    parser.add_argument("--prompt", default="a cat holding a sign that says hello world")
    parser.add_argument("--size", type=int, default=512, help="height and width in pixels (a multiple of 16)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/reference"))
    args = parser.parse_args(argv)

    options = ",".join(f"{k}={v}" for k, v in (("preset", args.preset), ("model", args.model),
                                                ("dtype", args.dtype), ("device", args.device)) if v)
    request = GenerationRequest(args.prompt, height=args.size, width=args.size, num_inference_steps=args.steps,
                                guidance_scale=args.guidance, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"request": request.__dict__, "targets": {}}
    images = {}
    try:
        for name in ("reference", "pipeline"):
            with make_target(f"{name}:{options}") as target:
                start = time.perf_counter()
                result = target.generate(request)
                total = time.perf_counter() - start
            images[name] = result.images[0]
            Image.fromarray(images[name]).save(args.out / f"{name}.png")
            summary["targets"][name] = {"seconds": round(total, 4), "timings": result.timings, "info": result.info}
            print(f"{name:10s} {total:7.3f} s  -> {args.out / (name + '.png')}")
    except (InvalidRequest, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diff = np.abs(images["reference"].astype(int) - images["pipeline"].astype(int))
    summary["max_abs_diff"] = int(diff.max())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"max |reference - diffusers| = {diff.max()} (uint8 levels); summary: {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
