"""A real HTTP server (FastAPI on uvicorn) that serves any in-process target: `python -m targets.service`.

app.py holds the routes and protocols, pool.py the workers and the bounded queue, guard.py the Host, key and
body-size checks in front, connection.py the connections' deadlines, modal.py the Modal proxy stand-in,
launch.py the launcher that the tests and fixtures use.
"""
import json


def error_body(message: str, kind: str, param: str | None = None) -> bytes:
    """The service's one error shape, whichever layer answers: {"error": {"message", "type", "param"}}."""
    if len(message) > 1000:  # messages quote values by excerpts; this keeps any that slipped past them short
        message = message[:1000] + "..."
    return json.dumps({"error": {"message": message, "type": kind, "param": param}}).encode()

