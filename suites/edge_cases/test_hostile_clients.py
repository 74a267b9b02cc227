"""Hostile clients, through an HTTP target: bodies no well-behaved client sends, clients that walk away or
never finish, requests for another host. The service must answer each with a short 4xx (in its error
shape, if it is fluxgate's), stop work nobody waits for, cut connections that hold it up, and keep serving.
The contract's share, which any target owes, is in test_invalid_input.py: over-long prompts, lone
surrogates and requests past the pixel budget refused by name."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse

import httpx
import pytest

from targets.http import HttpTarget

SHORT = 4096  # bytes: an error answer longer than this is echoing what it was sent


@pytest.fixture
def http(target) -> HttpTarget:
    """The target, if it is a service over HTTP: what is hostile here is the bytes, not the request."""
    if not isinstance(target, HttpTarget):
        pytest.skip(f"{target.name} is not served over HTTP: hostile bodies and connections need a server")
    return target


@pytest.fixture
def body(http, make_request, profile):
    """body(**fields): a small valid body in the target's protocol, with fields replaced or added."""
    size = profile.get("load_size")
    plain = http.protocol.body(make_request("a hostile test", height=size, width=size, num_inference_steps=1),
                               "a hostile test", 1, 0)
    return lambda **fields: {**plain, **fields}


def post(http: HttpTarget, content: str | bytes, path: str | None = None, **headers) -> httpx.Response:
    """A body sent as it is (JSON text the client would never write), on the target's connection settings."""
    data = content.encode() if isinstance(content, str) else content
    return http.client.post(path or http.path, content=data, headers={"content-type": "application/json", **headers})


def refused(http: HttpTarget, response: httpx.Response, field: str | None = None) -> str:
    """Assert a short 4xx (in fluxgate's error shape where the server is fluxgate's, naming `field`); its message."""
    assert 400 <= response.status_code < 500, f"HTTP {response.status_code}: {response.text[:300]}"
    assert len(response.content) < SHORT, f"a {len(response.content):,}-byte error answer echoes what it was sent"
    if not http.server:
        return response.text
    error = response.json()["error"]
    assert {"message", "type", "param"} <= set(error), error
    if field is not None:
        assert error["param"] == field and error["message"].startswith(field), error
    return error["message"]


def still_serves(http: HttpTarget, make_request, profile) -> None:
    size = profile.get("load_size")
    assert http.generate(make_request("after", height=size, width=size, num_inference_steps=1)).images.shape[0] == 1


def test_an_oversize_body_is_refused_before_it_is_read(http, body, make_request, profile, recorder):
    """Problem 1: a 50 MB prompt took a server to 20 GB and held its worker for minutes."""
    huge = json.dumps(body(prompt="x" * profile.get("oversize_body")))
    sent = time.perf_counter()
    response = post(http, huge)
    recorder.metric("hostile.oversize_refused", time.perf_counter() - sent, "s")
    refused(http, response, "body" if response.status_code == 413 else "prompt")
    still_serves(http, make_request, profile)


def test_an_oversize_upload_is_refused_before_it_is_read(http, make_request, profile, recorder):
    """An image to edit past the body limit (a 200 MB upload: a camera's raw file, a video sent by mistake) is
    refused from its Content-Length, its bytes unread, and the server keeps serving."""
    if not http.capabilities.images:
        pytest.skip(f"{http.url} does not edit images")
    if not http.url.startswith("http://"):
        pytest.skip("the raw-socket client speaks plain HTTP")
    size = profile.get("oversize_upload")
    kind = "multipart/form-data; boundary=fluxgate" if http.protocol.name == "openai" else "application/json"

    def upload(parts):
        lines = [f"POST {http.protocol.edit_path or http.path} HTTP/1.1", f"Host: {parts.netloc}",
                 f"Content-Type: {kind}", f"Content-Length: {size}", *(f"{k}: {v}" for k, v in http.headers().items())]
        yield ("\r\n".join(lines) + "\r\n\r\n").encode()
        for _ in range(size >> 20):
            yield bytes(1 << 20)

    seconds, said = hold(http.url, upload, profile.get("slow_client_limit"))
    recorder.metric("hostile.upload_refused", seconds, "s")
    status = said.split(b" ", 2)[1] if said.startswith(b"HTTP/") else b"none"
    assert status.startswith(b"4"), f"a {size:,}-byte upload was answered {said[:200]!r}"
    assert status == b"413" or not http.server, f"fluxgate's service answers 413: {said[:200]!r}"
    still_serves(http, make_request, profile)


