"""Start the service in a process of its own on a free port, wait until it is ready, stop it cleanly."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness.types import Unavailable
from targets.process import terminate

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """`with Service("reference:preset=tiny-dev", "--workers", "2") as s: s.url`: the service on 127.0.0.1.

    Extra arguments go to `python -m targets.service`. The log (stdout and stderr) is kept in a file, so a
    service that does not come up fails with its own last lines, not a timeout.
    """

    def __init__(self, target: str, *args: str, env: dict | None = None, ready: bool = True,
                 start_timeout: float = 120.0):
        """ready=False: wait only until it answers at all (a --modal stand-in with auth answers 401)."""
        self.target, self.args, self.env = target, args, env
        self.wait_ready, self.start_timeout = ready, start_timeout
        self.url: str | None = None
        self.process: subprocess.Popen | None = None
        fd, log = tempfile.mkstemp(prefix="fluxgate-service-", suffix=".log")
        os.close(fd)  # the process writes it; this side only reads
        self.log = Path(log)

    def start(self) -> Service:
        command = [sys.executable, "-m", "targets.service", "--target", self.target, "--port", "0", *self.args]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"the service exited with code {self.process.returncode}: {self.tail()}")
            if self.url is None:
                found = re.search(r"listening on (http://\S+)", self.log.read_text(errors="replace"))
                self.url = found[1] if found else None
            elif self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"the service was not ready within {self.start_timeout} s: {self.tail()}")

    def _answers(self) -> bool:
        try:
            status = httpx.get(f"{self.url}/ready", timeout=2.0).status_code
        except httpx.TransportError:  # not listening yet
            return False
        return status == 200 or not self.wait_ready

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (requests in flight finish), SIGKILL after `timeout` s; the exit code."""
        return terminate(self.process, timeout)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
