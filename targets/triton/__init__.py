"""FLUX on a real Triton Inference Server: the model repository (repository.py, models.py), the launcher
and its environment (server.py, `python -m targets.triton`), and the target (target.py)."""