def test_a_lone_surrogate_in_text_is_a_4xx(http, body, make_request, profile):
    """Problem 2: JSON's \\ud800 escape makes a string that no tokenizer or UTF-8 answer takes: it was a 500,
    in the prompt of every protocol and in A1111's negative_prompt."""
    texts = {"prompt": "a\ud800"} | ({"negative_prompt": "\udc00"} if http.protocol.name == "a1111" else {})
    for field, text in texts.items():
        refused(http, post(http, json.dumps(body(**{field: text}))), field)  # ASCII, the surrogate escaped
    still_serves(http, make_request, profile)


def test_a_number_json_cannot_hold_is_a_4xx(http, body):
    """Problem 3: Python's JSON reads NaN, Infinity and 1e309 (as inf); A1111's cfg_scale NaN was a 500 after
    the image was made, because the answer echoing it could not be written."""
    fields = [http.protocol.names.get("guidance_scale", "guidance_scale")]
    fields += ["cfg_scale"] if http.protocol.name == "a1111" else []
    for field in fields:
        for number in ("NaN", "Infinity", "-Infinity", "1e309"):
            text = json.dumps(body(**{field: "__number__"})).replace('"__number__"', number)
            refused(http, post(http, text), field)


def test_a1111_counts_are_judged_one_by_one(http, body):
    """Problem 3: batch_size -2 x n_iter -4 was served as 8 images, and a refused 3 x 3 was named
    batch_size=9, a value nobody sent."""
    if http.protocol.name != "a1111":
        pytest.skip("batch_size and n_iter are AUTOMATIC1111's fields")
    for batch_size, n_iter in ((-2, -4), (0, 3), (2, 0)):
        message = refused(http, post(http, json.dumps(body(batch_size=batch_size, n_iter=n_iter))))
        assert "batch_size" in message or "n_iter" in message, message
    side = int(http.capabilities.max_batch ** 0.5) + 1  # side x side images: over the limit, each count within
    message = refused(http, post(http, json.dumps(body(batch_size=side, n_iter=side))))
    if http.server:
        assert f"batch_size={side}, n_iter={side}" in message, message


def test_abandoned_work_is_cancelled(http, make_request, profile, recorder):
    """Problem 4: after a client gave up (its timeout, a closed connection) the worker still ran all of its
    steps, and requests queued for gone clients waited their turn, so everyone after got 504 or 429. Here
    three clients walk away from the longest requests there are (one running, two queued); the next request
    must be answered within one quick request's time and the grace."""
    size = profile.get("load_size")
    quick = make_request("quick", height=size, width=size, num_inference_steps=1)
    http.generate(quick)
    sent = time.perf_counter()
    http.generate(quick)
    alone = time.perf_counter() - sent
    size = profile.get("size")
    long = make_request("abandoned", height=size, width=size, num_inference_steps=profile.get("abandon_steps"))
    wire = http.protocol.body(long, long.prompt, 1, 0)
    answers = []

    def walk_away():
        with httpx.Client(base_url=http.url, headers=http.headers()) as client:  # its own connection, closed
            try:
                answers.append(client.post(http.path, json=wire, timeout=profile.get("abandon_after")).status_code)
            except httpx.TimeoutException:
                answers.append("gave up")

    clients = [threading.Thread(target=walk_away) for _ in range(3)]
    for c in clients:
        c.start()
        time.sleep(0.1)  # in order: the first runs, the others queue
    for c in clients:
        c.join()
    if "gave up" not in answers:
        pytest.skip(f"nothing was abandoned: the long requests were answered {answers} within "
                    f"{profile.get('abandon_after')} s")
    sent = time.perf_counter()
    http.generate(quick)
    after = time.perf_counter() - sent
    recorder.metric("hostile.freed_after_abandon", after, "s")
    recorder.metric("hostile.quick_alone", alone, "s")
    limit = alone + profile.get("cancel_grace")
    assert after <= limit, (f"the next request took {after:.2f} s (alone {alone:.2f} s): the service went on with "
                            f"work its clients had left ({answers})")


