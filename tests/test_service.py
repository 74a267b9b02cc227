"""The HTTP service for real, on 127.0.0.1: the suites pass through it in every protocol with images equal to
the in-process reference's; errors name the field and the rule; a full queue answers 429; a slow request 504;
shutdown finishes the work in flight; a target that cannot load is reported, not waited for."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness import images
from harness.types import Unavailable
from targets.service.app import b64
from targets.process import free_port
from targets.service.launch import Service
from runs import metrics, run_suites

pytestmark = pytest.mark.server
OPENAI, EDITS = "/v1/images/generations", "/v1/images/edits"
PNG = images.encode(images.card(64, 64))


@dataclass
class Form:
    """A multipart body: form fields and file parts."""
    data: dict[str, str]
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def pair(preset_cache):
    """A service with two workers and a 2 s timeout: two requests at once, and one past its time."""
    with Service("reference:preset=tiny-dev", "--workers", "2", "--timeout", "2") as running:
        yield running


@pytest.fixture(scope="module")
def over_http(service, tmp_path_factory):
    """The integration, edge-case and stress suites through the session's service, load from fluxgate's own
    engine: (exit code, output, report)."""
    return run_suites("--target", f"{service.url}?protocol=openai", "--category", "integration",
                      "--category", "edge_case", "--category", "stress", out=tmp_path_factory.mktemp("over-http"))


def test_integration_edge_and_stress_suites_pass_over_http(over_http):
    code, output, report = over_http
    assert code == 0, output[-3000:]
    assert report["target"]["name"] == "http" and report["target"]["capabilities"]["remote"]
    assert metrics(report, "test_equivalent_to_the_reference")["equivalence.max_abs_diff"] == 0  # lossless: exact
    assert metrics(report, "test_an_edit_is_equivalent_to_the_references")["equivalence.max_abs_diff"] == 0
    assert metrics(report, "test_an_oversize_upload_is_refused_before_it_is_read")["hostile.upload_refused"] < 5
    overflow = metrics(report, "test_overflow_is_refused_cleanly_then_served")
    assert overflow["overflow.answers.overloaded"] >= 1 and overflow["overflow.answers.ok"] >= 1
    assert overflow["overflow.answers.error"] == overflow["overflow.answers.timeout"] == 0
    assert metrics(report, "test_highest_sustained_rate")["capacity.sustained_rate"] > 0


def test_the_stress_suite_through_locust_reports_what_fluxgates_engine_does(service, over_http, tmp_path):
    """Locust's master and two workers on 127.0.0.1 send the stress suite's load: the same tests, metrics and
    verdict as fluxgate's engine gave, with latencies exact (Locust's own report rounds them), and the engines
    side by side."""
    code, output, report = run_suites("--target", f"{service.url}?protocol=openai", "--category", "stress",
                                     "--load-engine", "locust", "--locust-workers", "2", out=tmp_path)
    assert code == 0, output[-3000:]
    ours = {t["nodeid"]: t for t in over_http[2]["tests"] if t["category"] == "stress"}
    theirs = {t["nodeid"]: t for t in report["tests"]}
    assert set(theirs) == set(ours)
    side_by_side = next(n for n in ours if "side_by_side" in n)  # skipped by fluxgate's engine: it needs Locust's
    assert ours.pop(side_by_side)["verdict"] == "skip" and theirs.pop(side_by_side)["verdict"] == "pass"
    assert {n: t["verdict"] for n, t in theirs.items()} == {n: t["verdict"] for n, t in ours.items()}
    for nodeid, test in ours.items():
        assert {m["name"] for m in theirs[nodeid]["metrics"]} == {m["name"] for m in test["metrics"]}, nodeid
    ramp = next(t for n, t in theirs.items() if "ramp" in n)
    assert any(note.startswith("load sent by Locust: a master on 127.0.0.1") for note in ramp["notes"])
    opened = json.loads((next(tmp_path.iterdir()) / next(a["path"] for t in theirs.values() for a in t["artifacts"]
                                                           if a["name"] == "open-loop")).read_text())
    assert opened["engine"] == "locust" and opened["ok"] == opened["requests"] > 1
    service_ms = [(d - s) * 1000 for s, d in zip(opened["timeline"]["sent"], opened["timeline"]["done"])]
    assert any(abs(ms - round(ms)) > 1e-3 for ms in service_ms), "latencies rounded to whole milliseconds"
    assert opened["locust"]["requests"] == opened["requests"] and opened["locust"]["p50_ms"] > 0
    engines = {m["name"]: m["value"] for t in report["tests"] for m in t["metrics"] if "side_by_side" in t["nodeid"]}
    assert engines["engines.fluxgate.valid_rate"] > 0 and engines["engines.locust.valid_rate"] > 0


def test_a_worker_elsewhere_joins_the_master(service, tmp_path):
    """The README's command for a worker on another machine, here on this one: the master waits for it."""
    from harness.swarm import Swarm
    from harness.types import GenerationRequest

    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "harness.swarm", "worker", f"127.0.0.1:{port}"],
                              cwd=Path(__file__).parents[1], stderr=subprocess.DEVNULL)
    try:
        with Swarm(f"{service.url}?protocol=raw", workers=0, remote=1, bind=f"127.0.0.1:{port}", wait=30) as swarm:
            result = swarm.open(lambda i: GenerationRequest(f"far {i}", height=64, width=64, num_inference_steps=1,
                                                            seed=i), rate=4, duration=1.0)
    finally:
        worker.wait(timeout=30)
    assert result.counts()["ok"] == 4 and result.valid and result.meta["workers"] == 1


