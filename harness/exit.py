"""How fluxgate's child processes end once their work is done and said."""
from __future__ import annotations

import os
import sys


def now(code: int = 0) -> None:
    """Flush what was printed and leave, skipping the interpreter's teardown: with torch, transformers and
    diffusers imported, unloading their modules takes about a second that a parent waiting on the exit (an
    Isolated target's close, a cold start, a service's shutdown) would spend for nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
