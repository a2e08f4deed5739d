"""Under ``-n``, claims that share populations run on one worker, so no population is trained by two.

Runs pytest with two xdist workers on a small catalogue at tiny scale and reads, from the cache, which
process trained each member (the ``pid`` every member's metadata records).
"""

from __future__ import annotations

import re
from collections import defaultdict

from helpers import retained_ad_claims, tiny_profile_conftest

from kdclaims.cache import Cache, read_meta

CONFTEST = tiny_profile_conftest("tiny-test", seeds=(1, 2), epochs=1)

CLAIMS = retained_ad_claims(
    '{id: r1, arch: resnet18, sentence: "a", treatment: {setup: kd, alpha: 0.1}}',
    '{id: v1, arch: vgg16_bn, sentence: "b", treatment: {setup: kd, alpha: 0.1}}',
    '{id: r2, arch: resnet18, sentence: "c", treatment: {setup: kd, alpha: 0.5}}',
    '{id: v2, arch: vgg16_bn, sentence: "d", treatment: {setup: kd, alpha: 0.5}}',
)


def test_under_n_2_each_population_is_trained_by_one_process_and_each_group_runs_on_one_worker(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "two_archs.yaml").write_text(CLAIMS)
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess("claims", "-n", "2", "-v", "--profile", "tiny-test", "--cache-dir",
                                           str(cache), "-p", "no:cacheprovider", timeout=600)
    output = result.stdout.str()
    assert result.ret == 0, output + result.stderr.str()
    workers_by_arch = defaultdict(set)
    for worker, claim_id in re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S*two_archs\.yaml::(\w+)", output):
        workers_by_arch[claim_id[0]].add(worker)
    assert set(workers_by_arch) == {"r", "v"}
    assert all(len(workers) == 1 for workers in workers_by_arch.values()), workers_by_arch
    pids_by_population = defaultdict(set)
    for entry in Cache(cache).entries():
        meta = read_meta(entry)
        # the teacher (seed 0) is a member of its architecture's independent population
        pids_by_population[meta["population"]].add(meta["pid"])
    # an independent (with the teacher) and two KD populations per architecture
    assert len(pids_by_population) == 6, sorted(pids_by_population)
    assert all(len(pids) == 1 for pids in pids_by_population.values()), dict(pids_by_population)
    # and the two architectures were trained by the two different workers (the groups were spread)
    resnet = set().union(*(p for name, p in pids_by_population.items() if "resnet18" in name))
    vgg = set().union(*(p for name, p in pids_by_population.items() if "vgg16_bn" in name))
    assert len(resnet) == 1 and len(vgg) == 1 and resnet != vgg


def test_minus_n_adds_dist_loadgroup_unless_dist_is_given(pytester):
    pytester.makeconftest("def pytest_report_header(config):\n    return 'DIST=' + config.getoption('dist') + '.'\n")
    pytester.makepyfile(test_it="def test_nothing():\n    pass\n")
    assert "DIST=loadgroup." in pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider").stdout.str()
    assert "DIST=load." in pytester.runpytest_subprocess("-n", "1", "--dist", "load", "-p", "no:cacheprovider").stdout.str()
    assert "DIST=no." in pytester.runpytest_subprocess("-p", "no:cacheprovider").stdout.str()


def test_seeds_that_cannot_form_a_population_are_refused_before_training(pytester, tmp_path):
    """--seeds 1: one line, a usage error, in seconds, and nothing in the cache (no teacher trained first)."""
    import time

    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "two_archs.yaml").write_text(CLAIMS)
    cache = tmp_path / "cache"
    started = time.monotonic()
    result = pytester.runpytest_subprocess("claims", "--profile", "smoke", "--seeds", "1", "--cache-dir", str(cache),
                                           "-p", "no:cacheprovider")
    elapsed = time.monotonic() - started
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 4, output  # pytest's usage error
    assert "--seeds gives 1 seed(s): a claim's test needs populations of at least 2 members" in output
    assert "Traceback" not in output
    assert not Cache(cache).entries()
    assert elapsed < 60  # start-up only (the machine is shared); training would take minutes
    # the paper's own tables need no trained population: --seeds does not matter there
    assert pytester.runpytest_subprocess("claims", "--evidence", "paper", "--seeds", "1", "--cache-dir", str(cache),
                                         "-p", "no:cacheprovider").ret != 4
