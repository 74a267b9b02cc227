"""What the launchers of servers share: a free port, and a stop that lets the work in flight finish."""
from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(process: subprocess.Popen | None, timeout: float = 60.0) -> int | None:
    """SIGTERM, so requests in flight finish; SIGKILL if it has not exited in `timeout` s. The exit code."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
