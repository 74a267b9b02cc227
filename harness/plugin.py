"""fluxgate's pytest plugin: the options, the markers, the fixtures suites use, and the hooks that gate and
record every test.

Fixtures:
    target      the target under test (--target), started once per session and closed at the end
    load        the stress suite's load engine (--load-engine): fluxgate's threads, or Locust's workers
    baseline_target  the --baseline-target in a process of its own, for speed-up (else the test skips)
    reference   the oracle: golden images of the reference FLUX on the target's weights, rendered in a process
                of its own (the test skips where the weights are unknown, or the target is the reference)
    recorder    this test's Recorder: metrics, images and artifacts for the report
    profile     the threshold profile (--profile): thresholds and the settings suites read

A suite test's category comes from its folder (suites/<category>/), so `-m performance` and
`--category performance` select the same tests; the categories run in order (unit, integration, performance,
quality, stress, edge cases). A test outside suites/ that runs with them (a file named on the command line)
runs after them and is reported under "other".
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from harness import gpus, hooks, prompts
from harness.gates import Baseline, Profile, failure, judge
from harness.record import CATEGORIES, FOLDERS, PROPERTY, Recorder, Recording, Run, TestRecord, new_run_id
from harness.shard import SHARED, Shard
from harness.target import DEFAULT as DEFAULT_TARGET

MARKERS = {
    "unit": "components and pure functions, one by one",
    "integration": "end to end through the target",
    "performance": "latency, throughput, scaling and memory, recorded as metrics",
    "quality": "image similarity to the reference and other image metrics",
    "stress": "concurrency, sustained load, overflow and recovery",
    "edge_case": "bad and unusual input: a clear InvalidRequest, and the target keeps serving",
    "gpu": "needs a CUDA device (skipped without one)",
    "slow": "takes long (skipped by --skip-slow)",
    "benchmark": "calibrated repeated timing (pytest-benchmark)",
}
ENGINES = ("fluxgate", "locust")
TARGET_PROPERTY = "fluxgate-target"
CATEGORY_PROPERTY = "fluxgate-category"
RUN = pytest.StashKey[Run]()
SETUP = pytest.StashKey[dict]()
RECORDER = pytest.StashKey[Recorder]()
SIGTERM = pytest.StashKey[object]()  # the handler the run replaced


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser):
    group = parser.getgroup("fluxgate", "fluxgate: the target under test, its gates and its reports")
    group.addoption("--target", default=DEFAULT_TARGET, metavar="SPEC",
                    help="the target under test, e.g. reference:preset=tiny-dev, pipeline:model=PATH,dtype=bf16, "
                         f"http://127.0.0.1:8000?protocol=openai (default: {DEFAULT_TARGET})")
    group.addoption("--baseline-target", default=None, metavar="SPEC",
                    help="a second target to measure speed-up against, e.g. the plain pipeline when --target is "
                         "the optimized one")
    group.addoption("--profile", default="cpu-tiny", metavar="NAME|PATH",
                    help="threshold profile: a name in harness/profiles/ or a .toml path (default: cpu-tiny)")
    group.addoption("--baseline", default=None, metavar="REPORT",
                    help="a report.json from an earlier run: every comparable metric must not regress past its tolerance")
    group.addoption("--force-baseline", action="store_true",
                    help="compare with a --baseline taken on another target, profile or hardware (refused otherwise)")
    group.addoption("--golden", default=None, metavar="DIR",
                    help="where the oracle's golden images are kept (default: $FLUXGATE_GOLDEN or the fluxgate cache)")
    group.addoption("--prompts", default=None, metavar="FILE",
                    help="the prompt set the quality suite compares over: one per line, or JSON Lines of "
                         "{prompt, category} (default: harness/data/prompts.jsonl)")
    group.addoption("--out", default="results", metavar="DIR", help="reports go to DIR/<run id>/ (default: results)")
    group.addoption("--run-id", default=None, help="name of the run's folder (default: time and pid)")
    group.addoption("--allow-downloads", action="store_true",
                    help="let model and metric weights be fetched from the Hugging Face hub (default: offline)")
    group.addoption("--skip-slow", action="store_true", help="skip tests marked slow")
    group.addoption("--skip-gpu", action="store_true", help="skip tests marked gpu, even where CUDA is present")
    group.addoption("--shard", default=None, metavar="i/N",
                    help="run shard i of N: a share of the tests, and of the quality prompts (harness/shard.py); "
                         "python -m reports.merge puts the N shards' reports together")
    group.addoption("--load-engine", default="fluxgate", choices=ENGINES,
                    help="what sends the stress suite's load: fluxgate's threads in this process (default), or "
                         "Locust's master and workers (a target served elsewhere: http, modal, triton)")
    group.addoption("--locust-workers", type=int, default=2, metavar="N",
                    help="Locust workers started on this machine (default: 2)")
    group.addoption("--locust-remote", type=int, default=0, metavar="N",
                    help="Locust workers started elsewhere (python -m harness.swarm worker HOST:PORT) that the "
                         "master waits for (default: 0)")
    group.addoption("--locust-bind", default="127.0.0.1:0", metavar="HOST:PORT",
                    help="where Locust's master listens for its workers (default: 127.0.0.1, a free port; "
                         "workers elsewhere need an address they reach, e.g. 0.0.0.0:5557)")


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if not config.getoption("allow_downloads"):
        os.environ["HF_HUB_OFFLINE"] = "1"  # weights come from disk; a missing one is a skip, not a download
    try:
        profile = Profile.load(config.getoption("profile"))
        baseline = Baseline(config.getoption("baseline")) if config.getoption("baseline") else None
        prompt_set = prompts.load(config.getoption("prompts") or prompts.DEFAULT)
        shard = Shard.parse(config.getoption("shard")) if config.getoption("shard") else None
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    worker = getattr(config, "workerinput", None)
    if baseline is not None and worker is None and not config.getoption("force_baseline"):
        from harness.environment import environment

        differences = baseline.differences(config.getoption("target"), config.getoption("baseline_target"), profile,
                                           environment())
        if differences:
            raise pytest.UsageError(f"--baseline {config.getoption('baseline')}: measured on another "
                                    f"{'; '.join(differences)}: its numbers are not comparable "
                                    "(--force-baseline compares them all the same)")
    if worker is None and config.getoption("load_engine") == "locust":
        _check_swarm(config)
    if worker is None and config.getoption("numprocesses", None):
        _pin(config)
    config.stash[SETUP] = {"profile": profile, "baseline": baseline, "prompts": prompt_set, "shard": shard}
    run_dir = Path(worker["fluxgate_run_dir"]) if worker else \
        Path(config.getoption("out")) / (config.getoption("run_id") or new_run_id())
    config.stash[RUN] = Run(id=run_dir.name, dir=run_dir.resolve(), target_spec=config.getoption("target"),
                            profile=profile.describe(), baseline=config.getoption("baseline"),
                            baseline_target=config.getoption("baseline_target"),
                            shard=dataclasses.asdict(shard) if shard else None)
    if shard is not None:
        config.pluginmanager.register(Sharding(shard), "fluxgate-shard")
    if worker is None:
        config.pluginmanager.register(RunLog(config), "fluxgate-runlog")
        # a timeout's SIGTERM becomes Ctrl-C, so pytest unwinds and the report is still written; the handler
        # before is put back at the end, for a run inside another program (fluxgate's own tests run it so)
        config.stash[SIGTERM] = signal.signal(signal.SIGTERM, signal.default_int_handler)


def _check_swarm(config):
    """Locust's workers send through the target's client from processes of their own, so the target must be
    served elsewhere, and there must be a worker."""
    from harness.swarm import Swarm
    from harness.target import make_target

    spec = config.getoption("target")
    try:
        Swarm(spec, config.getoption("locust_workers"), config.getoption("locust_remote"),
              config.getoption("locust_bind"))
    except ValueError as e:
        raise pytest.UsageError(f"--load-engine locust: {e}") from None
    try:
        remote = make_target(spec).capabilities.remote
    except (ValueError, FileNotFoundError):
        return  # the target fixture names what is wrong with the SPEC
    if not remote:
        raise pytest.UsageError(f"--load-engine locust: Locust's workers load a target served elsewhere (http, "
                                f"modal, triton); --target {spec!r} runs in this process")


def pytest_unconfigure(config):
    if SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[SIGTERM])


def _pin(config) -> None:
    """pytest-xdist's -n N (by now N popen specs): worker i on GPU i, or on the CPU where there is no GPU.
    The GPU goes into the spec that starts the worker, popen//env:CUDA_VISIBLE_DEVICES=i, so the variable is
    set before the worker imports anything. Set in the worker's own pytest_configure it could come too late
    unseen: the CUDA driver reads it once, at its first call, and torch.cuda.is_available() at some library's
    import makes that call without torch.cuda.is_initialized() turning true."""
    visible = gpus.visible()
    try:
        given = gpus.assign(len(config.option.tx), visible)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if visible:
        config.option.tx = [f"popen//env:CUDA_VISIBLE_DEVICES={gpu}" for gpu in given]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """-n auto: one worker per visible GPU; without one, pytest-xdist's own count (one per CPU)."""
    return len(gpus.visible()) or None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist: every worker records into the controller's run folder."""
    node.workerinput["fluxgate_run_dir"] = str(node.config.stash[RUN].dir)


