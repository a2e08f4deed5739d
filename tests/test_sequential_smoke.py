"""Sequential mode under pytest (issue #19): members trained in look-sized batches, populations that stop growing
once their claims are decided, and the same verdicts as the fixed design where the effect is large.

The catalogue: uniform KD at alpha 0.9 (mostly noise as soft targets) against independent students, on test loss
and on JS divergence to the teacher. In the small synthetic profile below these differ by t ~ 90 and t ~ 400 at
6 seeds (in the shipped smoke profile at 6 seeds, t ~ 78 and ~ 66; KD at 0.9 against independent is NOT a large
effect there, t ~ 1.5, so it is not used). Each claim must then cross the efficacy boundary at the first look
(3 of 6 members), so the independent and uniform-KD populations stop at 3 members each.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

# Imported here, not in the tests: pytester restores sys.modules after each test, and torch (which these import)
# cannot be imported a second time into one process.
from kdclaims.cache import Cache, read_meta
from kdclaims.options import forwarded_to_pytest
from kdclaims.population import Workbench
from kdclaims.setups import TEACHER_SEED
from kdclaims.spec import PopulationSpec

from helpers import tiny_profile

# The smoke pipeline (synthetic data in CIFAR-100's format, smoke-size models) on a smaller dataset, so that both
# runs below train their 20 members in seconds.
PROFILE = """
name: tiny-sequential
description: "the smoke pipeline on a small synthetic dataset: the sequential smoke test"
kind: machinery-check
dataset:
  kind: synthetic
  image_size: 16
  synthetic: {num_classes: 4, train_per_class: 48, test_per_class: 16, seed: 0}
seeds: 1-8
precision: fp32
scale: smoke
architectures:
  resnet18: {epochs: 2}
"""

CLAIMS = """
group: large-effect
defaults:
  kind: comparison
  source: sequential smoke test
  arch: resnet18
  baseline: {setup: independent}
  treatment: {setup: uniform_kd, alpha: 0.9}
  direction: greater
  paper: {outcome: reject, p: 0.0}
claims:
  - id: uniform-kd-loss
    sentence: "students of uniform noise at alpha 0.9 have a higher test loss than independent students"
    metric: test_loss
  - id: uniform-kd-js
    sentence: "students of uniform noise at alpha 0.9 are further from the teacher than independent students (JS)"
    metric: js_divergence
"""

SMALL_DESIGN = ("--seeds", "6", "--looks", "3,6")


@pytest.fixture
def project(pytester):
    pytester.makefile(".yaml", tiny=PROFILE)
    (pytester.mkdir("claims") / "large.yaml").write_text(CLAIMS)
    return pytester


def run_claims(pytester, cache: Path, *extra):
    return pytester.runpytest_subprocess("claims", "--profile", "tiny.yaml", *SMALL_DESIGN, "--cache-dir", str(cache),
                                         "-p", "no:cacheprovider", *extra)


def members_per_population(cache: Path) -> Counter:
    """What the cache holds, read from its entries' records: students per population, and the teachers."""
    records = [read_meta(path) for path in Cache(cache).entries()]
    return Counter("teacher" if meta["seed"] == TEACHER_SEED else meta["population"] for meta in records)


def test_sequential_trains_fewer_members_and_reaches_the_fixed_verdicts(project, tmp_path):
    fixed_cache, sequential_cache = tmp_path / "fixed", tmp_path / "sequential"
    run_claims(project, fixed_cache).assert_outcomes(passed=2)
    sequential = run_claims(project, sequential_cache, "--sequential")
    sequential.assert_outcomes(passed=2)
    out = sequential.stdout.str()
    assert "sequential design (looks 3,6, obf spending)" in out

    fixed_members, sequential_members = members_per_population(fixed_cache), members_per_population(sequential_cache)
    assert fixed_members["resnet18/independent"] == fixed_members["resnet18/uniform_kd-a0.9"] == 6
    assert sequential_members["resnet18/independent"] == sequential_members["resnet18/uniform_kd-a0.9"] == 3
    assert fixed_members["teacher"] == sequential_members["teacher"] == 1
    assert sum(sequential_members.values()) < sum(fixed_members.values())  # 1 + 3 + 3 < 1 + 6 + 6

    fixed = json.loads((fixed_cache / "evaluations" / "latest.json").read_text())
    evaluation = json.loads((sequential_cache / "evaluations" / "latest.json").read_text())
    assert {r["id"]: r["verdict"] for r in evaluation["results"]} == {r["id"]: r["verdict"] for r in fixed["results"]}
    assert {r["verdict"] for r in fixed["results"]} == {"reproduced"}  # the large effect is seen at 6 seeds

    # the run record: the design, each claim's looks and stopping reason, the members per population
    assert evaluation["sequential"] is True and fixed["sequential"] is False
    assert evaluation["sequential_design"]["looks"] == [3, 6] and evaluation["sequential_design"]["rules"]
    for result in evaluation["results"]:
        record = result["details"]["sequential"]
        assert (record["stop_look"], record["reason"]) == (1, "efficacy"), result["reason"]
        look = record["looks"][0]
        assert look["n"] == {"resnet18/uniform_kd-a0.9": 3, "resnet18/independent": 3}
        assert look["z"] > look["efficacy_boundary"]
        assert result["details"]["treatment"]["n"] == 3  # the claim's own numbers are those of its stopping look
    populations = {p["name"]: p for p in evaluation["populations"]}
    assert {name: (p["n"], p["trained_now"], p["members_planned"]) for name, p in populations.items()} == {
        "resnet18/independent": (3, 3, 6), "resnet18/uniform_kd-a0.9": (3, 3, 6)}
    assert len(populations["resnet18/independent"]["metrics"]["test_loss"]) == 3


