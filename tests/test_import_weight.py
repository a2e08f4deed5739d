"""Collection and the light CLI commands import no heavy library (issue #15).

Each case runs in a fresh interpreter (this test process has torch loaded already) and reports which
of torch, pandas, matplotlib and scipy.stats ended up in ``sys.modules``: importing the pytest
plugin, collecting the shipped claims, ``kdclaims --help``, ``claims list`` and ``claims validate``
must need none of them (torch alone costs seconds of a warm run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