def pytest_sessionfinish(session):
    """pytest-xdist: a worker tells the controller the GPU it was given and the ones torch saw there."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fluxgate_gpus"] = gpus.seen()


def pytest_collection_modifyitems(config, items):
    import torch

    no_cuda = not torch.cuda.is_available()
    categories = {item: _category(item.path) for item in items}
    # a session with suite tests is a run, and reports every test it runs, so that one outside suites/ (a file
    # named on the command line) cannot fail the exit code unseen; fluxgate's own tests alone make no report
    reported = any(categories.values())
    for item, category in categories.items():
        if category:
            item.add_marker(category)
        if reported:
            item.user_properties.append((CATEGORY_PROPERTY, category))  # travels with every report
        if item.get_closest_marker("gpu") and (no_cuda or config.getoption("skip_gpu")):
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device" if no_cuda else "--skip-gpu"))
        if item.get_closest_marker("slow") and config.getoption("skip_slow"):
            item.add_marker(pytest.mark.skip(reason="--skip-slow"))
    # the README's order, not the folders' alphabetical one (edge_cases would run first and warm a server
    # whose cold start the performance suite measures); tests outside suites/ keep their place after them
    items.sort(key=lambda item: (CATEGORIES + [None]).index(categories[item]))


@pytest.fixture(scope="session")
def profile(pytestconfig) -> Profile:
    """The threshold profile: `profile.get("latency_runs")` reads a suite setting (harness/settings.py)."""
    return pytestconfig.stash[SETUP]["profile"]


@pytest.fixture(scope="session")
def prompt_set(pytestconfig) -> list[prompts.Prompt]:
    """The prompts the quality suite compares over, each with its category: --prompts FILE, else
    harness/data/prompts.jsonl. The profile's quality_prompts says how many of them are used."""
    return pytestconfig.stash[SETUP]["prompts"]


