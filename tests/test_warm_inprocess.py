"""Under ``-n``, a run whose every member is cached runs in the controller's process (issue #15): xdist's
workers would only add their start-up. The evaluation must be the one xdist's workers compute; a member
missing anywhere keeps xdist."""

from __future__ import annotations

import json

from helpers import retained_ad_claims, tiny_profile_conftest

from kdclaims.cache import Cache, read_meta
from kdclaims.plugin import IN_PROCESS_LINE

CONFTEST = tiny_profile_conftest("tiny-test", seeds=(1, 2), epochs=1)

CLAIMS = retained_ad_claims(
    '{id: c1, sentence: "a", treatment: {setup: kd, alpha: 0.1}}',
    '{id: c2, sentence: "b", treatment: {setup: kd, alpha: 0.5}}',
    arch="resnet18",
)


def _run(pytester, cache, *extra):
    return pytester.runpytest_subprocess("claims", "-n", "2", "-v", "--profile", "tiny-test", "--cache-dir",
                                         str(cache), "-p", "no:cacheprovider", *extra, timeout=600)


def _comparable(evaluation: dict) -> dict:
    """What a run computed: the results and the populations' members and metrics (not this run's timing)."""
    populations = [{k: v for k, v in p.items() if k != "trained_now"} for p in evaluation["populations"]]
    return {"results": evaluation["results"], "populations": populations, "dataset": evaluation["dataset"],
            "selection": evaluation["selection"]}


def test_a_warm_run_under_n_runs_in_process_and_a_missing_member_keeps_xdist(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "r18.yaml").write_text(CLAIMS)
    cache = tmp_path / "cache"
    latest = cache / "evaluations" / "latest.json"

    cold = _run(pytester, cache)  # trains: xdist's workers do
    output = cold.stdout.str()
    assert cold.ret == 0, output + cold.stderr.str()
    assert IN_PROCESS_LINE not in output and "[gw" in output
    by_workers = json.loads(latest.read_text())
    assert len(Cache(cache).entries()) == 7  # the teacher and three populations of two

    warm = _run(pytester, cache)
    output = warm.stdout.str()
    assert warm.ret == 0, output + warm.stderr.str()
    assert IN_PROCESS_LINE in output
    # no worker was started: no "created: 2/2 workers", no "[gw0] PASSED" (a path may hold "popen-gw0")
    assert "[gw" not in output and "created:" not in output and "workers [" not in output
    warm.assert_outcomes(passed=2)
    in_process = json.loads(latest.read_text())
    assert all(p["trained_now"] == 0 for p in in_process["populations"])
    assert _comparable(in_process) == _comparable(by_workers)  # the same verdicts and numbers, to the bit

    # a Python test beside the claims keeps its workers, whatever the cache holds
    pytester.makepyfile(test_other="def test_nothing():\n    pass\n")
    mixed = _run(pytester, cache, "test_other.py")
    output = mixed.stdout.str()
    assert mixed.ret == 0, output + mixed.stderr.str()
    assert IN_PROCESS_LINE not in output and "[gw" in output
    mixed.assert_outcomes(passed=3)

    # one student of one population (c1's alone) gone: that run may train, so it runs as asked, under xdist
    student = next(entry for entry in Cache(cache).entries() if read_meta(entry)["population"] == "resnet18/kd-a0.1")
    student.unlink()
    partial = _run(pytester, cache)
    output = partial.stdout.str()
    assert partial.ret == 0, output + partial.stderr.str()
    assert IN_PROCESS_LINE not in output and "[gw" in output
    retrained = {p["name"]: p for p in json.loads(latest.read_text())["populations"]}
    assert retrained["resnet18/kd-a0.1"]["trained_now"] == 1 and len(Cache(cache).entries()) == 7


def test_a_member_missing_in_a_deselected_claim_keeps_xdist(pytester, tmp_path):
    """The check covers every claim of the named files, not the -k selection it cannot know yet: a missing
    member of a claim -k leaves out still keeps xdist (nothing is trained for the claim that runs)."""
    pytester.makeconftest(CONFTEST)
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "r18.yaml").write_text(CLAIMS)
    cache = tmp_path / "cache"
    first = _run(pytester, cache, "-k", "c1")
    assert first.ret == 0, first.stdout.str() + first.stderr.str()
    second = _run(pytester, cache, "-k", "c1")  # c2's kd-a0.5 population was never trained
    output = second.stdout.str()
    assert second.ret == 0, output + second.stderr.str()
    assert IN_PROCESS_LINE not in output and "[gw" in output
    second.assert_outcomes(passed=1)  # (xdist's workers deselect c2: the controller counts no deselected)


def test_a_claim_file_is_parsed_again_exactly_when_its_bytes_change(tmp_path, monkeypatch):
    """``load_claim_file`` keeps each file's claims by path and bytes: an unchanged file is not parsed again, a
    rewrite of the same size within one clock tick (same modification time) is."""
    from kdclaims import claims as claims_module

    path = tmp_path / "claims" / "r18.yaml"
    path.parent.mkdir()
    path.write_text(CLAIMS)
    parses = []
    parse = claims_module._parse_claim_file
    monkeypatch.setattr(claims_module, "_parse_claim_file", lambda *a: parses.append(a[0]) or parse(*a))
    first = claims_module.load_claim_file(path)
    assert [c.id for c in claims_module.load_claim_file(path)] == ["c1", "c2"] and len(parses) == 1
    first.clear()  # a caller's list is its own
    assert len(claims_module.load_claim_file(path)) == 2
    stat = path.stat()
    path.write_text(CLAIMS.replace("id: c2", "id: c3"))  # same size
    import os
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert [c.id for c in claims_module.load_claim_file(path)] == ["c1", "c3"] and len(parses) == 2
