"""A real Triton Inference Server on 127.0.0.1: its own Python environment, made on first use (the server
binary and python backend come from the nvidia-pytriton wheel; the backend's stub needs numpy < 2, which
fluxgate's own environment need not keep), the FLUX repository written for the weights, free ports, a wait
until every model has loaded or failed (with Triton's reason), and a clean stop."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx

from harness.types import Unavailable
from targets.local import resolve_model
from targets.process import free_port, terminate
from targets.triton import repository

ENV = Path(os.environ.get("FLUXGATE_TRITON_ENV", Path.home() / ".cache" / "fluxgate" / "triton-env"))


def packages() -> list[str]:
    """What the serving side needs: the server, numpy < 2 for the stub, and the reference's own libraries
    at the versions this environment runs (torch from the same place it came from here)."""
    from importlib.metadata import version

    pinned = [f"{name}=={version(name)}" for name in ("torch", "diffusers", "transformers", "tokenizers",
                                                      "safetensors", "accelerate")]
    return ["nvidia-pytriton==0.7.0", "numpy<2", *pinned]


def ensure_env(path: Path = ENV) -> Path:
    """The serving environment, made on first use (a minute or two) and kept while its package list holds."""
    wanted = "\n".join(packages())
    stamp = path / "fluxgate-packages.txt"
    if stamp.is_file() and stamp.read_text() == wanted:
        return path
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    done = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *packages()],
                          capture_output=True, text=True)
    if done.returncode:
        raise Unavailable(f"could not make Triton's environment in {path}: {done.stderr.strip()[-2000:]}")
    stamp.write_text(wanted)
    return path


class TritonServer:
    """`with TritonServer(preset="tiny-dev") as triton: triton.http_url`: tritonserver serving FLUX."""

    def __init__(self, preset: str | None = None, model: str | None = None, dtype: str = "fp32",
                 device: str = "cpu", max_sequence_length: int = 512, broken: str | None = None,
                 start_timeout: float = 600.0):
        if preset is None and model is None:
            preset = "tiny-dev"
        self.model_dir = resolve_model(preset, model)
        self.options = {"dtype": dtype, "device": device, "max_sequence_length": max_sequence_length,
                        "broken": broken}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="fluxgate-triton-"))
        self.log = self.dir / "tritonserver.log"
        self.ports = {"http": 0, "grpc": 0, "metrics": 0}
        self.startup: float | None = None  # seconds from launch to every model ready

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def start(self) -> TritonServer:
        env = ensure_env()
        site = next((env / "lib").glob("python3*/site-packages"))
        dist = site / "pytriton" / "tritonserver"
        backends = self.dir / "backends"  # the python backend with the stub for the environment's Python
        shutil.copytree(dist / "backends", backends)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        (backends / "python" / "triton_python_backend_stub").symlink_to(
            dist / "python_backend_stubs" / python / "triton_python_backend_stub")
        models = repository.write(self.dir / "models", self.model_dir, **self.options)
        self.ports = {name: free_port() for name in self.ports}
        command = [str(dist / "bin" / "tritonserver"), f"--model-repository={models}",
                   f"--backend-directory={backends}", f"--http-port={self.ports['http']}",
                   f"--grpc-port={self.ports['grpc']}", f"--metrics-port={self.ports['metrics']}",
                   "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--exit-on-error=false",
                   "--log-verbose=0"]
        # the stub runs the environment's Python (found on PATH) on this Python's libpython, not whichever
        # libpython3.x the system has: their builds differ, and the standard library's modules with them
        libs = [str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR"),
                os.environ.get("LD_LIBRARY_PATH")]
        environ = {**os.environ, "PATH": f"{env / 'bin'}:{os.environ['PATH']}",
                   "LD_LIBRARY_PATH": ":".join(filter(None, libs))}
        launched = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ)
        try:
            self.wait()
        except BaseException:
            self.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.startup = time.perf_counter() - launched
        return self

    def wait(self) -> None:
        """Until every model is READY; a model that failed to load, or a server that died, is Unavailable."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"tritonserver exited with code {self.process.returncode}: {self.tail()}")
            try:
                index = httpx.post(f"http://{self.http_url}/v2/repository/index", json={}, timeout=5).json()
            except (httpx.TransportError, ValueError):
                index = None  # not listening yet
            states = {m["name"]: m for m in index or []}
            if len(states) == len(repository.MODELS) and all(m.get("state") != "LOADING" for m in states.values()):
                failed = {n: m.get("reason", m.get("state")) for n, m in states.items() if m.get("state") != "READY"}
                if failed:
                    raise Unavailable("; ".join(f"Triton model {n!r} did not load: {r}" for n, r in failed.items()))
                return
            time.sleep(0.1)
        raise Unavailable(f"Triton's models were not ready within {self.start_timeout} s: {self.tail()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (Triton finishes in-flight requests, then unloads), SIGKILL after `timeout` s."""
        return terminate(self.process, timeout)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
