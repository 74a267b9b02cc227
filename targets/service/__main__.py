"""python -m targets.service --target reference:preset=tiny-dev --port 8000: serve a target over HTTP.

It prints `fluxgate service: listening on http://HOST:PORT` once the port is bound (--port 0 picks a free
one), loads the workers in the background (/ready answers 200 when they are loaded), and on SIGTERM or
Ctrl-C stops taking connections, finishes the requests in flight, then exits as the signal asks (uvicorn
raises it again once it is done). A target that cannot start exits 3 with the reason; a bad option exits 2.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from targets.service import connection
from targets.service.pool import Settings


def seconds(text: str) -> float:
    if not float(text) > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number of seconds above 0")
    return float(text)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m targets.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=Settings.target, metavar="SPEC", help="what to serve (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s); any but loopback needs an API key")
    p.add_argument("--api-key", default=os.environ.get("FLUXGATE_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (default: $FLUXGATE_API_KEY, which keeps the key out "
                        "of the process list)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a Host header name to accept besides the bound address and loopback's; repeatable; "
                        "'*' accepts any (default: those only, or any for a 0.0.0.0 bind)")
    p.add_argument("--max-body", type=int, default=Settings.max_body, metavar="BYTES",
                   help="largest request body; more gets 413 (default: %(default)s)")
    p.add_argument("--max-upload", type=int, default=Settings.max_upload, metavar="BYTES",
                   help="largest body on a route that takes an image to edit (default: %(default)s)")
    p.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json (default: off)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=Settings.workers,
                   help="copies of the target serving at once, each with its own weights (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=Settings.max_queue,
                   help="requests waiting for a worker; one more gets 429 (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=Settings.timeout,
                   help="seconds a request may take, waiting included, before 504 (default: %(default)s)")
    p.add_argument("--header-timeout", type=seconds, default=connection.HEADER_TIMEOUT, metavar="S",
                   help="seconds from connect, or from a kept-alive connection's next byte, to the end of a "
                        "request's headers; past it 408 and a close, however the bytes trickle in; headers over "
                        f"{connection.MAX_HEAD // 1024} KiB get 431 (default: %(default)s)")
    p.add_argument("--body-timeout", type=seconds, default=connection.BODY_TIMEOUT, metavar="S",
                   help="seconds from the end of the headers to the end of the body; past it 408 and a close, "
                        "and the request is not served (default: %(default)s)")
    p.add_argument("--keep-alive", type=seconds, default=connection.KEEP_ALIVE, metavar="S",
                   help="seconds a kept-alive connection may idle between requests (default: %(default)s)")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds to let requests in flight finish on shutdown (default: as long as they take)")
    p.add_argument("--raw-path", default="/generate", help="path of the raw protocol (default: %(default)s)")
    p.add_argument("--modal", action="store_true",
                   help="stand in for a Modal web endpoint: load on the first request, check Modal-Key / "
                        "Modal-Secret against $MODAL_KEY / $MODAL_SECRET when set, 303 to a result URL for "
                        "calls longer than --redirect-after")
    p.add_argument("--redirect-after", type=float, default=150.0, help="with --modal (default: %(default)s s)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from targets.service.app import make_app
    from targets.service.guard import Guard, host_names, is_loopback
    from targets.service.modal import ModalProxy

    args = parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not is_loopback(args.host) and not args.api_key:
        print(f"python -m targets.service: --host {args.host}: a server others can reach needs an API key "
              "(--api-key or $FLUXGATE_API_KEY)", file=sys.stderr)
        return 2
    try:
        settings = Settings(args.target, args.workers, args.max_queue, args.timeout, lazy=args.modal,
                            max_body=args.max_body, max_upload=args.max_upload)
        app = make_app(settings, args.raw_path, docs=args.docs)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m targets.service: {e}", file=sys.stderr)
        return 2
    served = ModalProxy(app, os.environ.get("MODAL_KEY"), os.environ.get("MODAL_SECRET"), args.redirect_after) \
        if args.modal else app
    limits = {path: args.max_upload for path in app.state.upload_paths}
    served = Guard(served, host_names(args.host, args.allow_host), args.api_key, args.max_body, limits)
    # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY only on sockets that say it, and without it Nagle's
    # algorithm and delayed ACKs hold every answer on a kept-alive connection back by 40 ms
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(served, log_level=args.log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=args.grace, timeout_keep_alive=args.keep_alive,
                            http=connection.protocol(args.header_timeout, args.body_timeout),
                            h11_max_incomplete_event_size=connection.MAX_HEAD)
    server = uvicorn.Server(config)

    async def watch():  # a target that fails to load stops the server, so the launcher hears of it at once
        while not server.should_exit:
            if app.state.failed:
                server.should_exit = True
            await asyncio.sleep(0.05)

    async def serve():
        watcher = asyncio.create_task(watch())
        print(f"fluxgate service: listening on http://{host}:{port}", flush=True)
        await server.serve(sockets=[sock])
        watcher.cancel()

    asyncio.run(serve())
    if app.state.failed:
        print(f"python -m targets.service: {app.state.pool.load_error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    from harness import exit

    exit.now(main())