@pytest.fixture(scope="session")
def prompt_share(pytestconfig, prompt_set, profile) -> list[prompts.Prompt]:
    """The prompts the quality suite compares over: the profile's first quality_prompts of prompt_set, and of
    those, under --shard i/N, this shard's share. A test that asks for it runs in every shard, over its share,
    and reports/merge.py merges its metrics; with no prompt in its share, it skips."""
    chosen, shard = prompt_set[: profile.get("quality_prompts")], pytestconfig.stash[SETUP]["shard"]
    if shard is None:
        return chosen
    share = shard.share(chosen)
    if not share:
        pytest.skip(f"--shard {shard.index}/{shard.count}: none of the {len(chosen)} quality prompts falls to it")
    return share


@pytest.fixture(scope="session")
def target(pytestconfig, profile):
    """The target under test, from --target: started once, closed at the end of the session.

    A SPEC that names nothing ends the run as a usage error (pytest's exit 4); a target that cannot start
    ends it as unavailable (exit 3), with the reason. A target served elsewhere gets the profile's plain
    request first of all: if its server was cold, that is its cold start, whatever test runs first.
    """
    from harness.target import make_target
    from harness.timing import timed_generate

    spec = pytestconfig.getoption("target")
    try:
        t = make_target(spec)
    except (ValueError, FileNotFoundError) as e:
        pytest.exit(f"--target {spec!r}: {e}", returncode=pytest.ExitCode.USAGE_ERROR)
    try:
        t.start()
    except Exception as e:  # whatever the reason, the run cannot go on without its target
        pytestconfig.stash[RUN].status = "target_unavailable"
        pytest.exit(f"--target {spec!r} is unavailable: {type(e).__name__}: {e}", returncode=3)
    if t.capabilities.remote:  # its first request, as the client saw it end to end
        first = profile.request()
        t.first_call = (first, timed_generate(t, first).timings["total"])
    yield t
    t.close()


