"""The service's connection deadlines, over raw sockets: a client that sends nothing, trickles its headers
(slowloris) or its body, or idles between requests is cut off at the header, body or keep-alive timeout,
with a 408 where a request was on its way; a header block over the limit is refused; a normal kept-alive or
pipelining client is not affected. Every wait here is bounded, so a server that never cuts a connection off
fails the test rather than hanging it."""
from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from targets.service.launch import Service

pytestmark = pytest.mark.server
TIMEOUT = 1.0       # --header-timeout, --body-timeout and --keep-alive alike
EARLY, LATE = 0.2, 1.0  # how much sooner or later than its deadline a connection may end
BODY = json.dumps({"prompt": "a slow upload", "width": 64, "height": 64, "num_inference_steps": 2,
                   "seed": 1}).encode()


@pytest.fixture(scope="module")
def timed(preset_cache):
    """The service with every connection timeout at TIMEOUT (conftest's `service` has the defaults)."""
    with Service("reference:preset=tiny-dev", "--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT),
                 "--keep-alive", str(TIMEOUT)) as running:
        yield running


class Connection:
    """One TCP connection to the service, read as HTTP/1.1 responses or as bytes until the server closes."""

    def __init__(self, service: Service):
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.host, self.buffer = f"{host}:{port}", b""

    def _more(self) -> bytes:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:  # closed with bytes of ours unread: as final as a FIN
            chunk = b""
        self.buffer += chunk
        return chunk

    def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
        length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        return f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}{length}\r\n".encode() + body

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise ConnectionError(f"closed before a whole response: {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._more():
                raise ConnectionError("closed in the middle of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status.split()[1]), headers, body

    def closed_after(self, limit: float) -> float:
        """Seconds until the server closes the connection, reading (and keeping) whatever it sends first."""
        start = time.monotonic()
        self.sock.settimeout(limit)
        try:
            while self._more():
                self.sock.settimeout(max(0.01, limit - (time.monotonic() - start)))
        except TimeoutError:
            pytest.fail(f"the connection was still open after {limit} s")
        return time.monotonic() - start

    def trickle(self, data: bytes, every: float = 0.2, limit: float = 4.0) -> float:
        """Send a byte each `every` s until the server answers or closes: seconds from the first byte to then."""
        start = time.monotonic()
        for byte in data:
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:  # closed between two bytes
                break
            if select.select([self.sock], [], [], every)[0]:
                break
            if time.monotonic() - start > limit:
                pytest.fail(f"still taking a byte every {every} s after {limit} s")
        else:
            pytest.fail("the whole request went through before the server cut it off")
        return time.monotonic() - start

    def close(self):
        self.sock.close()


@pytest.fixture
def connect(timed):
    opened = []

    def make() -> Connection:
        opened.append(Connection(timed))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


def assert_timeout_answer(connection: Connection):
    """What the server sent before closing is one 408 in the service's JSON error shape, Connection: close."""
    status, headers, body = connection.response()
    assert status == 408 and headers["connection"] == "close", (status, headers)
    error = json.loads(body)["error"]
    assert error["type"] == "timeout" and error["param"] is None and "timeout of 1.0 s" in error["message"], error
    assert connection.buffer == b"", f"more after the 408: {connection.buffer!r}"


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(connect):
    connection = connect()
    took = connection.closed_after(TIMEOUT + LATE)
    assert took > TIMEOUT - EARLY and connection.buffer == b"", (took, connection.buffer)  # no answer to nothing


@pytest.mark.parametrize("before", ["fresh", "kept-alive", "pipelined"])
def test_headers_trickled_a_byte_at_a_time_are_cut_at_the_header_timeout(connect, before):
    """Each byte would reset a timer that restarts on activity; the deadline runs from the request's first
    byte (from connect on a fresh connection) however many follow. Part of a head pipelined behind another
    request, with no more to come, is timed from the answer to that request."""
    connection = connect()
    slow = connection.request("GET", "/health", headers="X-Slow: " + "z" * 100 + "\r\n")
    if before != "fresh":
        first = connection.request("GET", "/health")
        connection.sock.sendall(first + slow[:10] if before == "pipelined" else first)
        assert connection.response()[0] == 200
    if before == "pipelined":
        took = connection.closed_after(TIMEOUT + LATE)
    else:
        took = connection.trickle(slow)
        connection.closed_after(LATE)
    assert TIMEOUT - EARLY < took < TIMEOUT + LATE, took
    assert_timeout_answer(connection)


def test_a_body_slower_than_the_body_timeout_gets_408_and_is_never_served(timed, connect):
    connection = connect()
    connection.sock.sendall(connection.request("POST", "/generate", BODY)
                            [:-len(BODY) + 5])  # the headers and the first bytes of the body
    took = connection.trickle(BODY[5:])
    assert TIMEOUT - EARLY < took < TIMEOUT + LATE, took
    connection.closed_after(LATE)
    assert_timeout_answer(connection)
    # the body never arrived whole, so it cannot have been parsed, let alone generated from; nothing is
    # left pending, the app took the disconnect quietly, and the next request is served as usual
    assert httpx.get(f"{timed.url}/ready", timeout=5).json()["pending"] == 0
    quick = httpx.post(f"{timed.url}/generate", content=BODY, headers={"Content-Type": "application/json"},
                       timeout=30)
    assert quick.status_code == 200 and quick.headers["content-type"] == "image/png"
    assert "Traceback" not in timed.tail(40), timed.tail(40)


def test_a_kept_alive_connection_idle_past_keep_alive_is_closed(connect):
    connection = connect()
    connection.sock.sendall(connection.request("GET", "/health"))
    assert connection.response()[0] == 200
    took = connection.closed_after(TIMEOUT + LATE)
    assert took > TIMEOUT - EARLY and connection.buffer == b"", (took, connection.buffer)


def test_a_kept_alive_client_is_not_affected(connect):
    """Requests on one connection, with pauses under the keep-alive timeout, for longer than the header and
    body timeouts together; then three pipelined in one write: all served, the connection still open."""
    connection = connect()
    started = time.monotonic()
    for method, path, body in [("GET", "/health", b""), ("POST", "/generate", BODY), ("GET", "/info", b""),
                               ("POST", "/generate", BODY), ("GET", "/ready", b"")]:
        connection.sock.sendall(connection.request(method, path, body))
        status, headers, _ = connection.response()
        assert status == 200 and headers.get("connection") != "close", (path, status, headers)
        time.sleep(0.4 * TIMEOUT)
    assert time.monotonic() - started > 2 * TIMEOUT, "the requests should outlast the header and body timeouts"
    connection.sock.sendall(connection.request("GET", "/health") + connection.request("POST", "/generate", BODY)
                            + connection.request("GET", "/ready"))
    assert [connection.response()[0] for _ in range(3)] == [200, 200, 200]
    connection.sock.sendall(connection.request("GET", "/health"))
    assert connection.response()[0] == 200


@pytest.mark.parametrize("how", ["at-once", "in-pieces"])
def test_a_header_block_over_the_limit_is_refused(connect, how):
    """16 KiB of headers: a block that comes whole in one read is refused as well as one that keeps coming."""
    connection = connect()
    fits = connection.request("GET", "/health", headers="X-Big: " + "b" * 12_000 + "\r\n")
    connection.sock.sendall(fits)
    assert connection.response()[0] == 200
    big = connection.request("GET", "/health", headers="X-Big: " + "b" * 20_000 + "\r\n")
    pieces = [big] if how == "at-once" else [big[i:i + 4096] for i in range(0, len(big), 4096)]
    for piece in pieces:
        try:
            connection.sock.sendall(piece)
        except OSError:
            break
        time.sleep(0.02)
    connection.closed_after(2.0)
    status, headers, body = connection.response()
    assert status == 431 and headers["connection"] == "close", (status, headers, body)
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_a_request_h11_cannot_parse_is_a_400_in_the_error_shape(connect):
    """uvicorn answers a malformed request in plain text; the service answers in its one error shape."""
    connection = connect()
    connection.sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: nope\r\n\r\n")
    status, headers, body = connection.response()
    assert status == 400 and headers["content-type"] == "application/json", (status, headers, body)
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
