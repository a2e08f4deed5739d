"""Saved evaluations: one JSON file per run, with every number and where it came from.

Location: ``<results dir>/<UTC time>-<profile>-<evidence>.json`` plus ``latest.json`` (a copy of the
newest), where the results dir is ``--results-dir``, else ``$KDCLAIMS_RESULTS_DIR``, else
``<cache dir>/evaluations``. ``kdclaims report`` reads ``latest.json`` unless told otherwise.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

from kdclaims.atomic import write_text_atomically
from kdclaims.errors import KdclaimsError
from kdclaims.paths import default_results_dir

EVALUATION_SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent


def jsonable(value):
    """Plain JSON: non-finite floats become the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def git_revision() -> str | None:
    """The code version: git commit of the kdclaims checkout (with '-dirty' for local changes), if any."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0o644: a temporary file is private; evaluations are shared like the cache
    write_text_atomically(path, json.dumps(jsonable(payload), indent=1, sort_keys=False), f".{path.name}-", 0o644)


def save_evaluation(payload: dict, results_dir: Path | str) -> Path:
    results_dir = Path(results_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = results_dir / f"{stamp}-{payload['profile']['name']}-{payload['evidence']}.json"
    write_json_atomic(path, payload)
    write_json_atomic(results_dir / "latest.json", payload)
    return path


def load_evaluation(path: Path | str | None = None, results_dir: Path | str | None = None) -> dict:
    path = Path(path) if path else Path(results_dir or default_results_dir()) / "latest.json"
    if not path.is_file():
        raise KdclaimsError(f"no evaluation at {path}: run the claims first (`pytest claims/ --profile smoke`) "
                            "or pass the evaluation file with --evaluation")
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: a document nested 100,000 deep
        raise KdclaimsError(f"evaluation {path} is not readable JSON ({exc})") from None
    if not isinstance(payload, dict) or "results" not in payload:
        raise KdclaimsError(f"{path} is not a kdclaims evaluation (no 'results')")
    payload["_path"] = str(path)
    return payload
