"""What Modal's web-endpoint proxy puts in front of an app, for a stand-in on 127.0.0.1 (a real Modal
endpoint needs a cloud account; this needs none).

- Proxy auth: with a key and secret set, a request without matching `Modal-Key` and `Modal-Secret` headers
  gets 401 and never reaches the app.
- Long calls: a call still running after `redirect_after` seconds (150 on Modal) is answered with a 303 to
  the same URL plus `?__modal_function_call_id=fc-...`, the result URL. A GET there waits up to
  `redirect_after` again, then gives the result or another 303. The call runs on regardless.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse

CALL_ID = "__modal_function_call_id"


class ModalProxy:
    """ASGI middleware: Modal's proxy auth and 303 result redirects around `app`."""

    def __init__(self, app, key: str | None = None, secret: str | None = None, redirect_after: float = 150.0):
        self.app, self.key, self.secret, self.redirect_after = app, key, secret, redirect_after
        self.calls: dict[str, asyncio.Task] = {}  # function call id -> the call, until its result is fetched

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and (headers.get(b"modal-key", b"").decode() != self.key
                                     or headers.get(b"modal-secret", b"").decode() != self.secret):
            return await _send(send, 401, [(b"content-type", b"application/json")],
                               json.dumps({"error": "missing or invalid proxy auth token (Modal-Key, Modal-Secret)"}
                                          ).encode())
        query = urllib.parse.parse_qs(scope["query_string"].decode())
        if CALL_ID in query:
            call_id = query[CALL_ID][0]
            if call_id not in self.calls:
                return await _send(send, 404, [(b"content-type", b"application/json")],
                                   json.dumps({"error": f"no function call {call_id!r}"}).encode())
        else:
            call_id = f"fc-{secrets.token_hex(8)}"
            self.calls[call_id] = asyncio.create_task(self._call(scope, await _body(receive)))
        call = self.calls[call_id]
        done, _ = await asyncio.wait({call}, timeout=self.redirect_after)
        if not done:
            location = f"{scope['path']}?{urllib.parse.urlencode({CALL_ID: call_id})}"
            return await _send(send, 303, [(b"location", location.encode())], b"")
        self.calls.pop(call_id, None)  # fetched: a result URL answers once, as the stand-in keeps nothing longer
        status, response_headers, body = call.result()
        await _send(send, status, response_headers, body)

    async def _call(self, scope, body: bytes) -> tuple[int, list, bytes]:
        """Run the app on the request, keeping its answer for whoever asks for it."""
        answer = {"status": 500, "headers": [], "body": b""}
        delivered = False

        async def receive():
            nonlocal delivered
            if delivered:
                await asyncio.Event().wait()  # no disconnect: the call outlives its first HTTP request
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        return answer["status"], answer["headers"], answer["body"]


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send(send, status: int, headers: list, body: bytes) -> None:
    headers = [h for h in headers if h[0].lower() != b"content-length"] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
