"""Cold start of an in-process target, measured in a fresh interpreter: from spawning Python to the first image.

A second copy started in the process under test would find torch imported, CUDA initialised and the
allocator warm; here every phase is paid again, as a new worker or container pays it. What is not made cold:
the OS page cache, which may still hold the weights files from an earlier load (so "load" can be a disk read
or a memory copy), and the disk caches of compilers (torch.compile, Triton kernels) where a target uses them.
"""
from __future__ import annotations

import time

STARTED = time.time()  # the child's first line, before any heavy import: ends the "interpreter" phase

import dataclasses  # noqa: E402  (after the clock, on purpose)
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from harness.types import GenerationRequest  # noqa: E402  (dataclasses and numpy: light)

TAG = "FLUXGATE-COLDSTART "  # marks the child's answer among whatever libraries print


def cold_start(spec: str, request: GenerationRequest, timeout: float = 600,
               env: dict[str, str] | None = None) -> dict[str, float]:
    """Seconds per phase ("interpreter", "imports", "device", "load", "first_request") and "total", spawn to
    the first image. "imports" is torch, the harness and the target's module; what a target imports as it
    starts (diffusers, for the pipeline) counts in "load". `env` adds to the child's environment. RuntimeError
    with the child's last stderr lines if it fails or takes over `timeout` s."""
    from harness.isolated import child_env  # imported here: the child's clock starts before it would be

    # the parent's path, so "mypkg.targets:MyTarget" imports there as here
    job = json.dumps({"spec": spec, "request": dataclasses.asdict(request), "path": sys.path})
    command = [sys.executable, "-m", "harness.coldstart", repr(time.time())]
    try:
        done = subprocess.run(command, input=job, capture_output=True, text=True, env={**child_env(), **(env or {})},
                              timeout=timeout)
    except subprocess.TimeoutExpired as timed_out:  # run() has killed it
        raise RuntimeError(f"cold start of {spec!r}: no image within {timeout} s, so the child was killed; "
                           f"its last stderr lines:\n{tail(timed_out.stderr)}") from None
    answers = [line[len(TAG):] for line in done.stdout.splitlines() if line.startswith(TAG)]
    if done.returncode or not answers:
        raise RuntimeError(f"cold start of {spec!r}: the child exited with code {done.returncode}; "
                           f"its last stderr lines:\n{tail(done.stderr)}")
    return json.loads(answers[-1])


def tail(stderr: str | bytes | None, lines: int = 20) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    return "\n".join(text.splitlines()[-lines:])


def measure(spec: str, request: GenerationRequest, spawned: float) -> dict[str, float]:
    """In the child: each phase on the wall clock, the one clock the parent's spawn time shares with it."""
    import torch

    from harness.target import get_target_class, make_target, parse_spec
    from harness.timing import timed_generate

    get_target_class(parse_spec(spec)[0])  # the target's module
    imported = time.time()
    target = make_target(spec)
    constructed = time.time()
    device = getattr(target, "device", None)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.init()
        torch.zeros(1, device=device)  # a context and the allocator on that device, as the first tensor pays
        torch.cuda.synchronize(device)
    initialised = time.time()
    try:
        target.start()
        started = time.time()
        timed_generate(target, request)
        done = time.time()
    finally:
        target.close()
    return {"interpreter": STARTED - spawned, "imports": imported - STARTED, "device": initialised - constructed,
            "load": (constructed - imported) + (started - initialised), "first_request": done - started,
            "total": done - spawned}


if __name__ == "__main__":
    job = json.loads(sys.stdin.read())
    sys.path[:] = job["path"]
    phases = measure(job["spec"], GenerationRequest(**job["request"]), float(sys.argv[1]))
    print(TAG + json.dumps(phases), flush=True)
    from harness import exit

    exit.now(0)
