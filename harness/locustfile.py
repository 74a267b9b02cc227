"""Locust's side of fluxgate's distributed load: the user its workers run and the master that hands them work.

Imported only in Locust's processes (importing locust monkey-patches the interpreter for gevent); the test run
drives them through harness/swarm.py. A worker runs one `Fluxgate` user, which serves plans for as long as the
master lives: each plan is the worker's share of one load run (its requests, and their send times or the
requests it keeps in flight), sent through the target's own client code (targets/http.py, modal.py, triton/),
so requests, seeds and the classification of errors are the suites'. Every answer is fired as a Locust request
event, and the outcomes a worker reports are the ones its request listener heard, times exact: Locust's own
statistics keep response times rounded to two significant digits (100 ms steps between 1 and 10 s, FLUX's whole
range), so the master reports its percentiles beside, as Locust would show them.

    locust -f harness/locustfile.py --worker --master-host HOST --master-port PORT     a worker, anywhere
"""
from __future__ import annotations

import gc
import json
import pickle
import sys
import time
from collections import Counter

import gevent
from gevent.pool import Pool
from gevent.queue import Queue
from locust import User, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import bucket_response_time, calculate_response_time_percentile

from harness.load import classify

try:  # gRPC's calls (Triton's grpc client) yield to the worker's other greenlets, not block them all
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()
except ImportError:
    pass

PLANS: Queue = Queue()   # this worker's shares of load runs, as the master sends them
HEARD: list[dict] = []   # the outcomes this worker's request listener heard in the current run
TARGETS: dict = {}       # SPEC -> the started target, kept across runs (a client and its connections)


class Fluxgate(User):
    """One per worker: runs each share of a load run it is sent, then reports what its request events heard."""

    @task
    def serve(self):
        while True:
            share = pickle.loads(PLANS.get())
            HEARD.clear()
            try:
                run(self.environment, share)
                rest = {"kind": "timeout"}
            except Exception as e:  # the target's client could not start here: each request left says why
                rest = {"kind": classify(e), "error": f"{type(e).__name__}: {e}"}
            heard = {o["index"] for o in HEARD}
            rest = [{"index": i, "scheduled": t, **rest} for i, t in share["sends"] if i not in heard]
            self.environment.runner.send_message("fluxgate-outcomes", {"run": share["run"], "outcomes": HEARD + rest})


def run(environment: Environment, share: dict) -> None:
    """The share's requests, at their send times (open loop) or `slots` at a time (closed loop), timed from the
    run's start (an epoch time every worker shares), until all answered or the run's timeout passed."""
    target = TARGETS.get(share["target"])
    if target is None:
        from harness.target import make_target

        target = make_target(share["target"])
        target.start()
        TARGETS[share["target"]] = target
    start = time.perf_counter() + share["start_at"] - time.time()
    gevent.sleep(max(0.0, start - time.perf_counter()))
    requests = share["requests"]
    if share["mode"] == "open":
        pool = Pool(share["max_in_flight"])
        gc.disable()  # as harness.load's open loop: no collection stops the sends
        try:
            for i, t in share["sends"]:
                gevent.sleep(max(0.0, start + t - time.perf_counter()))
                pool.spawn(send, environment, target, requests[i], {"index": i, "scheduled": t}, start)
        finally:
            gc.enable()
    else:
        queue = [i for i, _ in share["sends"]][::-1]
        pool = Pool(share["slots"])

        def slot():
            while queue:
                i = queue.pop()
                send(environment, target, requests[i], {"index": i, "scheduled": time.perf_counter() - start}, start)

        for _ in range(share["slots"]):
            pool.spawn(slot)
    pool.join(timeout=share["timeout"] + max((t for _, t in share["sends"]), default=0))
    pool.kill()  # what is still unanswered counts as "timeout"


def send(environment: Environment, target, request, outcome: dict, start: float) -> None:
    outcome["sent"] = time.perf_counter() - start
    error = None
    try:
        target.generate(request)
        outcome["kind"] = "ok"
    except Exception as e:  # every failure is an outcome, classified as the suites classify it
        error, outcome["kind"], outcome["error"] = e, classify(e), f"{type(e).__name__}: {e}"
    outcome["done"] = time.perf_counter() - start
    environment.events.request.fire(request_type="edit" if request.image is not None else "generate",
                                    name=target.name, response_time=(outcome["done"] - outcome["sent"]) * 1000,
                                    response_length=0, exception=error, context={"fluxgate": outcome})


@events.request.add_listener
def hear(context, response_time, **_):
    outcome = context.get("fluxgate") if context else None
    if outcome is not None:
        HEARD.append({**outcome, "response_time_ms": response_time})


@events.init.add_listener
def listen(environment, **_):
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("fluxgate-plan", lambda msg, **_: PLANS.put(msg.data))


def reported(outcomes: list[dict]) -> dict:
    """Locust's own view of a run, from its own code: requests, failures and the percentiles of its rounded
    response times (ms, send to answer), as its web UI and CSV would report them."""
    ok = [o["response_time_ms"] for o in outcomes if o["kind"] == "ok"]
    rounded = Counter(map(bucket_response_time, ok))  # what Locust's StatsEntry keeps of them
    return {"requests": len(outcomes), "failures": sum(o["kind"] not in ("ok", "timeout") for o in outcomes),
            **{f"p{q}_ms": calculate_response_time_percentile(rounded, len(ok), q / 100) if ok else None
               for q in (50, 95, 99)}}


def master(host: str, port: int, workers: int, wait: float) -> int:
    """Locust's master, driven over stdin and stdout a JSON line at a time: it waits for WORKERS workers
    (at most WAIT seconds), starts a Fluxgate user on each, then for each plan ({"run", "shares": [path per
    worker]}) sends worker k share k and answers with every worker's outcomes; {"quit": true} ends it."""
    from gevent.fileobject import FileObjectThread

    environment = Environment(user_classes=[Fluxgate], events=events)
    runner = environment.create_master_runner(host, port)
    results: dict[str, list] = {}
    runner.register_message("fluxgate-outcomes", lambda msg, **_: results.setdefault(msg.data["run"], []).append(
        msg.data["outcomes"]))
    say({"listening": runner.server.port})
    deadline = time.monotonic() + wait
    while len(runner.clients.ready) < workers:
        if time.monotonic() > deadline:
            say({"error": f"{len(runner.clients.ready)} of {workers} Locust workers connected within {wait:g} s"})
            return 1
        gevent.sleep(0.05)
    runner.start(workers, spawn_rate=1000)  # one user a worker: the master's dispatcher spreads users evenly
    nodes = sorted(runner.clients.values(), key=lambda node: runner.get_worker_index(node.id))
    say({"ready": [node.id for node in nodes]})
    for line in FileObjectThread(sys.stdin):
        plan = json.loads(line)
        if plan.get("quit"):
            break
        for node, path in zip(nodes, plan["shares"]):
            with open(path, "rb") as f:
                runner.send_message("fluxgate-plan", f.read(), client_id=node.id)
        deadline = time.monotonic() + plan["wait"]
        while len(results.get(plan["run"], [])) < len(nodes) and time.monotonic() < deadline:
            gevent.sleep(0.01)  # a worker that never reports leaves its requests unanswered: "timeout"
        outcomes = [o for worker in results.pop(plan["run"], []) for o in worker]
        say({"run": plan["run"], "outcomes": outcomes, "locust": reported(outcomes)})
    runner.quit()
    return 0


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
