"""A non-editable install carries the paper's tables and the claim catalogue.

The wheel is built from a copy of the package in a temporary folder and installed there with
``--target``; every command then runs from a directory outside the repository with only that folder
on ``PYTHONPATH``, and must import kdclaims from it.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args, cwd, env, ok=(0,)):
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in ok, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, environment, a working directory outside the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(REPO / "kdclaims", source / "kdclaims", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # Without build isolation when setuptools is here (no download); otherwise pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _run(["-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(root / "dist"), str(source)], root, None)
    wheel, = (root / "dist").glob("kdclaims-*.whl")
    site = root / "site"
    _run(["-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], root, None)
    env = {**os.environ, "PYTHONPATH": str(site), "KDCLAIMS_CACHE_DIR": str(root / "cache")}
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return site, env, elsewhere


def test_installed_wheel_runs_the_catalogue_and_the_audit(installed):
    site, env, cwd = installed
    where = _run(["-c", "import kdclaims.paper as p; print(p.__file__); print(p.PAPER_DIR)"], cwd, env).split()
    assert all(Path(path).is_relative_to(site) for path in where), where
    assert "96 claims" in _run(["-m", "kdclaims.cli", "claims", "list"], cwd, env)
    audit = _run(["-m", "kdclaims.cli", "audit-paper"], cwd, env)
    assert "57 of 60 printed p-values agree" in audit and "78 of 96 reproduced" in audit
    # The shipped catalogue under pytest, by package name; --evidence paper trains nothing. A claim the
    # paper's own numbers do not reproduce fails, as in `pytest claims/ --evidence paper`.
    out = _run(["-m", "pytest", "--pyargs", "kdclaims.catalogue", "--evidence", "paper", "-q", "-p", "no:cacheprovider"],
               cwd, env, ok=(0, 1))
    assert "18 failed, 78 passed" in out, out[-2000:]
    assert "vgg16_bn_table8.yaml::vgg16_bn-t8-pd-kd0.1-vs-uniform0.9" in out  # the paper's own contradiction
