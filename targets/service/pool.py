"""Workers and the bounded queue in front of them: what makes the service shed load instead of piling it up."""
from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from harness import cancel
from harness.target import Target, check_request, make_target
from harness.types import Cancelled, GenerationRequest, GenerationResult, InvalidRequest


@dataclass(frozen=True)
class Settings:
    target: str = "reference:preset=tiny-dev"   # the SPEC each worker is made from
    workers: int = 1           # copies of the target, each serving one request at a time (its own weights)
    max_queue: int = 4         # requests waiting for a free worker; one more gets 429
    timeout: float = 300.0     # seconds a request may take, waiting included; then 504
    lazy: bool = False         # start the workers on the first request, as a scaled-to-zero container does
    max_body: int = 1 << 20    # bytes of request body; more gets 413 before any is parsed. A 20,000-character
                               # prompt written as \uXXXX escapes is 120 kB, so 1 MiB is room enough
    max_upload: int = 48 << 20  # the same on a route that takes an image to edit: a 4096² photo as PNG is
                                # typically 20-35 MB (noise, 50), a third more as base64

    def __post_init__(self):
        for name, low in (("workers", 1), ("max_queue", 0), ("max_body", 1), ("max_upload", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= {low}")
        if not self.timeout > 0:
            raise ValueError(f"timeout={self.timeout!r}: must be > 0 seconds")


class UnknownLora(LookupError):
    """A request names a LoRA the server does not have (404)."""


class Busy(Exception):
    """No room: the queue is full, the workers are still loading, or the service is shutting down."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Pool:
    """`workers` started targets; a request waits for an idle one, up to `max_queue` wait at once.

    The targets are made at once (so a bad SPEC fails before the port opens) and started in the
    background, or on the first request when lazy; `ready` says whether they are.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.targets: list[Target] = [make_target(settings.target) for _ in range(settings.workers)]
        caps = self.targets[0].capabilities
        self.capabilities = dataclasses.replace(caps, concurrency=settings.workers, max_queue=settings.max_queue)
        self.ready = False
        self.closing = False
        self.load_error: str | None = None
        self.pending = 0                       # admitted and not yet finished: waiting + running
        self.service_time = 1.0                # seconds, a moving average: what Retry-After is made of
        self._idle: asyncio.Queue[Target] | None = None
        self._loading: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="fluxgate-worker")

    @property
    def capacity(self) -> int:
        return self.settings.workers + self.settings.max_queue

    async def load(self) -> None:
        """Start every worker, once: one load task that every caller waits on, and that a caller giving
        up (its timeout, a shutdown) does not cancel."""
        if self._loading is None:
            self._idle = asyncio.Queue()
            self._loading = asyncio.ensure_future(self._start_all())
        await asyncio.shield(self._loading)

    async def _start_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for target in self.targets:
                await loop.run_in_executor(self._executor, target.start)
                self._idle.put_nowait(target)
        except Exception as e:  # kept, so /ready and every request can say why
            self.load_error = f"{self.settings.target} did not start: {type(e).__name__}: {e}"
            raise
        self.ready = True

    def admit(self, request: GenerationRequest) -> None:
        """Refuse at once what can never run (InvalidRequest) and what has no room now (Busy)."""
        check_request(request, self.capabilities)
        if request.lora is not None and request.lora not in self.loras():
            raise UnknownLora(f"lora={request.lora!r}: no such LoRA on this server "
                              f"(known: {', '.join(self.loras()) or 'none'})")
        if self.closing:
            raise Busy("the service is shutting down", retry_after=1)
        if self.load_error:
            raise Busy(self.load_error, retry_after=60)
        if not self.ready and not self.settings.lazy:
            raise Busy("the model is still loading", retry_after=5)
        if self.pending >= self.capacity:
            waiting = self.pending - self.settings.workers
            raise Busy(f"{self.settings.workers} worker(s) busy and {waiting} request(s) queued (max_queue "
                       f"{self.settings.max_queue}); try again later",
                       retry_after=max(1, math.ceil(self.service_time * (waiting + 1) / self.settings.workers)))

    async def run(self, request: GenerationRequest, encode=None) -> tuple[GenerationResult, dict, object]:
        """The result, the service's own timings (queue, compute; seconds) and encode(result) done on the
        worker thread. Raises Busy, InvalidRequest, UnknownLora, TimeoutError, or the target's error."""
        self.admit(request)
        self.pending += 1
        loop = asyncio.get_running_loop()
        arrived = time.perf_counter()
        deadline = loop.time() + self.settings.timeout
        try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the queue hands
            async with asyncio.timeout_at(deadline):  # over a worker, giving it to a request whose client is gone
                await self.load()
                target = await self._idle.get()
        except BaseException:
            self.pending -= 1
            raise
        began = time.perf_counter()
        token = threading.Event()
        job = loop.run_in_executor(self._executor, _work, target, request, encode, token)

        def finished(job):  # the worker is free only when its work is, whether or not anyone still waits for it
            self._idle.put_nowait(target)
            self.pending -= 1
            if job.cancelled() or isinstance(job.exception(), Cancelled):
                return  # stopped early: says nothing of how long a request takes
            self.service_time = 0.8 * self.service_time + 0.2 * (time.perf_counter() - began)

        job.add_done_callback(finished)
        try:
            async with asyncio.timeout_at(deadline):
                result, encoded = await asyncio.shield(job)
        except BaseException:  # past the deadline, or the caller gave up (its client went away): stop the work
            token.set()
            raise
        return result, {"queue": began - arrived, "compute": time.perf_counter() - began}, encoded

    def loras(self) -> list[str]:
        return self.targets[0].loras()

    def close(self) -> None:
        self.closing = True
        self._executor.shutdown(wait=True)
        for target in self.targets:
            target.close()


def _work(target: Target, request: GenerationRequest, encode, token: threading.Event) -> tuple[GenerationResult, object]:
    with cancel.scope(token):
        result = target.generate(request)
    return result, (encode(result) if encode else None)


def invalid_field(error: InvalidRequest) -> str | None:
    """The field an InvalidRequest names ("height=1000: ..." -> "height")."""
    head = str(error).split("=", 1)[0]
    return head if head.isidentifier() else None

