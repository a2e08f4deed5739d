"""Backends without Ray: the registry, the local backend (today's behaviour, the default), what
``Workbench.population`` hands a backend (only the missing members, teachers first), how it treats
members a backend reports as failed, and the one-line message when ``--backend ray`` has no Ray."""

from __future__ import annotations

import sys

import pytest
import torch
from click.testing import CliRunner

from kdclaims.backends import (BACKENDS, RAY_INSTALL_MESSAGE, Backend, BackendReport, LocalBackend, get_backend,
                               register_backend)
from kdclaims.cli import main
from kdclaims.setups import TEACHER_SEED
from kdclaims.spec import PopulationSpec, teacher_spec
from kdclaims.errors import ConfigError, KdclaimsError
from kdclaims.population import PopulationIncomplete, Workbench, _MemberProgress

from helpers import TESTS_DIR, tiny_profile

INDEPENDENT = PopulationSpec("vgg16_bn", "independent")
KD = PopulationSpec("vgg16_bn", "kd", 0.5)


class Recording:
    """A third backend: the local one, recording every batch of members it is handed; ``fail`` seeds fail."""

    name = "recording"

    def __init__(self, fail=()):
        self.calls: list[list[tuple[PopulationSpec, int]]] = []
        self.fail = set(fail)

    def train_members(self, workbench, requests, progress):
        self.calls.append(list(requests))
        report = LocalBackend().train_members(workbench, [r for r in requests if r[1] not in self.fail], progress)
        report.backend = self.name
        for request in requests:
            if request[1] in self.fail:
                report.submitted += 3
                report.retried[request] = ["RuntimeError: boom", "RuntimeError: boom"]
                report.failed[request] = "RuntimeError: boom"
        return report


@pytest.fixture
def recording():
    register_backend("recording", Recording)
    yield
    del BACKENDS["recording"]


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------


def test_the_registry_has_local_and_ray_and_local_is_the_default(tmp_path):
    assert {"local", "ray"} <= set(BACKENDS)
    assert isinstance(get_backend("local"), LocalBackend) and isinstance(get_backend("local"), Backend)
    assert Workbench(tiny_profile(), tmp_path, device="cpu", progress=False).backend.name == "local"
    # options left unset (None) are not passed on: the CLI and the plugin pass every option they have
    assert isinstance(get_backend("local", address=None, gpus_per_member=None, max_retries=None), LocalBackend)


def test_unknown_backends_and_options_that_do_not_apply_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown backend 'slurm'; choose one of local, ray"):
        get_backend("slurm")
    with pytest.raises(ConfigError, match="--address, --gpus-per-member does not apply to --backend local"):
        get_backend("local", address="auto", gpus_per_member=0.5)
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("local", LocalBackend)


def test_a_third_backend_is_one_registration(tmp_path, recording):
    backend = get_backend("recording", fail=())
    bench = Workbench(tiny_profile(seeds=(1, 2)), tmp_path, device="cpu", progress=False, backend=backend)
    population = bench.population(INDEPENDENT)
    assert backend.calls == [[(INDEPENDENT, 1), (INDEPENDENT, 2)]]
    assert population.n == 2 and population.trained_now == 2 and population.failed_seeds == ()
    # by name too, as --backend recording would
    assert Workbench(tiny_profile(), tmp_path, device="cpu", progress=False, backend="recording").backend.name \
        == "recording"


# ---------------------------------------------------------------------------------------------
# the local backend and what population() hands a backend
# ---------------------------------------------------------------------------------------------


def test_the_local_backend_trains_in_order_and_equals_ensure_member(tmp_path):
    profile = tiny_profile(seeds=(1, 2, 3))
    bench = Workbench(profile, tmp_path / "a", device="cpu", progress=False)
    requests = [(INDEPENDENT, s) for s in (3, 1, 2)]
    progress = _MemberProgress("x", 3, enabled=False)
    report = LocalBackend().train_members(bench, requests, progress)
    assert report.done == requests and report.trained == set(requests) and report.submitted == 3
    assert not report.failed and not report.retried and report.retries == 0
    assert progress.counts() == {"done": 3, "running": 0, "failed": 0, "queued": 0}
    assert [report.records[r].meta["seed"] for r in requests] == [3, 1, 2]
    direct = Workbench(profile, tmp_path / "b", device="cpu", progress=False).ensure_member(INDEPENDENT, 2)
    assert torch.equal(report.records[(INDEPENDENT, 2)].test_logits, direct.test_logits)


