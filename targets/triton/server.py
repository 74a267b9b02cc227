"""A real Triton Inference Server on 127.0.0.1: its own Python environment, made on first use (the server
binary and python backend come from the nvidia-pytriton wheel; the backend's stub needs numpy < 2, which
fluxgate's own environment need not keep), the FLUX repository written for the weights, free ports, a wait
until every model has loaded or failed (with Triton's reason), models (re)loaded on the running server, and a
clean stop."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib.metadata import distribution
from pathlib import Path

import httpx

from harness.types import Unavailable
from targets.local import resolve_model
from targets.process import free_port, terminate
from targets.triton import repository

ENV = Path(os.environ.get("FLUXGATE_TRITON_ENV", Path.home() / ".cache" / "fluxgate" / "triton-env"))
OWN = ("nvidia-pytriton==0.7.0", "numpy<2")  # the server binary and python backend; numpy < 2 for the stub
SHARED = ("torch", "diffusers", "transformers", "tokenizers", "safetensors", "accelerate")  # what the models run


def shared_dirs() -> list[str]:
    """The site-packages folders this environment's torch and model libraries are installed in."""
    return sorted({str(distribution(name).locate_file("")) for name in SHARED})


def site_packages(env: Path) -> Path:
    """The serving environment's site-packages folder."""
    return next((env / "lib").glob("python3*/site-packages"))


def ensure_env(root: Path = ENV) -> Path:
    """The serving environment under ROOT, made on first use and kept while its stamp holds: a venv of this
    Python with only the server and numpy < 2 installed (seconds), which reaches this environment's torch and
    model libraries through a .pth file, after its own numpy. The models run the torch, diffusers and
    transformers fluxgate runs, CUDA's or the CPU's, and none of them is downloaded or copied again."""
    path = root / f"python{sys.version_info.major}.{sys.version_info.minor}"  # the stub is built per Python
    shared = shared_dirs()
    wanted = [sys.version.split()[0], *OWN, *shared]
    stamp = path / "fluxgate-stamp.txt"
    if stamp.is_file() and stamp.read_text() == "\n".join(wanted):
        return path
    shutil.rmtree(path, ignore_errors=True)
    # no pip inside it and no .pyc up front (the server's first start writes those it imports): this
    # environment's pip installs into it. The server binary needs none of nvidia-pytriton's Python dependencies.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q",
                           "--no-compile", "--no-deps", *OWN], capture_output=True, text=True)
    if done.returncode:
        raise Unavailable(f"could not make Triton's environment in {path}: {done.stderr.strip()[-2000:]}")
    # addsitedir, not a bare path: the shared folders' own .pth files (editable installs) apply there too
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in shared)
    (site_packages(path) / "fluxgate-shared.pth").write_text(lines)
    stamp.write_text("\n".join(wanted))
    return path


def not_loaded(name: str, reason: str) -> Unavailable:
    return Unavailable(f"Triton model {name!r} did not load: {reason}")


class TritonServer:
    """`with TritonServer(preset="tiny-dev") as triton: triton.http_url`: tritonserver serving FLUX."""

    def __init__(self, preset: str | None = None, model: str | None = None, dtype: str = "fp32",
                 device: str = "cpu", max_sequence_length: int = 512, start_timeout: float = 600.0):
        if preset is None and model is None:
            preset = "tiny-dev"
        self.model_dir = resolve_model(preset, model)
        self.options = {"dtype": dtype, "device": device, "max_sequence_length": max_sequence_length}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="fluxgate-triton-"))
        self.log = self.dir / "tritonserver.log"
        self.ports = {"http": 0, "grpc": 0, "metrics": 0}
        self.startup: float | None = None  # seconds from launch to every model ready
        self.configs: dict[str, dict] = {}  # each model's config as Triton loaded it at start, for load()

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def start(self) -> TritonServer:
        env = ensure_env()
        site = site_packages(env)
        dist = site / "pytriton" / "tritonserver"
        backends = self.dir / "backends"  # the python backend with the stub for the environment's Python
        shutil.copytree(dist / "backends", backends)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        (backends / "python" / "triton_python_backend_stub").symlink_to(
            dist / "python_backend_stubs" / python / "triton_python_backend_stub")
        models = repository.write(self.dir / "models", self.model_dir, **self.options)
        self.ports = {name: free_port() for name in self.ports}
        # explicit model control: every model loads at start, and load() can reload one on the running server
        command = [str(dist / "bin" / "tritonserver"), f"--model-repository={models}",
                   f"--backend-directory={backends}", f"--http-port={self.ports['http']}",
                   f"--grpc-port={self.ports['grpc']}", f"--metrics-port={self.ports['metrics']}",
                   "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--exit-on-error=false",
                   "--model-control-mode=explicit", "--load-model=*", "--log-verbose=0"]
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
            self.configs = {name: httpx.get(f"http://{self.http_url}/v2/models/{name}/config", timeout=10).json()
                            for name in repository.MODELS}
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
                    raise Unavailable("; ".join(str(not_loaded(n, r)) for n, r in failed.items()))
                return
            time.sleep(0.1)
        raise Unavailable(f"Triton's models were not ready within {self.start_timeout} s: {self.tail()}")

    def load(self, name: str, **parameters: str) -> None:
        """Load model NAME afresh on the running server, as it loaded at start but with PARAMETERS
        (model_dir=..., dtype=...) in place of the repository's; load(NAME) puts it back as it was.
        Unavailable, with Triton's reason, if it does not load; the model is then not served until it does."""
        if name not in self.configs:
            raise ValueError(f"model {name!r}: Triton here serves {', '.join(self.configs) or 'nothing'}")
        # unloaded first: Triton would keep serving the old version through a failed reload, but this Triton
        # (2.51) then never lets the failed one go, and waits out its exit timeout (30 s) at every stop
        self.repository(name, "unload", {})
        # always the whole config: without one, Triton reloads what it had, the last override included
        overrides = {key: {"string_value": str(value)} for key, value in parameters.items()}
        config = {**self.configs[name], "parameters": self.configs[name]["parameters"] | overrides}
        answer = self.repository(name, "load", {"parameters": {"config": json.dumps(config)}})
        if answer.status_code != 200:
            raise not_loaded(name, answer.json().get("error", answer.text).strip())

    def repository(self, name: str, action: str, body: dict) -> httpx.Response:
        """POST to Triton's model repository API: load model NAME (answered once loaded or failed) or unload it
        (answered at once; Triton finishes it in the background, and a load after it loads afresh)."""
        return httpx.post(f"http://{self.http_url}/v2/repository/models/{name}/{action}", json=body,
                          timeout=self.start_timeout)

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
