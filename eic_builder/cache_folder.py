"""The toolkit's cache folder: WordNet's laid-out data and noun table, the gzip seek indexes."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "EIC_CACHE_DIR"


def cache_dir() -> Path:
    """``EIC_CACHE_DIR``, else ``$XDG_CACHE_HOME/eic``, else ``~/.cache/eic``."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "eic"
