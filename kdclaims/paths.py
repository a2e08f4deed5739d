"""Default directories: the cache, the real dataset, the saved evaluations (each overridable by a flag)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$KDCLAIMS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdclaims``, else ``~/.cache/kdclaims``."""
    if os.environ.get("KDCLAIMS_CACHE_DIR"):
        return Path(os.environ["KDCLAIMS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "kdclaims"


def default_data_dir(cache_dir: Path | None = None) -> Path:
    """Where the real CIFAR-100 archive is looked for: ``$KDCLAIMS_DATA_DIR``, else ``<cache dir>/data``."""
    if os.environ.get("KDCLAIMS_DATA_DIR"):
        return Path(os.environ["KDCLAIMS_DATA_DIR"]).expanduser()
    return (cache_dir or default_cache_dir()) / "data"


def default_results_dir(cache_dir: Path | str | None = None) -> Path:
    """Where evaluations are saved: ``$KDCLAIMS_RESULTS_DIR``, else ``<cache dir>/evaluations``."""
    if os.environ.get("KDCLAIMS_RESULTS_DIR"):
        return Path(os.environ["KDCLAIMS_RESULTS_DIR"]).expanduser()
    return Path(cache_dir or default_cache_dir()).expanduser() / "evaluations"
