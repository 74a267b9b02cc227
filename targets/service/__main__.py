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

from targets.service.pool import Settings


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m targets.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=Settings.target, metavar="SPEC", help="what to serve (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=Settings.workers,
                   help="copies of the target serving at once, each with its own weights (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=Settings.max_queue,
                   help="requests waiting for a worker; one more gets 429 (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=Settings.timeout,
                   help="seconds a request may take, waiting included, before 504 (default: %(default)s)")
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
    from targets.service.modal import ModalProxy

    args = parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings(args.target, args.workers, args.max_queue, args.timeout, lazy=args.modal)
        app = make_app(settings, args.raw_path)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m targets.service: {e}", file=sys.stderr)
        return 2
    served = ModalProxy(app, os.environ.get("MODAL_KEY"), os.environ.get("MODAL_SECRET"), args.redirect_after) \
        if args.modal else app
    # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY only on sockets that say it, and without it Nagle's
    # algorithm and delayed ACKs hold every answer on a kept-alive connection back by 40 ms
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(served, log_level=args.log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=args.grace)
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
    sys.exit(main())
