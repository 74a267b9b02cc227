"""python -m targets.triton --preset tiny-dev: a Triton Inference Server serving FLUX on 127.0.0.1.

Makes the serving environment on first use, writes the model repository, starts tritonserver on free ports,
waits until every model is ready, prints the target's SPEC, and serves until Ctrl-C or SIGTERM. A model that
fails to load ends it with Triton's reason (exit 3).
"""
from __future__ import annotations

import argparse
import signal
import sys

from harness.types import Unavailable


def main(argv: list[str] | None = None) -> int:
    from targets.triton.server import TritonServer

    p = argparse.ArgumentParser(prog="python -m targets.triton", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="a preset's weights (default: tiny-dev)")
    p.add_argument("--model", default=None, help="a diffusers-layout FLUX directory instead")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # before start: no tritonserver left behind
    server = TritonServer(args.preset, args.model, args.dtype, args.device)
    try:
        server.start()
        print(f"Triton ready in {server.startup:.1f} s\n  --target triton://{server.http_url}\n"
              f"  --target 'triton://{server.grpc_url}?protocol=grpc'", flush=True)
        code = server.process.wait()
        print(f"python -m targets.triton: tritonserver exited with code {code}: {server.tail()}", file=sys.stderr)
        return 3
    except Unavailable as e:
        print(f"python -m targets.triton: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    finally:
        server.__exit__()


if __name__ == "__main__":
    sys.exit(main())
