"""A real HTTP server (FastAPI on uvicorn) that serves any in-process target: `python -m targets.service`.

app.py holds the routes and protocols, pool.py the workers and the bounded queue, modal.py the Modal
proxy stand-in, launch.py the launcher that the tests and fixtures use.
"""
