"""Cancelling work nobody waits for: a service that gave up on a request frees its worker within one step.

The service runs each request inside `scope(token)` on the worker thread and sets the token when the
client goes away or the deadline passes; an in-process target calls `check()` between denoising steps
(and between its stages), which raises Cancelled once the token is set. Outside a scope `check()` does
nothing, so a target called directly never stops early. A target of one's own opts in with one call.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar

from harness.types import Cancelled

_token: ContextVar[threading.Event | None] = ContextVar("fluxgate_cancel", default=None)


@contextmanager
def scope(token: threading.Event):
    """Work done in this thread inside the block stops at its next check() once `token` is set."""
    reset = _token.set(token)
    try:
        yield
    finally:
        _token.reset(reset)


def check() -> None:
    """Raise Cancelled if the work in progress has been given up on."""
    token = _token.get()
    if token is not None and token.is_set():
        raise Cancelled("cancelled: the client went away or the deadline passed")
