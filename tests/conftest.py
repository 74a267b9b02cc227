"""Fixtures for fluxgate's own tests: presets in a cache of their own, started in-process targets, the service,
the default run, headless Chromium for the reports; and the tiers a developer picks from (`make test-fast` runs
none of them)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are found on disk, never fetched
os.environ.pop("FLUXGATE_API_KEY", None)      # services start keyless unless a test gives one a key

pytest_plugins = ["pytester"]

TIERS = {  # marker -> what a test so marked costs
    "server": "starts or uses an HTTP service on 127.0.0.1 (a fresh interpreter and the model: ~5 s a service)",
    "triton": "uses a Triton Inference Server (its serving environment is made on first use: seconds)",
    "slow": "takes more than ~5 s: a fresh interpreter, a whole default run, the largest request",
}


def pytest_configure(config):
    for name, cost in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {cost}")


@pytest.fixture(scope="session", autouse=True)
def preset_cache(tmp_path_factory):
    """Presets are built once per session into a private cache, unless FLUXGATE_CACHE names one."""
    if "FLUXGATE_CACHE" not in os.environ:
        os.environ["FLUXGATE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return os.environ["FLUXGATE_CACHE"]


@pytest.fixture(scope="session")
def started():
    """started(spec) -> the target for SPEC, started once per session and closed at the end."""
    from harness.target import make_target

    targets = {}

    def get(spec: str):
        if spec not in targets:
            targets[spec] = make_target(spec)
            targets[spec].start()
        return targets[spec]

    yield get
    for target in targets.values():
        target.close()


@pytest.fixture(scope="session")
def service(preset_cache):
    """fluxgate's HTTP service serving tiny-kontext (one worker, a queue of 4) on a free port of 127.0.0.1,
    with 2 s header and body timeouts, so the suites' slow-client tests take seconds, not the defaults' ten.
    A Kontext model draws from text as well as editing, so the suites through it test both."""
    from targets.service.launch import Service

    with Service("reference:preset=tiny-kontext", "--max-queue", "4", "--header-timeout", "2", "--body-timeout", "2") \
            as running:
        yield running


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`python run_tests.py` as a new user first runs it (every suite, cpu-tiny, the pipeline against the
    reference), in a subprocess, once per session: (exit code, output, report.json, run folder)."""
    from runs import run_tests

    out = tmp_path_factory.mktemp("default-run")
    code, output, report = run_tests(out=out, profile=None)  # cpu-tiny, the shipped default
    return code, output, report, next(out.iterdir())


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, once per session; a skip naming how to install it where there is none."""
    from browser import FLAGS, HOW, chromium

    executable = chromium()
    if executable is None:
        pytest.skip(f"no Chromium on this machine: {HOW}")
    sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests leave their screenshots, to be looked at: $FLUXGATE_SCREENSHOTS, else
    results/screenshots/ in the repository (ignored by git, as every run's output is)."""
    return Path(os.environ.get("FLUXGATE_SCREENSHOTS", Path(__file__).parents[1] / "results" / "screenshots"))
