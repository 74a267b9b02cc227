"""The Modal target: a FLUX web endpoint deployed on Modal, `modal://workspace/app/function`.

The URL is Modal's, https://{workspace}--{app}-{function}.modal.run (`endpoint=` points elsewhere, such as
a stand-in on 127.0.0.1: `python -m targets.service --modal`). With MODAL_KEY and MODAL_SECRET set, every
request carries them as Modal's proxy-auth headers; they are read from the environment only, so they never
reach a SPEC, a report or a log. A call longer than Modal's 150 s gets a 303 to a result URL, which is
followed (up to 20 times, as browsers do: 50 minutes). The first request is reported apart as the cold
start: an app scaled to zero starts a container and loads the model for it.
"""
from __future__ import annotations

import os
import re
import urllib.parse

import httpx

from harness.types import Unavailable
from targets.http import HttpTarget

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # workspace, app and function names


def endpoint_url(workspace: str, app: str, function: str) -> str:
    """Modal's URL for a web endpoint: lower case, underscores as dashes (a function flux_dev is flux-dev)."""
    for kind, value in (("workspace", workspace), ("app", app), ("function", function)):
        if not NAME.fullmatch(value):
            raise ValueError(f"{kind}={value!r}: must be letters, digits, dashes and underscores")
    workspace, app, function = (v.lower().replace("_", "-") for v in (workspace, app, function))
    return f"https://{workspace}--{app}-{function}.modal.run"


class ModalTarget(HttpTarget):
    name = "modal"
    follow_redirects = True

    def __init__(self, url: str, path: str = "/", protocol: str = "raw", endpoint: str | None = None,
                 timeout: str | float = 3000.0, **options):
        parts = urllib.parse.urlsplit(url)
        names = [parts.netloc, *filter(None, parts.path.split("/"))]
        if len(names) != 3:
            raise ValueError(f"{url!r}: must be modal://workspace/app/function")
        self.function_url = endpoint_url(*names)
        super().__init__(endpoint or self.function_url, protocol, path, timeout, **options)

    def headers(self) -> dict[str, str]:
        key, secret = os.environ.get("MODAL_KEY"), os.environ.get("MODAL_SECRET")
        return {"Modal-Key": key, "Modal-Secret": secret} if key and secret else {}

    def probe(self) -> dict:
        return {}  # a Modal endpoint has no /info, and a probe would wake a scaled-to-zero app before its time

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code in (401, 403):
            state = "were refused" if self.headers() else "are not both set"
            raise Unavailable(f"{self.url}: HTTP {response.status_code}: a proxy-auth token is needed, and "
                              f"MODAL_KEY and MODAL_SECRET {state}")
        return super().check(response)

    def describe(self) -> dict:
        described = super().describe()
        described["cold_start_s"] = described.pop("first_request_s")
        return {**described, "function_url": self.function_url, "auth": bool(self.headers())}
