"""Where fluxgate keeps what it makes on first use (presets, golden images, metric weights)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$FLUXGATE_CACHE, else ~/.cache/fluxgate."""
    return Path(os.environ.get("FLUXGATE_CACHE", Path.home() / ".cache" / "fluxgate"))
