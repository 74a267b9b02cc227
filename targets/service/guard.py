"""What a request must get past before the service reads it: the Host header, the API key, the body size.

- Host: a name the server was bound under. A browser page from elsewhere can point its own DNS name at
  127.0.0.1 (DNS rebinding) and so reach a loopback server, but its requests still say its own name.
- API key: `Authorization: Bearer KEY`, compared in constant time, on every path but /health and /ready
  (the probes an orchestrator sends without credentials; they tell nothing).
- Body: at most `max_body` bytes (or the path's own limit: a route that takes an image to edit allows more),
  refused with 413 by Content-Length before a byte is read, or as soon as a chunked body passes it; the body is
  read whole here, so nothing behind sees a byte over the limit.

Refusals are JSON in the service's error shape.
"""
from __future__ import annotations

import hmac
import ipaddress

from targets.service import error_body

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
PROBES = frozenset({"/health", "/ready"})


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_names(bound: str, allowed: list[str]) -> frozenset[str] | None:
    """The Host names to accept for a server bound to `bound`: loopback's, the bound address and those
    allowed; None (any) for a wildcard bind with none allowed, which needs an API key instead."""
    if "*" in allowed or (bound in ("0.0.0.0", "::", "") and not allowed):
        return None
    return LOOPBACK | {host_of(name).lower() for name in (bound, *allowed)}


def host_of(header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware in front of the service: Host check, API key, body limit."""

    def __init__(self, app, hosts: frozenset[str] | None, api_key: str | None, max_body: int,
                 limits: dict[str, int] | None = None):
        self.app, self.hosts, self.max_body, self.limits = app, hosts, max_body, limits or {}
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # lower-case names, as ASGI gives them
        host = host_of(headers.get(b"host", b"").decode("latin-1")).lower()
        if self.hosts is not None and host not in self.hosts:
            return await refuse(send, 421, f"Host {host[:60]!r}: not a name this server answers to "
                                           "(see --allow-host)", "invalid_host", "Host")
        if self.key and scope["path"] not in PROBES \
                and not hmac.compare_digest(headers.get(b"authorization", b""), self.key):
            return await refuse(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                "unauthorized", "Authorization", {b"www-authenticate": b"Bearer"})
        limit = self.limits.get(scope["path"], self.max_body)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await refuse(send, 413, f"body of {length[:20].decode('latin-1')} bytes: at most "
                                           f"{limit} are accepted here", "too_large", "body")
        body, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            size, more = size + len(body[-1]), message.get("more_body", False)
            if size > limit:  # chunked: no Content-Length said so in advance
                return await refuse(send, 413, f"body over {limit} bytes: at most that are accepted here",
                                    "too_large", "body")
        replayed = False

        async def replay():  # the body once, then the server's own messages (a disconnect) as they come
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(body), "more_body": False}

        await self.app(scope, replay, send)


async def refuse(send, status: int, message: str, kind: str, param: str, headers: dict | None = None) -> None:
    body = error_body(message, kind, param)
    head = {b"content-type": b"application/json", b"content-length": str(len(body)).encode(),
            b"connection": b"close", **(headers or {})}
    await send({"type": "http.response.start", "status": status, "headers": list(head.items())})
    await send({"type": "http.response.body", "body": body})
