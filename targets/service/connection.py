"""Deadlines on a connection's headers, body and idle time: uvicorn's h11 protocol with a timer that bytes
do not reset.

uvicorn (0.54) times only a kept-alive connection between requests, from the end of a response, and any
byte cancels that timer. So a client that connects and sends nothing, trickles its headers (slowloris) or
its body holds a connection for as long as it likes, and a body that ends after --timeout is still served.
Here a connection is always in one phase, read from h11's state after every batch of events, with one
deadline set when the phase begins and moved by nothing that arrives:

    header  from connect (a fresh connection) or the first byte of the next request, to the end of its head
    body    from the end of the head to the end of the body
    idle    between requests on a kept-alive connection: uvicorn's timeout_keep_alive
    none    while the app works on a whole request: that is --timeout's business

When a deadline passes, a request not yet answered gets 408 in the service's error shape and the connection
is closed; one with nothing sent, or between requests, is just closed. A body cut short never reaches the
endpoint: the app is still reading it, gets http.disconnect and gives up.

A head (request line and headers) over MAX_HEAD is refused with 431. h11 has that limit
(h11_max_incomplete_event_size) but checks it only while a head is incomplete, so one that arrives whole in
a single read, up to asyncio's 256 KiB, would pass; the check here looks for its end within the limit.
"""
from __future__ import annotations

import re

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from targets.service import error_body

HEADER_TIMEOUT = 10.0   # seconds: a client on a slow link sends a head in well under one
BODY_TIMEOUT = 10.0     # seconds: bodies are JSON of a few KiB; even --max-body's 1 MiB needs only 100 KiB/s.
                        # Both stay under the edge suite's slow_client_limit (15 s), which holds servers to it
KEEP_ALIVE = 5.0        # seconds idle between requests: uvicorn's own default
MAX_HEAD = 16 * 1024    # bytes of request line and headers: h11's own default, said out loud
END_OF_HEAD = re.compile(rb"\n\r?\n")  # as h11 finds it


class TimedH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT
    phase: str | None = None
    deadline = None  # the asyncio.TimerHandle of the phase

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._enter("header")  # a fresh connection: from connect

    def data_received(self, data: bytes) -> None:
        if self.phase == "idle":
            self._enter("header")  # the request's first byte starts its clock; no later byte moves it
        super().data_received(data)

    def handle_events(self) -> None:  # after bytes arrive, and after a response when requests are pipelined
        if self.conn.their_state is h11.IDLE and self._head_too_long():
            return self._refuse(431, f"request line and headers over {self._max_head} bytes", "invalid_request_error")
        super().handle_events()
        self._follow()

    def send_400_response(self, msg: str) -> None:  # h11 could not parse the request: the one error shape too
        self._refuse(400, msg, "invalid_request_error")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer starts here even when the next request has begun (pipelined): the idle
        # phase above is that timer, started only when no request is under way
        self._unset_keepalive_if_required()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    @property
    def _max_head(self) -> int:
        return self.config.h11_max_incomplete_event_size or MAX_HEAD

    def _head_too_long(self) -> bool:
        buffered = self.conn.trailing_data[0]  # the head so far: h11 consumes nothing of it until it ends
        return len(buffered) > self._max_head and not END_OF_HEAD.search(buffered, 0, self._max_head)

    def _follow(self) -> None:
        """Enter the phase h11's state says the connection is in, if it is not there already."""
        their = self.conn.their_state
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closing, or upgraded
            phase = None
        elif their is h11.IDLE:  # bytes already buffered are a pipelined request's: its clock starts now
            phase = "header" if self.phase == "header" or self.conn.trailing_data[0] else "idle"
        elif their is h11.SEND_BODY:
            phase = "body"
        else:  # the request is in (DONE), or the connection is ending
            phase = None
        if phase != self.phase:
            self._enter(phase)

    def _enter(self, phase: str | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.phase, self.deadline = phase, None
        if phase is not None:
            seconds = {"header": self.header_timeout, "body": self.body_timeout, "idle": self.timeout_keep_alive}
            self.deadline = self.loop.call_later(seconds[phase], self._expired, phase, seconds[phase])

    def _expired(self, phase: str, seconds: float) -> None:
        self.phase = self.deadline = None
        if self.transport.is_closing():
            return
        if phase == "header" and self.conn.trailing_data[0]:  # part of a head came: say why it is cut off
            self._refuse(408, f"no whole request head within the header timeout of {seconds} s", "timeout")
        elif phase == "body" and not self.cycle.response_started:  # the app is still waiting for the body
            self.cycle.disconnected = True  # its receive() says http.disconnect; its send() does nothing
            self._refuse(408, f"no whole request body within the body timeout of {seconds} s", "timeout")
        else:  # nothing sent, between requests, or an answer already under way: only a close can say it
            self.transport.close()

    def _refuse(self, status: int, message: str, kind: str) -> None:
        """Answer `status` in the service's error shape, then close; h11 allows a response from any state
        short of one already started."""
        body = error_body(message, kind)
        headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response already begun: the close alone says it
            pass
        self.transport.close()


def protocol(header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT) -> type[TimedH11Protocol]:
    """The class for uvicorn.Config(http=...) with these deadlines; the idle one is Config's timeout_keep_alive."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout,
                                                          "body_timeout": body_timeout})