@pytest.mark.parametrize("protocol", ["a1111", "raw"])
def test_the_other_protocols_give_the_reference_images(service, tmp_path, protocol):
    code, output, report = run_suites("--target", f"{service.url}?protocol={protocol}", "--category", "integration",
                                     out=tmp_path)
    assert code == 0, output[-3000:]
    assert metrics(report, "test_equivalent_to_the_reference")["equivalence.max_abs_diff"] == 0
    assert metrics(report, "test_a_batch_equals_single_requests")["batch.max_abs_diff"] <= 1
    assert metrics(report, "test_an_edit_is_equivalent_to_the_references")["equivalence.max_abs_diff"] == 0
    assert metrics(report, "test_an_edit_batch_equals_single_requests")["batch.max_abs_diff"] <= 1


BAD = [  # path, body, status, the field the error must name, words of the rule
    (OPENAI, {"prompt": "a", "size": "1000x64"}, 400, "width", "multiple of 16"),
    (OPENAI, {"prompt": "a", "size": "64x64", "n": 0}, 400, "n", ">= 1"),
    (OPENAI, {"prompt": "a", "size": "big"}, 400, "size", "WIDTHxHEIGHT"),
    (OPENAI, {"prompt": "a", "size": "16x-1000000000"}, 400, "height", "between 16"),
    (OPENAI, {"prompt": "a", "size": "1" * 5000 + "x64"}, 400, "size", "WIDTHxHEIGHT"),  # past int()'s 4,300 digits
    (OPENAI, {"prompt": "a", "n": "2"}, 422, "n", "valid integer"),
    (OPENAI, {"prompt": "a", "num_inference_steps": 2.0}, 422, "num_inference_steps", "valid integer"),
    (OPENAI, {"prompt": "a", "guidance_scale": -1}, 400, "guidance_scale", "from 0 to 100"),
    (OPENAI, {"size": "64x64"}, 422, "prompt", "required"),
    (OPENAI, {"prompt": "a", "stpes": 4}, 422, "stpes", "not permitted"),
    (OPENAI, {"prompt": "a", "response_format": "url"}, 422, "response_format", "b64_json"),
    (OPENAI, {"prompt": "a", "size": "64x64", "lora": "nope"}, 404, "lora", "no such LoRA"),
    ("/sdapi/v1/txt2img", {"prompt": "a", "steps": 0}, 400, "steps", "from 1 to"),
    ("/sdapi/v1/txt2img", {"prompt": "a", "width": 64, "height": 64, "batch_size": 9}, 400, "batch_size", "limit"),
    ("/generate", {"prompt": "a", "width": 64, "height": 64, "seed": -1}, 400, "seed", "None or an integer"),
    ("/generate", [1, 2], 422, "body", "valid dictionary"),
    # edits (the service's model is Kontext): bad images are named, in each protocol's name for the field
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {"image": b"plain text"}), 400, "image", "identify"),
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {"image": PNG[:100]}), 400, "image", "truncated"),
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {"image": images.png_header(0, 64)}), 400, "image", "identify"),
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {"image": images.png_header(9000, 64)}), 400, "image",
     "from 16 to 4096"),
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {}), 422, "image", "required"),
    (EDITS, Form({"prompt": "a", "n": "two"}, {"image": PNG}), 422, "n", "valid integer"),
    (EDITS, Form({"prompt": "a", "size": "64x64"}, {"image": PNG, "mask": PNG}), 400, "mask", "not supported"),
    (EDITS, Form({"prompt": "a", "size": "64x64", "image_fit": "stretch"}, {"image": PNG}), 400, "image_fit",
     "one of"),
    ("/sdapi/v1/img2img", {"prompt": "a", "width": 64, "height": 64, "init_images": ["%%%"]}, 400, "init_images",
     "base64"),
    ("/sdapi/v1/img2img", {"prompt": "a", "width": 64, "height": 64, "init_images": []}, 422, "init_images",
     "at least 1"),
    ("/sdapi/v1/img2img", {"prompt": "a", "width": 64, "height": 64, "init_images": [b64(PNG[:100])]}, 400,
     "init_images", "truncated"),
    ("/generate", {"prompt": "a", "width": 64, "height": 64, "image": b64(images.png_header(64, 0))}, 400, "image",
     "identify"),
]