def hold(url: str, send, limit: float) -> tuple[float, bytes]:
    """Open a connection, feed it with send(sock) until the server closes it or `limit` s pass; the seconds
    it stayed open and what the server said."""
    parts = urllib.parse.urlsplit(url)
    opened = time.perf_counter()
    said = b""
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=limit) as sock:
        sock.settimeout(0.25)
        try:
            for chunk in send(parts):
                if time.perf_counter() - opened > limit:
                    break
                if chunk:
                    sock.sendall(chunk)
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                said += data
                if not data:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
    return time.perf_counter() - opened, said


def test_silent_and_trickling_connections_are_cut(http, body, profile, recorder):
    """Problem 5: a connection that sends nothing, or trickles its headers or its body a byte at a time,
    was held open for as long as it liked: a few hundred such clients hold every connection a server has."""
    if not http.url.startswith("http://"):
        pytest.skip("the raw-socket clients speak plain HTTP")
    limit = profile.get("slow_client_limit")
    payload = json.dumps(body()).encode()

    def head(parts, length=None):
        lines = [f"POST {http.path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
                 *([f"Content-Length: {length}"] if length is not None else []),
                 *(f"{k}: {v}" for k, v in http.headers().items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def silent(parts):
        while True:
            yield b""

    def trickled_head(parts):
        for byte in head(parts, len(payload)):
            yield bytes([byte])

    def trickled_body(parts):
        yield head(parts, len(payload))
        for byte in payload:
            yield bytes([byte])

    held = {}

    def run(name, send):
        held[name] = hold(http.url, send, limit + 5)

    threads = [threading.Thread(target=run, args=item) for item in
               (("silent", silent), ("headers", trickled_head), ("body", trickled_body))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (seconds, said) in held.items():
        recorder.metric(f"hostile.held.{name}", seconds, "s")
        assert seconds <= limit, f"a {name} connection was held {seconds:.1f} s (limit {limit} s)"
        assert not said.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")), f"a {name} connection was served: {said[:200]}"


def test_error_answers_are_short_and_in_one_shape(http, body):
    """Problem 6: a 50 MB unknown field came back whole in a 52 MB answer, and parse failures, 404 and 405
    answered in another shape than the one documented."""
    steps = http.protocol.names.get("num_inference_steps", "num_inference_steps")
    refused(http, post(http, json.dumps(body(**{steps: "y" * 200_000}))), steps)  # a string where a number goes
    refused(http, post(http, '{"prompt": "unfinished'))
    refused(http, http.client.get(http.path))                 # 405: a GET where only POST goes
    refused(http, post(http, "{}", path="/no/such/" + "z" * 2000))  # 404, with a long path to echo


def test_a_foreign_host_and_a_missing_key_are_refused(http, body):
    """Problem 7: any Host header was served, so a page on another site that points its own DNS name at
    127.0.0.1 (DNS rebinding) could use a loopback server; and /docs handed a stranger every route. Such a
    page has no key: a request under its name and without one must not be served (a server with a key may
    answer any name)."""
    foreign = httpx.post(http.url + http.path, json=body(), headers={"host": "rebinding.example"}, timeout=30)
    assert foreign.status_code in (400, 401, 403, 421), f"Host rebinding.example: HTTP {foreign.status_code}"
    if http.server:
        assert http.client.get("/docs").status_code == 404
        assert http.client.get("/openapi.json").status_code == 404
    if http.headers().get("Authorization"):
        keyless = httpx.post(http.url + http.path, json={}, timeout=30)
        assert keyless.status_code == 401, f"no API key: HTTP {keyless.status_code}"
