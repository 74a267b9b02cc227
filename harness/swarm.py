"""Load through Locust's master and workers, for a target served elsewhere: the load engine past one machine.

The same closed and open loops as harness/load.py, with the same rules (latency from the schedule, late sends,
every request accounted for), sent by Locust workers (harness/locustfile.py) through fluxgate's own client for
the target, and returned as the same LoadResult, so the stress suite records and gates them as its own. The
requests are made here and shipped: worker k of W sends requests k, k + W, ... (open loop), or keeps its share
of the concurrency in flight (closed loop). Workers time from one epoch start, so on one machine their
timelines are one; on several they are as one as the machines' clocks.

    python -m harness.swarm worker HOST:PORT      a worker on another machine, for a run given --locust-remote
"""
from __future__ import annotations

import itertools
import json
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from harness.load import LoadResult, Outcome, default_slack, schedule

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = str(Path(__file__).with_name("locustfile.py"))
LEAD = 0.25  # seconds between a plan's dispatch and its start: every worker has its share by then


def worker_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--worker", "--master-host", host,
            "--master-port", str(port), "--loglevel", "WARNING"]


class Swarm:
    """Locust's master and `workers` worker processes on this machine, plus `remote` workers started elsewhere
    (`python -m harness.swarm worker HOST:PORT`), which the master waits `wait` seconds for. `bind` is where
    the master listens (port 0: a free one; another machine's workers need an address they can reach)."""

    name = "locust"

    def __init__(self, spec: str, workers: int = 2, remote: int = 0, bind: str = "127.0.0.1:0", wait: float = 60.0):
        host, _, port = bind.rpartition(":")
        if workers < 0 or remote < 0 or workers + remote < 1 or not port.isdigit():
            raise ValueError(f"workers={workers!r}, remote={remote!r}, bind={bind!r}: need one worker or more and "
                             "bind as HOST:PORT")
        self.spec, self.workers, self.remote, self.wait = spec, workers, remote, wait
        self.host, self.port = host or "127.0.0.1", int(port)
        self.processes: list[subprocess.Popen] = []
        self.lines: queue.Queue = queue.Queue()
        self.runs = itertools.count()
        self.folder: tempfile.TemporaryDirectory | None = None  # the plans and Locust's log, while it runs
        self.log = None  # that log, which the master and the workers write

    @property
    def count(self) -> int:
        return self.workers + self.remote

    def describe(self) -> str:
        where = f"{self.workers} on this machine" + (f", {self.remote} elsewhere" if self.remote else "")
        return f"Locust: a master on {self.host}:{self.port} and {self.count} workers ({where})"

    def start(self) -> Swarm:
        self.folder = tempfile.TemporaryDirectory(prefix="fluxgate-swarm-")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = self.log = open(Path(self.folder.name) / "locust.log", "w")
        master = subprocess.Popen([sys.executable, "-m", "harness.swarm", "master", self.host, str(self.port),
                                   str(self.count), str(self.wait)], cwd=ROOT, env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.processes.append(master)
        threading.Thread(target=lambda: [self.lines.put(line) for line in master.stdout], daemon=True).start()
        self.port = self.read(30)["listening"]
        here = "127.0.0.1" if self.host in ("0.0.0.0", "*", "") else self.host
        self.processes += [subprocess.Popen(worker_command(here, self.port), cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=log) for _ in range(self.workers)]
        self.read(self.wait + 30)  # every worker connected, one user each
        # an empty run first: each worker makes and starts its client for the target before any run is timed
        self.run([{"mode": "closed", "slots": 0, "sends": []} for _ in range(self.count)], None, 0, 60.0,
                 LoadResult("closed", [], 0.0))
        return self

    def read(self, timeout: float) -> dict:
        try:
            message = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            message = {"error": f"no word from Locust's master in {timeout:g} s"}
        if "error" in message:
            log = (Path(self.folder.name) / "locust.log").read_text()[-2000:]
            raise RuntimeError(f"{self.describe()}: {message['error']}" + (f"\n{log}" if log else ""))
        return message

    def closed(self, make_request: Callable[[int], object], concurrency: int, count: int,
               timeout: float = 600.0) -> LoadResult:
        """`count` requests, `concurrency` in flight: worker k keeps slots k, k + W, ... of them busy."""
        owner = [(i % concurrency) % self.count for i in range(count)]
        slots = [sum(s % self.count == k for s in range(concurrency)) for k in range(self.count)]
        shares = [{"mode": "closed", "slots": slots[k], "sends": [(i, 0.0) for i in range(count) if owner[i] == k]}
                  for k in range(self.count)]
        return self.run(shares, make_request, count, timeout, LoadResult("closed", [], 0.0, concurrency=concurrency))

    def open(self, make_request: Callable[[int], object], rate: float, duration: float, poisson: bool = False,
             seed: int = 0, max_in_flight: int = 64, timeout: float = 60.0, slack: float | None = None) -> LoadResult:
        """Sends at `rate` per second for `duration` seconds, worker k sending every W-th of the schedule."""
        times = schedule(rate, duration, poisson, seed)
        shares = [{"mode": "open", "max_in_flight": max_in_flight,
                   "sends": [(i, float(t)) for i, t in enumerate(times) if i % self.count == k]}
                  for k in range(self.count)]
        result = LoadResult("open", [], 0.0, offered_rate=rate, slack=default_slack(rate) if slack is None else slack,
                            meta={"poisson": poisson, "seed": seed, "max_in_flight": max_in_flight})
        return self.run(shares, make_request, len(times), timeout, result)

    def run(self, shares: list[dict], make_request: Callable, count: int, timeout: float,
            result: LoadResult) -> LoadResult:
        """Ships each worker its share and fills RESULT with the outcomes they heard; a request no worker
        reported is a "timeout"."""
        run, start_at = str(next(self.runs)), time.time() + LEAD
        paths = []
        for k, share in enumerate(shares):
            share |= {"run": run, "target": self.spec, "start_at": start_at, "timeout": timeout,
                      "requests": {i: make_request(i) for i, _ in share["sends"]}}
            paths.append(str(Path(self.folder.name) / f"{run}-{k}.pickle"))
            Path(paths[-1]).write_bytes(pickle.dumps(share))
        longest = max(t for share in shares for _, t in share["sends"]) if count else 0.0
        wait = LEAD + longest + timeout + 10
        self.command({"run": run, "shares": paths, "wait": wait})
        answer = self.read(wait + 30)
        for path in paths:
            os.unlink(path)
        heard = {o["index"]: o for o in answer["outcomes"]}
        nan = float("nan")
        scheduled = {i: t for share in shares for i, t in share["sends"]}
        for i in range(count):
            o = heard.get(i, {"kind": "timeout", "error": "no worker reported it"})
            result.outcomes.append(Outcome(o.get("scheduled", scheduled[i]), o.get("sent", nan), o.get("done", nan),
                                           o["kind"], o.get("error")))
        answered = [o.done for o in result.outcomes if o.kind != "timeout"]
        result.duration = max(answered, default=longest)
        result.started = time.perf_counter() + start_at - time.time()
        result.meta |= {"engine": self.name, "workers": self.count, "locust": answer["locust"]}
        return result

    def command(self, message: dict) -> None:
        master = self.processes[0]
        master.stdin.write(json.dumps(message) + "\n")
        master.stdin.flush()

    def close(self) -> None:
        if self.processes and self.processes[0].poll() is None:
            try:
                self.command({"quit": True})
            except OSError:
                pass
        for p in self.processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.processes.clear()
        if self.folder is not None:
            self.log.close()
            self.folder.cleanup()
            self.folder = None

    def __enter__(self) -> Swarm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["master"] and len(argv) == 5:
        from harness.locustfile import master

        host, port, workers, wait = argv[1:]
        return master(host, int(port), int(workers), float(wait))
    if argv[:1] == ["worker"] and len(argv) == 2 and ":" in argv[1]:
        host, _, port = argv[1].rpartition(":")
        os.execv(sys.executable, worker_command(host, int(port)))
    print("usage: python -m harness.swarm worker HOST:PORT   (a Locust worker for a fluxgate run elsewhere)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
