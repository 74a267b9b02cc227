"""Targets that deserve to fail: the reference with one flaw each, for showing that gates catch them.

Used by SPEC from a run, e.g. --target tests.fakes:Flawed:delay=0.5 (the repository root is on the path).
"""
from __future__ import annotations

import os
import time

from harness.types import TargetError, Unavailable
from targets.reference import ReferenceTarget


class Flawed(ReferenceTarget):
    name = "flawed"

    def __init__(self, delay: str = "0", fail_after: str = "0", die_after: str = "0", refuse_start: str = "",
                 **options):
        super().__init__(**options)
        self.delay = float(delay)            # seconds added to every request
        self.fail_after = int(fail_after)    # then every request raises TargetError, as a dead server would
        self.die_after = int(die_after)      # then the process exits at once, as a crash would
        self.refuse_start = refuse_start     # start() raises Unavailable with this reason
        self.served = 0

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
        time.sleep(self.delay)
        return super().generate(request)