@pytest.fixture(scope="session")
def load(pytestconfig, target):
    """The stress suite's load engine (--load-engine): `load.open(make_request, rate, seconds)` and
    `load.closed(make_request, concurrency, count)`, each a harness.load.LoadResult. fluxgate's own threads in
    this process, or Locust's master and workers (harness/swarm.py), started once for the session."""
    from harness.load import Engine

    option = pytestconfig.getoption
    if option("load_engine") == "fluxgate":
        yield Engine(target.generate)
        return
    from harness.swarm import Swarm

    with Swarm(target.spec, option("locust_workers"), option("locust_remote"), option("locust_bind")) as swarm:
        yield swarm


@pytest.fixture(scope="module")
def baseline_target(pytestconfig):
    """The --baseline-target, in a process of its own, so that its weights and peaks are not the target's,
    and only while the module that asks for it runs (tests that need it skip without it)."""
    from harness.isolated import Isolated

    spec = pytestconfig.getoption("baseline_target")
    if not spec:
        pytest.skip("no --baseline-target to compare with")
    with Isolated(spec) as t:
        yield t


@pytest.fixture(scope="session")
def _oracle(pytestconfig, target):
    from harness.golden import Oracle, default_store

    spec = target.reference_spec()
    if spec is None:
        pytest.skip(f"{target.name}: its weights are unknown, so there is no reference to compare with")
    if target.name == "reference":  # a subclass with a flaw has another name, and is compared
        pytest.skip("the target is the reference oracle itself: comparing it with itself proves nothing")
    oracle = Oracle(spec, Path(pytestconfig.getoption("golden") or default_store()))
    try:
        oracle.weights_hash()  # the weights here, or their hash in a store rendered where they are
    except LookupError as e:
        pytest.skip(f"no oracle for {target.name}: {e}")
    return oracle


@pytest.fixture(scope="module")
def reference(_oracle):
    """The oracle: the reference FLUX on the target's own weights, as golden images on disk (rendered once, in
    a process of its own, keyed by the weights' hash, the renderer's code and libraries, dtype, device and
    request). The process that renders a miss lives as long as the module that asked for it (the integration
    suite's text and edit equivalence share one): a second model must not sit beside the target through the
    tests that measure its memory, which are in other modules."""
    yield _oracle
    _oracle.close()


@pytest.fixture
def recorder(request) -> Recorder:
    """This test's Recorder: `recorder.metric("latency.p50", 0.8, "s", better="lower")`, `.image()`,
    `.comparison()` (target | reference | difference, for the report's gallery), ..."""
    rec = Recorder(request.node.nodeid, request.config.stash[RUN].dir)
    request.node.stash[RECORDER] = rec
    return rec


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Gate the test's metrics as it finishes: a metric that fails its gate fails the test."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    if "target" in item.fixturenames and "target" in item.funcargs:
        report.user_properties.append((TARGET_PROPERTY, item.funcargs["target"].describe()))
    rec = item.stash.get(RECORDER, None)
    if rec is None:
        return
    setup = item.config.stash[SETUP]
    for metric in rec.recording.metrics:
        judge(metric, item.nodeid, setup["profile"], setup["baseline"])
    report.user_properties.append((PROPERTY, rec.recording.to_dict()))
    reasons = [r for m in rec.recording.metrics for r in m.reasons]
    if reasons and report.passed:
        report.outcome = "failed"
        report.longrepr = failure(reasons)


class Sharding:
    """--shard i/N: keeps this shard's share of what -k and -m left (harness/shard.py), and deselects the rest."""

    def __init__(self, shard: Shard):
        self.shard = shard

    @pytest.hookimpl(trylast=True)  # after -k and -m deselected theirs: the shards split what the run would run
    def pytest_collection_modifyitems(self, config, items):
        kept = self.shard.select(items, lambda item: SHARED in item.fixturenames)
        chosen = set(kept)
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = kept


