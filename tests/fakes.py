"""Targets that deserve to fail: the reference with one flaw each, for showing that the gates catch them.

Used by SPEC from a run, e.g. --target tests.fakes:Flawed:delay=0.5 (the repository root is on the path).
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from harness.types import TargetError, Unavailable
from targets.optimized import OptimizedTarget
from targets.reference import ReferenceTarget


class Flawed(ReferenceTarget):
    name = "flawed"

    def __init__(self, delay: str = "0", noise: str = "0", colour_shift: str = "0", ignore_seed: str = "",
                 ignore_lora: str = "", ignore_image: str = "", raise_on: str = "", leak_mb: str = "0",
                 fail_after: str = "0", die_after: str = "0", refuse_start: str = "", **options):
        super().__init__(**options)
        self.delay = float(delay)                # seconds added to every request
        self.noise = float(noise)                # gaussian pixel noise, in uint8 levels
        self.colour_shift = int(colour_shift)    # added to the red channel
        self.ignore_seed = bool(ignore_seed)     # every request runs with seed 0
        self.ignore_lora = bool(ignore_lora)     # a LoRA is accepted and not applied
        self.ignore_image = bool(ignore_image)   # an image to edit is accepted and not looked at
        self.raise_on = raise_on                 # TargetError for prompts containing this word
        self.leak_mb = float(leak_mb)            # memory kept forever per request
        self.fail_after = int(fail_after)        # then every request raises TargetError, as a dead server would
        self.die_after = int(die_after)          # then the process exits at once, as a crash would
        self.refuse_start = refuse_start         # start() raises Unavailable with this reason
        self.served, self.hoard = 0, []

    def start(self):
        if self.refuse_start:
            raise Unavailable(self.refuse_start)
        super().start()

    def generate(self, request):
        self.served += 1
        if self.die_after and self.served > self.die_after:
            os._exit(17)
        if self.fail_after and self.served > self.fail_after:
            raise TargetError(f"the target died after {self.fail_after} requests")
        if self.raise_on and self.raise_on in repr(request.prompt):  # whatever type the prompt is
            raise TargetError(f"cannot draw a {self.raise_on}")
        if self.ignore_seed:
            request = dataclasses.replace(request, seed=0)
        if self.ignore_lora:
            request = dataclasses.replace(request, lora=None)
        if self.ignore_image and request.image is not None:  # the same image whatever it is given
            request = dataclasses.replace(request, image=np.zeros((64, 64, 3), np.uint8))
        time.sleep(self.delay)
        self.hoard.append(np.ones(int(self.leak_mb * 2**20), np.uint8))  # ones: the pages are touched
        result = super().generate(request)
        images = result.images.astype(float)
        if self.noise:
            images += np.random.default_rng().normal(0, self.noise, images.shape)
        images[..., 0] += self.colour_shift
        result.images = images.clip(0, 255).round().astype(np.uint8)
        return result


class Unapplied(OptimizedTarget):
    """The optimized target that takes its options and applies none of them: its evidence says so."""

    def apply(self) -> None:
        pass


class Uncached(OptimizedTarget):
    """The optimized target whose compile cache file is written but never read: each start compiles anew, and
    its evidence says that the file it found was not loaded."""

    def load_compile_cache(self) -> None:
        pass
