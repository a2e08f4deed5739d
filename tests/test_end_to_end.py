"""The whole harness on a small smoke run: claims -> populations -> pytest -> evaluation -> report.

Real training (tiny models on the synthetic CIFAR-100-format data), run through pytest in a
subprocess exactly as a user would, twice: the second run must train nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import GOOD_CLAIM

SEEDS = "2"  # two students per population: the smallest that gives a std


def run_claims(pytester, cache, *extra):
    return pytester.runpytest_subprocess("claims", "--profile", "smoke", "--seeds", SEEDS, "--cache-dir", str(cache),
                                         "-p", "no:cacheprovider", *extra)


def cached_members(cache: Path) -> set[str]:
    return {p.name for p in (cache / "members").rglob("*.safetensors")}


@pytest.fixture
def claims_project(pytester):
    claims_dir = pytester.mkdir("claims")
    # Two ResNet-18 claims of Table 4 (KD at alpha 0.1 and 0.5 vs independent, activation distance).
    second = GOOD_CLAIM.split("claims:\n")[1].replace("id: c1", "id: c2").replace("alpha: 0.1", "alpha: 0.5")
    (claims_dir / "r18.yaml").write_text(GOOD_CLAIM + second)
    return pytester


def test_smoke_run_end_to_end_then_warm_cache_trains_nothing(claims_project, tmp_path):
    cache = tmp_path / "cache"
    first = run_claims(claims_project, cache)
    first.assert_outcomes(passed=2)  # smoke: every claim evaluated -> pass, whatever the verdict
    assert "profile smoke is a machinery check (synthetic data)" in first.stdout.str()
    evaluation = json.loads((cache / "evaluations" / "latest.json").read_text())
    assert evaluation["profile"]["name"] == "smoke" and evaluation["profile"]["n_seeds"] == 2
    assert {r["verdict"] for r in evaluation["results"]} <= {"reproduced", "not_reproduced", "inconclusive"}
    populations = {p["name"]: p for p in evaluation["populations"]}
    assert set(populations) == {"resnet18/independent", "resnet18/kd-a0.1", "resnet18/kd-a0.5"}
    assert all(p["trained_now"] == 2 for p in populations.values())
    members = cached_members(cache)
    assert len(members) == 7  # teacher + 3 populations x 2 seeds: nothing trained twice
    result = evaluation["results"][0]
    assert result["details"]["treatment"]["n"] == 2 and len(result["details"]["treatment"]["values"]) == 2

    second = run_claims(claims_project, cache)
    second.assert_outcomes(passed=2)
    again = json.loads((cache / "evaluations" / "latest.json").read_text())
    assert all(p["trained_now"] == 0 for p in again["populations"])
    assert cached_members(cache) == members
    assert [r["details"]["test"]["z"] for r in again["results"]] == [r["details"]["test"]["z"] for r in evaluation["results"]]

    report = tmp_path / "report.md"
    done = subprocess.run([sys.executable, "-m", "kdclaims.cli", "report", "--format", "markdown", "--cache-dir",
                           str(cache), "--output", str(report)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "smoke run on synthetic data, not a reproduction" in text
    for r in evaluation["results"]:
        assert r["id"] in text


def test_xdist_workers_share_the_cache_without_training_twice(claims_project, tmp_path):
    cache = tmp_path / "cache"
    # Two workers and no grouping: both need the same teacher and the same populations at once.
    result = run_claims(claims_project, cache, "-n", "2", "--dist", "each")
    assert result.ret == 0
    assert len(cached_members(cache)) == 7
    evaluation = json.loads((cache / "evaluations" / "latest.json").read_text())
    assert evaluation["dataset"]["fingerprint"]  # reported back by a worker


def test_paper_profile_without_cifar100_stops_before_training(claims_project, tmp_path):
    cache = tmp_path / "cache"
    result = claims_project.runpytest_subprocess("claims", "--cache-dir", str(cache), "--data-dir",
                                                  str(tmp_path / "nodata"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stdout.str() + result.stderr.str()
    assert "CIFAR-100 not found" in out and "kdclaims data fetch" in out and "--profile smoke" in out
    assert out.count("CIFAR-100 not found") == 1 and "_pytest.outcomes.Exit" not in out  # said once, no traceback line
    assert not (cache / "members").exists()
