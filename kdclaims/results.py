"""Saved evaluations: one JSON file per run, with every number and where it came from.

Location: ``<results dir>/<run id>.json`` plus ``latest.json`` (a copy of the newest), where the
results dir is ``--results-dir``, else ``$KDCLAIMS_RESULTS_DIR``, else ``<cache dir>/evaluations``.
The run id is ``<UTC time to the microsecond>-<profile>-<evidence>-<pid>-<random>``: two runs that
finish at the same moment (two shells, two machines sharing a results dir) never overwrite each other.

A run may evaluate a subset of the claims (``-k``, ``-m``, ``-x``, ``--lf``); its ``selection`` says
which claims the catalogue holds, which were selected and which were not evaluated. ``kdclaims
report`` therefore shows, by default, the *merged* view: the latest evaluation of each claim across
the saved runs of the same profile, evidence and code version (``merged_evaluation``); ``--run ID``
shows one run alone.
"""

from __future__ import annotations

import json
import math
import os
import secrets
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
    _write_evaluation_text(path, json.dumps(jsonable(payload), indent=1, sort_keys=False))


def _write_evaluation_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0o644: a temporary file is private; evaluations are shared like the cache
    write_text_atomically(path, text, f".{path.name}-", 0o644)


def new_run_id(profile_name: str, evidence: str) -> str:
    """A run id that sorts by time and is unique: microsecond UTC stamp, then pid and a random suffix
    (two runs finishing in the same microsecond, even on two machines, still differ)."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
    return f"{stamp}-{profile_name}-{evidence}-{os.getpid()}-{secrets.token_hex(3)}"


def save_evaluation(payload: dict, results_dir: Path | str) -> Path:
    """Write the evaluation as ``<run id>.json`` (the id is made here unless the payload has one) and
    as ``latest.json``; returns the run's own file."""
    results_dir = Path(results_dir)
    payload = {**payload, "run_id": payload.get("run_id") or new_run_id(payload["profile"]["name"], payload["evidence"])}
    path = results_dir / f"{payload['run_id']}.json"
    if path.exists():  # a run id given by the caller and already used: never overwrite a saved run
        raise KdclaimsError(f"evaluation {path} exists already; each run needs its own run id")
    # serialised once (a full run's payload is ~0.6 MB of JSON): latest.json is the same bytes, written apart
    # (not a link) so that replacing it never touches the run's own file
    text = json.dumps(jsonable(payload), indent=1, sort_keys=False)
    _write_evaluation_text(path, text)
    _write_evaluation_text(results_dir / "latest.json", text)
    return path


CLI_HINT = "or pass the evaluation file with `kdclaims report --evaluation FILE`"


def load_evaluation(path: Path | str | None = None, results_dir: Path | str | None = None,
                    hint: str = CLI_HINT) -> dict:
    """A saved evaluation (default: ``latest.json`` in the results dir); ``hint`` is the last words of the
    error when there is none, naming how the caller's surface chooses a file."""
    path = Path(path) if path else Path(results_dir or default_results_dir()) / "latest.json"
    if not path.is_file():
        raise KdclaimsError(f"no evaluation at {path}: run the claims first (`pytest claims/ --profile smoke`) "
                            f"{hint}")
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: a document nested 100,000 deep
        raise KdclaimsError(f"evaluation {path} is not readable JSON ({exc})") from None
    if not isinstance(payload, dict) or "results" not in payload:
        raise KdclaimsError(f"{path} is not a kdclaims evaluation (no 'results')")
    payload["_path"] = str(path)
    payload.setdefault("run_id", path.stem)  # evaluations saved before run ids: their file name
    return payload


def _run_files(results_dir: Path) -> list[Path]:
    return sorted(p for p in results_dir.glob("*.json") if p.name != "latest.json" and not p.name.startswith("."))


def load_run(run_id: str, results_dir: Path | str | None = None) -> dict:
    """One saved run by its id (the file name without ``.json``; a unique prefix is enough)."""
    results_dir = Path(results_dir or default_results_dir())
    files = _run_files(results_dir)
    exact = [p for p in files if p.stem == run_id]
    matches = exact or [p for p in files if p.stem.startswith(run_id)]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in files[-5:]) or "none"
        what = "no saved run" if not matches else f"{len(matches)} saved runs"
        raise KdclaimsError(f"{what} with id {run_id!r} in {results_dir} (latest: {known}); "
                            "pass a full id from that folder to --run")
    return load_evaluation(matches[0])


def same_series(a: dict, b: dict) -> bool:
    """Whether two runs may be merged: same profile, evidence, code version (git revision) and design (a
    --sequential run's verdicts come from another design than a fixed run's; runs saved before the field are
    fixed ones)."""
    return (a.get("profile") == b.get("profile") and a.get("evidence") == b.get("evidence")
            and (a.get("provenance") or {}).get("git") == (b.get("provenance") or {}).get("git")
            and bool(a.get("sequential")) == bool(b.get("sequential")))


def run_time(evaluation: dict) -> str:
    return str(evaluation.get("created_at") or "")


def merged_evaluation(latest: dict, results_dir: Path | str | None = None) -> dict:
    """The latest evaluation of each claim across the saved runs of ``latest``'s series (same profile,
    evidence and code version), as one evaluation: each result carries the ``run_id`` and
    ``evaluated_at`` of the run it comes from, and ``selection`` counts what the merge covers.
    Populations are taken from the newest run that has them. Runs of another series are ignored."""
    results_dir = Path(results_dir or Path(latest.get("_path", ".")).parent)
    runs = [latest]
    for path in _run_files(results_dir):
        if path.stem == latest.get("run_id"):
            continue
        try:
            other = load_evaluation(path)
        except KdclaimsError:  # an unreadable file in the folder is not this report's business
            continue
        if same_series(latest, other):
            runs.append(other)
    runs.sort(key=lambda r: (run_time(r), str(r.get("run_id"))))  # oldest first: newer runs overwrite
    by_id: dict[str, dict] = {}
    populations: dict[str, dict] = {}
    catalogue: set[str] = set()
    for run in runs:
        catalogue |= set((run.get("selection") or {}).get("catalogue") or [])
        for result in run["results"]:
            by_id[result["id"]] = {**result, "run_id": run.get("run_id"), "evaluated_at": run_time(run)}
        for pop in run.get("populations") or []:
            populations[pop["name"]] = pop
    newest = runs[-1]
    results = [by_id[k] for k in sorted(by_id)]
    catalogue |= set(by_id)
    merged = {**newest, "results": results, "populations": [populations[k] for k in sorted(populations)]}
    merged["selection"] = {
        **(newest.get("selection") or {}),
        "mode": "merged", "catalogue": sorted(catalogue), "evaluated": sorted(by_id),
        "not_evaluated": sorted(catalogue - set(by_id)),
        "runs": [r.get("run_id") for r in runs],
        "from_earlier_runs": sum(1 for r in results if r["run_id"] != newest.get("run_id")),
    }
    return merged


def single_run(evaluation: dict) -> dict:
    """One run alone, with the ``selection`` a report reads (the form ``merged_evaluation`` gives)."""
    results = list(evaluation["results"])  # one run, one time: the headline says which
    selection = dict(evaluation.get("selection") or {})
    catalogue = set(selection.get("catalogue") or []) | {r["id"] for r in results}
    selection.update(mode="run", catalogue=sorted(catalogue), evaluated=sorted(r["id"] for r in results),
                     not_evaluated=sorted(catalogue - {r["id"] for r in results}),
                     runs=[evaluation.get("run_id")], from_earlier_runs=0)
    return {**evaluation, "results": results, "selection": selection}