def test_cached_members_are_never_handed_to_the_backend_and_the_teacher_comes_first(tmp_path, recording):
    profile = tiny_profile(seeds=(1, 2, 3))
    seeded = Workbench(profile, tmp_path, device="cpu", progress=False)
    seeded.ensure_member(KD, 2)  # trains the teacher too
    backend = get_backend("recording")
    bench = Workbench(profile, tmp_path, device="cpu", progress=False, backend=backend)
    population = bench.population(KD)
    assert backend.calls == [[(KD, 1), (KD, 3)]]  # teacher cached, seed 2 cached
    assert population.trained_now == 2 and population.seeds == (1, 2, 3)

    fresh_backend = get_backend("recording")
    fresh = Workbench(profile, tmp_path / "fresh", device="cpu", progress=False, backend=fresh_backend)
    fresh.population(KD)
    assert fresh_backend.calls == [[(teacher_spec("vgg16_bn"), TEACHER_SEED)], [(KD, 1), (KD, 2), (KD, 3)]]
    assert torch.equal(fresh.population(KD).test_logits, population.test_logits)

    again_backend = get_backend("recording")
    again = Workbench(profile, tmp_path, device="cpu", progress=False, backend=again_backend).population(KD)
    assert again_backend.calls == [] and again.trained_now == 0  # nothing handed out at all


def test_a_failed_member_is_left_out_named_and_warned_about(tmp_path, recording):
    bench = Workbench(tiny_profile(seeds=(1, 2, 3)), tmp_path, device="cpu", progress=False,
                      backend=get_backend("recording", fail=(2,)))
    with pytest.warns(PopulationIncomplete, match=r"vgg16_bn/independent is built from 2 of 3 members: seeds 2 "
                                                  r"failed .* RuntimeError: boom"):
        population = bench.population(INDEPENDENT)
    assert population.seeds == (1, 3) and population.n == 2 and population.failed_seeds == (2,)
    assert population.failures == {2: "RuntimeError: boom"} and population.test_logits.shape[0] == 2
    assert population.keys == (bench.member_key(INDEPENDENT, 1), bench.member_key(INDEPENDENT, 3))


def test_fewer_than_two_members_left_is_an_error_naming_the_failed_seeds(tmp_path, recording):
    bench = Workbench(tiny_profile(seeds=(1, 2, 3)), tmp_path, device="cpu", progress=False,
                      backend=get_backend("recording", fail=(1, 3)))
    with pytest.raises(KdclaimsError, match=r"2 member\(s\) failed on the recording backend after retries "
                                            r"\(seeds 1, 3; seed 1: RuntimeError: boom\), leaving 1"):
        bench.population(INDEPENDENT)
    assert bench.cache.has(bench.member_key(INDEPENDENT, 2))  # what finished is kept


def test_a_failed_teacher_stops_its_students(tmp_path, recording):
    bench = Workbench(tiny_profile(), tmp_path, device="cpu", progress=False,
                      backend=get_backend("recording", fail=(TEACHER_SEED,)))
    with pytest.raises(KdclaimsError, match="the teacher of vgg16_bn .* failed on the recording backend"):
        bench.population(KD)


def test_report_merge_and_progress_counts():
    a, b = BackendReport("x"), BackendReport("x")
    a.failed[(INDEPENDENT, 1)] = "boom"
    a.retried[(INDEPENDENT, 1)] = ["boom"]
    a.submitted = 2
    b.done.append((INDEPENDENT, 1))
    b.trained.add((INDEPENDENT, 1))
    b.submitted = 1
    a.merge(b)
    assert a.failed == {} and a.done == [(INDEPENDENT, 1)] and a.submitted == 3 and a.retries == 1
    assert "1 done (1 trained now), 0 failed, 1 retried, 3 submitted" in a.summary()

    progress = _MemberProgress("x", 4, enabled=False)
    progress.started(1)
    progress.started(2)
    assert progress.counts() == {"done": 0, "running": 2, "failed": 0, "queued": 2}
    progress.retrying(1, 1)  # back to the queue
    progress.member(2)
    assert progress.counts() == {"done": 1, "running": 0, "failed": 0, "queued": 3}
    progress.started(1)
    progress.failed(1, "boom")
    assert progress.counts() == {"done": 1, "running": 0, "failed": 1, "queued": 2} and progress.retries == 1


# ---------------------------------------------------------------------------------------------
# --backend ray without Ray installed
# ---------------------------------------------------------------------------------------------


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError) as caught:
        get_backend("ray")
    assert str(caught.value) == RAY_INSTALL_MESSAGE == "--backend ray needs Ray: pip install -e '.[ray]'"


def test_without_ray_kdclaims_train_backend_ray_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(main, ["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "independent",
                                       "--cache-dir", str(tmp_path), "--backend", "ray"])
    assert result.exit_code == 2
    assert result.output.strip() == f"kdclaims: error: {RAY_INSTALL_MESSAGE}"
    assert not (tmp_path / "members").exists()  # refused before anything was trained