class RunLog:
    """Collects the run on the controller (the only process under xdist that sees every report) and
    hands it to the report writers after each test and at the end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.run: Run = config.stash[RUN]
        self.uncollected: list[TestRecord] = []  # files that did not collect: they join the run's tests, if any

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        from harness.environment import environment

        self.run.environment = environment()

    def pytest_collectreport(self, report):
        """A file that does not collect (an import or syntax error) errs as a test would: none of its tests ran,
        and the report and the summary say so, as pytest's exit code does."""
        if report.failed:
            self.uncollected.append(TestRecord(report.nodeid, _category(Path(report.fspath)), "error",
                                               message=_short(report)))

    def pytest_runtest_logreport(self, report):
        props = dict(report.user_properties)
        if CATEGORY_PROPERTY not in props:
            return  # not a run of the suites: fluxgate's own tests make no report
        test = self.run.tests.setdefault(report.nodeid, TestRecord(report.nodeid, props[CATEGORY_PROPERTY]))
        test.duration += report.duration
        if hasattr(report, "node"):  # pytest-xdist's worker that ran it
            test.worker = report.node.gateway.id
        if report.skipped:
            test.outcome = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, (tuple, list)) else str(report.longrepr)
            test.skip_reason = reason.removeprefix("Skipped: ")
        elif report.failed:
            test.outcome = "failed" if report.when == "call" else "error"
            test.message = _short(report)
        if PROPERTY in props:
            recording = Recording.from_dict(props[PROPERTY])
            test.metrics, test.images = recording.metrics, recording.images
            test.artifacts, test.notes = recording.artifacts, recording.notes
            test.comparisons = recording.comparisons
        if TARGET_PROPERTY in props and not self.run.target:
            self.run.target = props[TARGET_PROPERTY]
        if report.when == "teardown":
            self.config.hook.pytest_fluxgate_run_updated(run=self.run, final=False)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """pytest-xdist: each worker's GPU as the worker saw it (one that crashed says nothing)."""
        if "fluxgate_gpus" in getattr(node, "workeroutput", {}):
            self.run.environment.setdefault("workers", {})[node.gateway.id] = node.workeroutput["fluxgate_gpus"]

    def pytest_sessionfinish(self, session, exitstatus):
        """Close the run, whatever ended it, and let the report writers write."""
        if not self.run.tests and self.run.status != "target_unavailable":
            return
        for test in self.uncollected:
            self.run.tests.setdefault(test.nodeid, test)
        self.run.profile["unmatched"] = self.run.unmatched(self.config.stash[SETUP]["profile"])
        self.run.finished = time.time()
        self.run.exit_code = int(exitstatus)
        if self.run.status == "running":
            self.run.status = {pytest.ExitCode.INTERRUPTED: "interrupted",
                               pytest.ExitCode.INTERNAL_ERROR: "internal_error"}.get(exitstatus, "complete")
        self.config.hook.pytest_fluxgate_run_updated(run=self.run, final=True)

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables and pytest's own summary
    def pytest_terminal_summary(self, terminalreporter):
        """One screen at the end: per category pass/fail/skip, the gates that failed, where the report is."""
        run, tr = self.run, terminalreporter
        if not run.tests:
            return
        tr.section(f"fluxgate: {run.verdict.upper()}  (target {run.target_spec}, profile {run.profile['name']})")
        tr.write_line(f"{'category':<12} {'pass':>5} {'fail':>5} {'skip':>5}  verdict")
        for name, c in run.categories().items():
            tr.write_line(f"{name:<12} {c['pass']:>5} {c['fail']:>5} {c['skip']:>5}  {c['verdict']}")
        for nodeid, metric in run.failed_gates():
            for reason in metric.reasons:
                tr.write_line(f"gate failed: {reason}  [{nodeid}]", red=True)
        if run.profile["unmatched"]:
            tr.write_line(f"thresholds that gated nothing (no test recorded them, or not with the samples they need): {', '.join(run.profile['unmatched'])}",
                          yellow=True)
        tr.write_line(f"reports: {run.dir}")


def _category(path: Path) -> str | None:
    """The category of a test in suites/<folder>/; None outside suites/."""
    parts = path.parts
    if "suites" in parts and parts.index("suites") + 1 < len(parts) - 1:
        return FOLDERS.get(parts[parts.index("suites") + 1])
    return None


def _short(report) -> str:
    """The failure in a line or a few: a gate's reasons whole, else the exception as pytest sums it up."""
    text = str(report.longrepr)
    if text.startswith("gate failed"):
        return text
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else text[-2000:]
