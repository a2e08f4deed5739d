"""Collection, the light CLI commands and a warm run import no heavy library (issue #15).

Each case runs in a fresh interpreter (this test process has torch loaded already) and reports which
of torch, pandas, matplotlib and scipy.stats ended up in ``sys.modules``: importing the pytest
plugin, collecting the shipped claims, ``kdclaims --help``, ``claims list`` and ``claims validate``
must need none of them (torch alone costs seconds of a warm run), and neither must a pytest run of
claims whose members are all cached: torch is imported only when something must be trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import GOOD_CLAIM

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib", "scipy.stats")

REPORT = f"import json, sys; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"


def _cli(*args: str) -> str:
    return (
        "import sys\nfrom kdclaims.cli import main\n"
        f"sys.argv = ['kdclaims', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


CASES = {
    "import kdclaims.plugin": "import kdclaims.plugin\n",
    "collect the claims": (
        "import pytest\n"
        f"pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', {str(ROOT / 'claims')!r}])\n"
    ),
    "kdclaims --help": _cli("--help"),
    "kdclaims claims list": _cli("claims", "list"),
    "kdclaims claims validate": _cli("claims", "validate"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_light_paths_import_no_heavy_library(case, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["KDCLAIMS_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", CASES[case] + REPORT], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{case} imported {loaded}"


def test_the_check_sees_a_heavy_import(tmp_path):
    """The report line names a heavy module once something imports it (so the test above can fail)."""
    done = subprocess.run([sys.executable, "-c", "import scipy.stats\n" + REPORT],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["scipy.stats"]


# A profile whose members train in a fraction of a second: the cold run below builds its cache.
TINY_PROFILE = """name: tiny-warm
kind: machinery-check
dataset:
  kind: synthetic
  image_size: 8
  synthetic: {num_classes: 4, train_per_class: 24, test_per_class: 8, seed: 0}
seeds: 1-2
scale: smoke
architectures:
  resnet18: {epochs: 1}
"""


def _pytest_run(tmp_path) -> str:
    claims = tmp_path / "claims"
    claims.mkdir(exist_ok=True)
    (claims / "one.yaml").write_text(GOOD_CLAIM)
    (tmp_path / "tiny.yaml").write_text(TINY_PROFILE)
    args = [str(claims), "--profile", str(tmp_path / "tiny.yaml"), "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(tmp_path / "results"), "-p", "no:cacheprovider", "-q"]
    return f"import pytest\ncode = pytest.main({args!r})\nassert code in (0, 1), code\n"


def test_a_warm_run_imports_no_torch(tmp_path):
    """The same pytest run twice: the first trains (torch), the second finds every member cached and
    evaluates the claim, saves the evaluation and prints its summary without torch or pandas."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    loaded = {}
    for run in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", _pytest_run(tmp_path) + REPORT], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout or "1 failed" in done.stdout, done.stdout[-2000:]
        loaded[run] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "torch" in loaded["cold"]  # the check sees torch where it is needed: this run trained
    assert loaded["warm"] == [], f"a warm run imported {loaded['warm']}"
    evaluations = sorted((tmp_path / "results").glob("*-tiny-warm-trained-*.json"))
    assert len(evaluations) == 2  # both runs evaluated the claim and saved it
    warm = json.loads(evaluations[-1].read_text())
    assert warm["provenance"]["torch"]  # the version, read without importing torch
    assert [p["trained_now"] for p in warm["populations"]] == [0, 0]