def test_without_ray_pytest_backend_ray_is_a_usage_error(pytester):
    pytester.makeconftest("import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n")
    pytester.makepyfile(test_it="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--profile", "smoke", "--backend", "ray", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "Traceback" not in output
    assert RAY_INSTALL_MESSAGE in output


def test_backend_options_reach_the_workbench_through_pytest_and_are_checked(pytester):
    pytester.makepyfile(test_it="""
        from kdclaims.plugin import STATE

        def test_backend(pytestconfig):
            assert pytestconfig.stash[STATE].workbench.backend.name == "local"
            assert pytestconfig.stash[STATE].workbench.concurrent_members == int(pytestconfig.getoption("--concurrent-members"))
        """)
    assert pytester.runpytest_subprocess("--profile", "smoke", "-p", "no:cacheprovider").ret == 0
    assert pytester.runpytest_subprocess("--profile", "smoke", "--concurrent-members", "3", "-p", "no:cacheprovider").ret == 0
    result = pytester.runpytest_subprocess("--profile", "smoke", "--concurrent-members", "0", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "--concurrent-members 0: concurrent members must be a whole number of at least 1" in output
    assert "Traceback" not in output
    result = pytester.runpytest_subprocess("--profile", "smoke", "--address", "auto", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "--address does not apply to --backend local" in output


def test_concurrent_members_on_the_local_backend_equal_members_trained_one_by_one(tmp_path):
    """--concurrent-members 2 over three seeds (a group of two, then one): the same logits as one by one,
    each member recording that it shared the device, and the population's device time not counted twice."""
    profile = tiny_profile(seeds=(1, 2, 3))
    one_by_one = Workbench(profile, tmp_path / "one", device="cpu", progress=False).population(KD)
    bench = Workbench(profile, tmp_path / "two", device="cpu", progress=False, concurrent_members=2)
    together = bench.population(KD)
    assert torch.equal(one_by_one.test_logits, together.test_logits)
    assert [m["concurrent"] for m in together.members_meta] == [2, 2, 1]
    assert [m["concurrent"] for m in one_by_one.members_meta] == [1, 1, 1]
    first, second = together.members_meta[:2]
    assert first["wall_time_s"] == second["wall_time_s"]  # the group's time ...
    assert first["device_time_s"] == pytest.approx(first["wall_time_s"] / 2)  # ... shared between its members
    assert together.wall_time_s == pytest.approx(sum(m["device_time_s"] for m in together.members_meta))
    assert bench.spec().concurrent_members == 2 and bench.spec().build().concurrent_members == 2
    twice = Workbench(profile, tmp_path / "twice", device="cpu", progress=False, concurrent_members=2)
    records = twice.ensure_members(KD, [1, 1])  # the same member twice: trained once, no lock taken twice
    assert records[0] is records[1] and torch.equal(records[0].test_logits, one_by_one.test_logits[0])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="concurrent members"):
            Workbench(profile, tmp_path / "bad", device="cpu", progress=False, concurrent_members=bad)
    register_backend("one-per-task", Recording)  # a backend that does not say it trains members concurrently
    try:
        with pytest.raises(ConfigError, match="applies to --backend local; the recording backend trains one member"):
            Workbench(profile, tmp_path / "r", device="cpu", progress=False, backend="one-per-task", concurrent_members=2)
        assert Workbench(profile, tmp_path / "r", device="cpu", progress=False, backend="one-per-task",
                         concurrent_members=1).concurrent_members == 1
    finally:
        del BACKENDS["one-per-task"]
    refused = CliRunner().invoke(main, ["train", "--profile", "smoke", "--arch", "vit", "--setup", "independent",
                                        "--concurrent-members", "0", "--cache-dir", str(tmp_path / "cli")])
    assert refused.exit_code == 2 and "--concurrent-members" in refused.output and "0" in refused.output


def test_overlapping_groups_in_two_processes_do_not_deadlock(tmp_path):
    """Two processes asking for overlapping members in opposite orders: locks are taken in key order,
    so both finish and every member is trained exactly once."""
    import subprocess
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from helpers import tiny_profile
        from kdclaims.spec import PopulationSpec
        from kdclaims.population import Workbench
        INDEPENDENT = PopulationSpec("vgg16_bn", "independent")
        seeds = [int(s) for s in sys.argv[1].split(",")]
        bench = Workbench(tiny_profile(seeds=(1, 2, 3)), {str(tmp_path / 'cache')!r}, device="cpu", progress=False,
                          concurrent_members=3)
        records = bench.ensure_members(INDEPENDENT, seeds)
        print(sum(r.fresh for r in records))
    """)
    Workbench(tiny_profile(), tmp_path / "cache", device="cpu", progress=False).check_data()  # data made once
    env = {**__import__("os").environ, "KDCLAIMS_CPU_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, order], stdout=subprocess.PIPE, text=True, env=env)
             for order in ("1,2,3", "3,2,1")]
    fresh = [int(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(fresh) == 3  # each member trained once, by one of the two


def test_pytest_refuses_concurrent_members_on_the_ray_backend_before_any_claim(pytester):
    pytest.importorskip("ray")
    pytester.makepyfile(test_it="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--profile", "smoke", "--backend", "ray", "--concurrent-members", "2",
                                           "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "Traceback" not in output
    assert "--concurrent-members 2 applies to --backend local" in output and "--gpus-per-member" in output
