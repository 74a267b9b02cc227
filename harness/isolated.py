"""A target in a process of its own, so its weights and memory peaks are not counted as the caller's.

The oracle and the baseline target run this way beside the target under test: in one process, three models
would share one heap and one CUDA context, and the peaks measured for the target would be theirs too. The
child is a fresh interpreter (`python -m harness.isolated`: torch and CUDA do not survive a fork, and
multiprocessing's spawn would re-run the caller's main script) speaking pickles over a socket pair, with
multiprocessing's Connection framing them; it times each request itself, so the pipe is not the target's cost.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness.target import Target, make_target
from harness.timing import timed_generate
from harness.types import GenerationRequest, GenerationResult, InvalidRequest, Overloaded, TargetError, Unavailable

ROOT = Path(__file__).resolve().parents[1]  # where `harness` is importable from
CONTRACT = (InvalidRequest, Overloaded, TargetError, Unavailable)  # sent back as themselves; others -> TargetError
POLL = 0.2     # seconds between checks that the child is still alive while it works
GRACE = 5.0    # seconds the child has to close its target and exit before it is terminated


def child_env() -> dict[str, str]:
    """The environment of a child interpreter of fluxgate's: the harness importable from any working
    directory, which stays the caller's (relative model paths mean the same there)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def failure(error: BaseException) -> tuple[str, str]:
    """(contract type name or the error's own, message): picklable, whatever the error holds."""
    kind = next((c.__name__ for c in CONTRACT if isinstance(error, c)), type(error).__name__)
    return kind, str(error)


def serve(conn: Connection) -> None:
    """The child: make and start the target, then answer requests until told to close or the parent is gone."""
    spec, sys.path[:] = conn.recv()  # the parent's path, so "mypkg.targets:MyTarget" imports here as there
    try:
        target = make_target(spec)
        target.start()
    except Exception as error:
        conn.send(("error", failure(error)))
        return
    try:
        conn.send(("ok", {"name": target.name, "capabilities": target.capabilities, "loras": target.loras(),
                          "reference_spec": target.reference_spec(), "describe": target.describe()}))
        while True:
            try:
                op, request = conn.recv()
            except EOFError:  # the parent died: nobody is left to answer
                return
            if op == "close":
                return
            try:
                conn.send(("ok", timed_generate(target, request)))
            except Exception as error:
                if not isinstance(error, CONTRACT):
                    traceback.print_exc()  # the trace stays in the child's stderr; the parent gets the reason
                conn.send(("error", failure(error)))
    finally:
        target.close()


class Isolated(Target):
    """`Isolated("reference:preset=tiny-dev")`: that target, started in a child process, behind the contract.

    Calls are serialised: one pipe, one request at a time (an in-process target serves one at a time too).
    """

    times_itself = True  # timings["total"] is measured in the child, around the target alone

    def __init__(self, spec: str):
        self.spec = spec
        self.name = f"isolated {spec}"   # the child's name once started
        self.meta: dict[str, Any] = {}
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:  # once the child holds its end, only the child does: its death reads as EOF here
            self.process = subprocess.Popen([sys.executable, "-m", "harness.isolated", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], env=child_env())
        self.conn = Connection(ours.detach())
        try:
            status, value = self.exchange((self.spec, sys.path))  # answered once the target has started
        except TargetError as error:  # it died while starting
            status, value = "error", ("TargetError", str(error))
        if status == "error":
            self.close()
            raise Unavailable(f"{self.spec}: did not start in its process: {value[0]}: {value[1]}")
        self.meta, self.name = value, value["name"]
        # its memory is not this process's to measure, torch.cuda here neither syncs nor sees its GPU work, and
        # only generate() crosses the pipe: its components stay in the child
        self.capabilities = dataclasses.replace(value["capabilities"], remote=True, local_gpu=False, components=False)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        status, value = self.exchange(("generate", request))
        if status == "ok":
            return value
        kind, text = value
        errors = {c.__name__: c for c in CONTRACT}
        raise errors[kind](text) if kind in errors else TargetError(f"{kind}: {text}")

    def exchange(self, message: tuple) -> tuple[str, Any]:
        """Send the message and return the child's (status, value); TargetError naming the exit code if the
        child dies first, found by polling, never by a blocking read."""
        with self.lock:
            if self.process is None:
                raise Unavailable(f"{self.spec}: not started, or closed")
            try:
                self.conn.send(message)
                while not self.conn.poll(POLL):
                    if self.process.poll() is not None:
                        raise EOFError
                return self.conn.recv()
            except (EOFError, OSError):  # the child is gone (or going): say how it ended
                code = self.wait()
                raise TargetError(f"{self.spec}: the child process {self.pid} died (exit code {code})") from None
            except BaseException:  # interrupted mid-exchange (Ctrl-C, a timeout): its answer would still come, as
                self.process.kill()  # the answer to the next request, so the child goes with it
                self.process.wait()
                self.conn.close()
                self.process = None
                raise

    def loras(self) -> list[str]:
        return self.meta.get("loras", [])

    def reference_spec(self) -> str | None:
        return self.meta.get("reference_spec")

    def describe(self) -> dict[str, Any]:
        return {**(self.meta.get("describe") or super().describe()), "isolated": True, "pid": self.pid}

    def close(self) -> None:
        """Close the target in the child and let it exit; terminate it if it has not within GRACE s."""
        with self.lock:
            if self.process is None:
                return
            try:
                try:
                    self.conn.send(("close", None))
                except OSError:  # already dead
                    pass
                self.wait()
            finally:  # even when interrupted while waiting: no child outlives its parent's say
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
                self.conn.close()
                self.process = None

    def wait(self) -> int:
        """The child's exit code, after GRACE s for it to exit by itself, then SIGTERM, then SIGKILL."""
        for stop in (lambda: None, self.process.terminate, self.process.kill):
            stop()
            try:
                return self.process.wait(GRACE)
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()


if __name__ == "__main__":
    from harness import exit

    serve(Connection(int(sys.argv[1])))
    exit.now(0)