@pytest.mark.parametrize("path,body,status,field,rule", BAD, ids=[f"{p}-{f}-{s}" for p, _, s, f, _ in BAD])
def test_a_bad_request_is_answered_with_the_field_and_the_rule(service, path, body, status, field, rule):
    sent = {"data": body.data, "files": body.files} if isinstance(body, Form) else {"json": body}
    response = httpx.post(service.url + path, **sent, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(field) and rule in error["message"], error


def test_health_ready_and_info(service):
    with httpx.Client(base_url=service.url) as client:  # kept alive: without TCP_NODELAY each answer waits
        rounds = []                                       # for a delayed ACK, 40 ms on Linux
        for _ in range(20):
            sent = time.perf_counter()
            assert client.get("/health").json() == {"status": "ok"}
            rounds.append(time.perf_counter() - sent)
    assert sorted(rounds)[10] < 0.02, f"median round trip {sorted(rounds)[10] * 1000:.0f} ms: Nagle is on"
    assert httpx.get(f"{service.url}/ready").json()["status"] == "ready"
    info = httpx.get(f"{service.url}/info").json()
    assert info["reference_spec"] == "reference:preset=tiny-kontext,dtype=fp32,device=cpu,max_sequence_length=512"
    assert info["capabilities"]["max_queue"] == 4 and info["loras"] == ["tiny-style"]


def test_a_full_queue_answers_429_with_retry_after_then_serves(service):
    body = {"prompt": "a burst", "size": "256x256", "num_inference_steps": 4, "seed": 0}
    with httpx.Client(base_url=service.url, timeout=120, limits=httpx.Limits(max_connections=16)) as client:
        answers = [None] * 11  # 1 running + 4 queued are admitted; 6 are not

        def send(i):
            answers[i] = client.post(OPENAI, json=body)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(answers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(a.status_code for a in answers)
        refused = [a for a in answers if a.status_code == 429]
        assert set(statuses) == {200, 429} and len(refused) >= 6 - 1, statuses  # one may slip in as one ends
        assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
        assert "max_queue 4" in refused[0].json()["error"]["message"]
        assert client.post(OPENAI, json=body).status_code == 200


def test_the_workers_serve_at_once(service, pair):
    """Two workers take two requests together: neither waits in the queue. (One worker makes one wait.)"""
    body = {"prompt": "together", "size": "256x256", "num_inference_steps": 4, "seed": 0}

    def queue_times(s: Service):
        with httpx.Client(base_url=s.url, timeout=120) as client:
            client.post(OPENAI, json=body)  # warm
            answers = []
            threads = [threading.Thread(target=lambda: answers.append(client.post(OPENAI, json=body)))
                       for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            timings = [dict(p.split(";dur=") for p in a.headers["server-timing"].split(", ")) for a in answers]
            return sorted(float(t["queue"]) for t in timings), min(float(t["compute"]) for t in timings)

    (_, waited), compute = queue_times(service)  # conftest's: one worker
    assert waited > compute / 2, f"one worker: the second request should wait for the first ({waited} ms)"
    queued, compute = queue_times(pair)
    assert max(queued) < compute / 4, f"two workers: neither request should wait ({queued} ms, compute {compute})"


def test_a_request_past_the_timeout_gets_504_and_the_service_goes_on(pair):
    slow = httpx.post(pair.url + OPENAI, json={"prompt": "slow", "size": "1024x1024", "num_inference_steps": 50},
                      timeout=60)
    assert slow.status_code == 504 and "timeout of 2" in slow.json()["error"]["message"], slow.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{pair.url}/ready").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the abandoned request is cancelled at its next step
    quick = httpx.post(pair.url + OPENAI, json={"prompt": "quick", "size": "64x64", "num_inference_steps": 1})
    assert quick.status_code == 200


def test_shutdown_finishes_the_request_in_flight():
    s = Service("reference:preset=tiny-dev").start()
    answer = {}
    body = {"prompt": "in flight", "size": "512x512", "num_inference_steps": 8, "seed": 0}
    sender = threading.Thread(target=lambda: answer.setdefault("r", httpx.post(s.url + OPENAI, json=body, timeout=120)))
    sender.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{s.url}/ready").json()["pending"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    code = s.stop()
    sender.join()
    assert answer["r"].status_code == 200 and len(answer["r"].json()["data"]) == 1
    assert code is not None, "the service did not exit"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/health")


@pytest.mark.parametrize("spec,code,words", [
    ("reference:model=/no/such/model", 2, "model_index.json"),
    ("tests.fakes:Flawed:refuse_start=no GPU in this container", 3, "no GPU in this container"),
])
def test_a_target_that_cannot_start_is_reported_not_waited_for(spec, code, words):
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"exited with code {code}") as failed:
        Service(spec).start()
    assert words in str(failed.value) and time.monotonic() - started < 60


def test_server_errors_under_load_fail_the_stress_suite(tmp_path):
    # the session's first request and the ramp's first level (4 at concurrency 1) are served; the second level
    # runs into the errors
    with Service("tests.fakes:Flawed:fail_after=6") as s:
        code, output, report = run_suites("--target", s.url, "--category", "stress", "-k", "ramp", out=tmp_path)
    assert code == 1, output[-3000:]
    assert "requests ended as {'error'" in report["tests"][0]["message"]
    assert metrics(report, "test_concurrency_ramp")["ramp.c1.answers.error"] == 0


def test_an_unreachable_server_is_unavailable(tmp_path):
    code, output, _ = run_suites("--target", f"http://127.0.0.1:{free_port()}", "--category", "integration",
                                 out=tmp_path)
    assert code == 3 and "cannot connect" in output, output[-2000:]


def test_only_the_routes_that_take_an_image_take_a_large_body(service, pair):
    """The edit routes of a service whose model edits accept an upload's 48 MiB; every other route keeps 1 MiB,
    and a text-only service refuses an edit by name."""
    junk = b"x" * (2 << 20)

    def post(s, path):
        return httpx.post(s.url + path, content=junk, headers={"content-type": "application/json"}, timeout=30)

    assert post(service, OPENAI).status_code == 413
    assert post(service, "/sdapi/v1/img2img").status_code == 422  # read, then refused: not JSON
    assert post(pair, "/generate").status_code == 413              # a text-only service's raw route
    response = httpx.post(pair.url + EDITS, data={"prompt": "a", "size": "64x64"}, files={"image": PNG}, timeout=30)
    assert response.status_code == 400 and "does not take an input image" in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "image"