def test_a_sequential_run_uses_members_cached_beyond_its_look(project, tmp_path):
    """Members already in the cache cost nothing: a sequential run on a warm cache looks at all of them and trains
    nothing (here the fixed run left 6 per population, so the first look already sees 6)."""
    cache = tmp_path / "cache"
    run_claims(project, cache).assert_outcomes(passed=2)
    before = members_per_population(cache)
    run_claims(project, cache, "--sequential").assert_outcomes(passed=2)
    assert members_per_population(cache) == before
    evaluation = json.loads((cache / "evaluations" / "latest.json").read_text())
    for result in evaluation["results"]:
        look = result["details"]["sequential"]["looks"][0]
        assert look["target_members"] == 3 and set(look["n"].values()) == {6}
    assert all(p["trained_now"] == 0 and p["n"] == 6 for p in evaluation["populations"])


@pytest.mark.parametrize("extra, words", [
    (("--evidence", "paper"), "--evidence paper"),
    (("--correction", "holm"), "family-wise correction is a different design"),
])
def test_sequential_refuses_what_it_cannot_do_before_anything_runs(project, tmp_path, extra, words):
    result = run_claims(project, tmp_path / "cache", "--sequential", *extra)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and words in errors[0], result.stderr.str()
    assert not (tmp_path / "cache" / "members").exists()


def test_kdclaims_run_forwards_sequential_options():
    args = forwarded_to_pytest({"sequential": True, "spending": "pocock", "looks": "3,6", "profile": "smoke"})
    assert "--sequential" in args and args[args.index("--spending") + 1] == "pocock"
    assert args[args.index("--looks") + 1] == "3,6"
    assert "--sequential" not in forwarded_to_pytest({"sequential": False, "profile": "smoke"})


def test_a_population_limited_to_its_first_members_trains_only_those_and_uses_later_cached_ones(tmp_path):
    spec = PopulationSpec("resnet18", "independent")
    bench = Workbench(tiny_profile(seeds=(1, 2, 3, 4), epochs=1), tmp_path / "cache", progress=False)
    first = bench.population(spec, 2)
    assert first.seeds == (1, 2) and first.trained_now == 2
    assert bench.missing_seeds(spec) == [3, 4] and bench.missing_seeds(spec, 2) == []
    full = bench.population(spec)  # no limit: every seed, the first two from the cache (same keys)
    assert full.seeds == (1, 2, 3, 4) and full.trained_now == 2 and full.keys[:2] == first.keys
    again = Workbench(bench.profile, tmp_path / "cache", progress=False).population(spec, 2)
    assert again.seeds == (1, 2, 3, 4) and again.trained_now == 0  # seeds 3 and 4 are cached beyond the look


def test_a_later_look_of_a_population_replaces_its_earlier_one_in_memory(tmp_path):
    spec = PopulationSpec("resnet18", "independent")
    bench = Workbench(tiny_profile(seeds=(1, 2, 3), epochs=1), tmp_path / "cache", progress=False)
    bench.member_values(spec, "activation_distance", 2)
    later = bench.population(spec, 3)
    assert list(bench._populations) == [(spec, 3)] and not bench._member_values  # the look-2 logits are freed
    assert bench.population(spec, 3) is later and len(bench.member_values(spec, "activation_distance", 3)) == 3


RANKING = """
group: ranking
claims:
  - id: independent-lowest-loss
    sentence: "independent students have the lowest test loss of three setups"
    source: sequential smoke test
    arch: resnet18
    kind: ranking
    metric: test_loss
    candidates: [{setup: independent}, {setup: kd, alpha: 0.1}, {setup: uniform_kd, alpha: 0.9}]
    expected_best: [{setup: independent}]
    paper: {outcome: holds}
"""


def test_a_sequential_ranking_stops_training_a_rival_once_its_pair_is_decided(pytester, tmp_path):
    """Uniform noise at alpha 0.9 is far behind on test loss (t ~ 90 at 6 seeds, see the module docstring): its
    pair with independent crosses at the first look and its population stops at 3 members, while KD at alpha 0.1,
    close to independent, keeps both growing to the final look."""
    pytester.makefile(".yaml", tiny=PROFILE)
    (pytester.mkdir("claims") / "ranking.yaml").write_text(RANKING)
    cache = tmp_path / "cache"
    run_claims(pytester, cache, "--sequential").assert_outcomes(passed=1)  # passes unless not reproduced
    members = members_per_population(cache)
    assert members["resnet18/uniform_kd-a0.9"] == 3
    assert members["resnet18/independent"] == members["resnet18/kd-a0.1"] == 6
    result = json.loads((cache / "evaluations" / "latest.json").read_text())["results"][0]
    pairs = {p["second"]: p for p in result["details"]["sequential"]["pairs"]}
    assert (pairs["resnet18/uniform_kd-a0.9"]["status"], pairs["resnet18/uniform_kd-a0.9"]["decided_look"]) == ("ahead", 1)
    assert pairs["resnet18/kd-a0.1"]["decided_look"] != 1
    final_look = result["details"]["sequential"]["looks"][-1]
    assert final_look["look"] == 2 and final_look["n"]["resnet18/uniform_kd-a0.9"] == 3  # read at its 3 members
    assert final_look["n"]["resnet18/independent"] == final_look["n"]["resnet18/kd-a0.1"] == 6
