"""The Ray backend on a real local Ray cluster (``ray.init(num_cpus=2)``), not a mock.

- a population trained through Ray is bit-identical to the same population trained in-process;
- a Ray worker SIGKILLed mid-population: the member is retried (visible in the report), the population
  completes, every member exists once and verifies, none was trained twice;
- cached members are never resubmitted (a second run submits no task);
- Ctrl-C on the driver loses no finished member, and the next run resumes where it stopped;
- a worker without the shared cache returns the member's bytes, which the driver stores: identical.

Skipped (the whole module) only where Ray is not installed: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' to run the Ray backend tests")

from kdclaims.backends import RayBackend  # noqa: E402
from kdclaims.cache import read_entry  # noqa: E402
from kdclaims.spec import PopulationSpec  # noqa: E402
from kdclaims.population import Workbench, _MemberProgress  # noqa: E402

import helpers  # noqa: E402

tiny_profile = functools.partial(helpers.tiny_profile, epochs=3)

pytestmark = pytest.mark.xdist_group("ray")  # one xdist worker runs them all, on one Ray cluster

VIT_KD = PopulationSpec("vit", "kd", 0.9)
VGG = PopulationSpec("vgg16_bn", "independent")


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    """One local Ray cluster of 2 CPUs for the module; workers without the shared cache use a temp dir."""
    worker_cache = tmp_path_factory.mktemp("ray-worker-cache")
    saved = os.environ.get("KDCLAIMS_RAY_WORKER_CACHE")
    os.environ["KDCLAIMS_RAY_WORKER_CACHE"] = str(worker_cache)  # inherited by the workers ray.init starts
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task hooks below, by value
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield worker_cache
    if started:
        ray.shutdown()
    if saved is None:
        os.environ.pop("KDCLAIMS_RAY_WORKER_CACHE", None)
    else:
        os.environ["KDCLAIMS_RAY_WORKER_CACHE"] = saved


def bench(cache: Path, profile, backend=None) -> Workbench:
    return Workbench(profile, cache, device="cpu", progress=False, backend=backend)


def write_pid(folder: str, spec: PopulationSpec, seed: int) -> None:
    """Task hook, in the worker, before the member trains: ``<folder>/<seed>-<pid>-<ns>``, one file per start."""
    Path(folder, f"{seed}-{os.getpid()}-{time.time_ns()}").touch()


def starts(folder: Path) -> list[tuple[int, int]]:
    """(seed, pid) of every member started, in the order they started."""
    found = sorted((int(ns), int(seed), int(pid)) for seed, pid, ns in (p.name.split("-") for p in folder.iterdir()))
    return [(seed, pid) for _, seed, pid in found]


def running_now(folder: Path) -> dict[int, int]:
    """pid -> the seed it started last (what a live worker is busy with, unless that member is done)."""
    return {pid: seed for seed, pid in starts(folder)}


def test_a_population_trained_through_ray_is_identical_to_one_trained_locally(tmp_path):
    profile = tiny_profile(seeds=(1, 2))
    through_ray = bench(tmp_path / "ray", profile, RayBackend()).population(VIT_KD)  # the teacher through Ray too
    local = bench(tmp_path / "local", profile).population(VIT_KD)
    assert through_ray.keys == local.keys and through_ray.seeds == local.seeds == (1, 2)
    assert torch.equal(through_ray.test_logits, local.test_logits)  # bit-identical
    assert torch.equal(through_ray.test_accuracy, local.test_accuracy)
    report = through_ray.report
    assert report.backend == "ray" and report.submitted == 3 and not report.failed and not report.retried
    assert through_ray.trained_now == 2 and len(report.trained) == 3  # two students and their teacher
    assert all(t["shared"] for t in report.timings.values())  # the workers wrote into the shared cache
    assert {m["pid"] for m in through_ray.members_meta}.isdisjoint({os.getpid()})  # trained in Ray workers
    assert all(m["torch_threads"] == 1 for m in through_ray.members_meta)


def test_a_killed_worker_is_retried_and_the_population_completes_with_nothing_lost_or_duplicated(tmp_path):
    seeds = (1, 2, 3, 4)
    profile = tiny_profile(seeds=seeds, epochs=12)  # about 1-2 s a member: long enough to kill one mid-training
    started_dir = tmp_path / "started"
    started_dir.mkdir()
    backend = RayBackend(max_retries=2, task_hook=functools.partial(write_pid, str(started_dir)))
    workbench = bench(tmp_path / "cache", profile, backend)
    keys = {seed: workbench.member_key(VGG, seed) for seed in seeds}
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(population=workbench.population(VGG)), daemon=True)
    driver.start()

    pid = None
    deadline = time.monotonic() + 120
    while pid is None:  # kill a worker mid-member once another member is finished: mid-population
        assert time.monotonic() < deadline and driver.is_alive(), "no member to kill was seen"
        done = [s for s in seeds if workbench.cache.has(keys[s])]
        busy = [p for p, s in running_now(started_dir).items() if not workbench.cache.has(keys[s])]
        if done and busy:
            time.sleep(0.2)  # into its training (a member takes about a second here)
            pid = next((p for p, s in running_now(started_dir).items() if not workbench.cache.has(keys[s])
                        and p in busy), None)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    driver.join(180)
    assert not driver.is_alive()
    population = result["population"]
    report = population.report
    seed = running_now(started_dir)[pid]  # what the killed worker was training (it started nothing after)

    assert population.seeds == seeds and population.failed_seeds == () and not report.failed
    assert list(report.retried) == [(VGG, seed)], report.summary()  # the retry is in the report, with its cause
    assert "WorkerCrashedError" in report.retried[(VGG, seed)][0]
    assert report.retries == 1 and report.submitted == len(seeds) + 1
    # every member once: one entry per key, each loads and verifies; nothing half-written, no checkpoint left
    entries = workbench.cache.entries()
    assert sorted(p.name.split(".")[0] for p in entries) == sorted(keys.values())
    for path in entries:
        read_entry(path)
    assert not workbench.cache.tmp_leftovers() and not workbench.cache.checkpoints()
    # trained once each: the killed attempt stored nothing, its retry trained the member
    assert report.trained == {(VGG, s) for s in seeds} and population.trained_now == len(seeds)
    assert population.members_meta[seeds.index(seed)]["pid"] != pid  # stored by the retry, in another worker
    attempts = [s for s, _ in starts(started_dir)]
    assert sorted(set(attempts)) == list(seeds) and attempts.count(seed) == 2
    assert len(attempts) == len(seeds) + 1
    # and it is the same population as one trained without a fault
    assert torch.equal(population.test_logits, bench(tmp_path / "straight", profile).population(VGG).test_logits)


def test_cached_members_are_never_resubmitted(tmp_path):
    profile = tiny_profile(seeds=(1, 2, 3))
    bench(tmp_path, profile).ensure_member(VGG, 2)  # one member already there, trained locally
    first = bench(tmp_path, profile, RayBackend()).population(VGG)
    assert first.report.submitted == 2 and sorted(s for _, s in first.report.done) == [1, 3] and first.trained_now == 2
    again = bench(tmp_path, profile, RayBackend()).population(VGG)
    assert again.report.submitted == 0 and again.trained_now == 0  # no task at all
    assert torch.equal(again.test_logits, first.test_logits)


def test_ctrl_c_on_the_driver_loses_no_finished_member_and_the_next_run_resumes(tmp_path, monkeypatch):
    seeds = (1, 2, 3, 4, 5)
    profile = tiny_profile(seeds=seeds, epochs=6)
    original = _MemberProgress.member

    def interrupt_after_the_first(self, seed):
        original(self, seed)
        raise KeyboardInterrupt  # as Ctrl-C in the driver would, while the others are in flight or queued

    monkeypatch.setattr(_MemberProgress, "member", interrupt_after_the_first)
    workbench = bench(tmp_path, profile, RayBackend())
    with pytest.raises(KeyboardInterrupt):
        workbench.population(VGG)
    monkeypatch.setattr(_MemberProgress, "member", original)
    keys = [workbench.member_key(VGG, s) for s in seeds]
    finished = {k: workbench.cache.member_path(k).stat() for k in keys if workbench.cache.has(k)}
    assert 1 <= len(finished) < len(seeds)
    time.sleep(1.0)  # let the cancelled tasks end (a cancelled member may still have finished meanwhile)
    finished = {k: workbench.cache.member_path(k).stat() for k in keys if workbench.cache.has(k)}

    resumed = bench(tmp_path, profile, RayBackend()).population(VGG)
    assert resumed.seeds == seeds and resumed.report.submitted == len(seeds) - len(finished)
    for key, before in finished.items():  # the finished members were kept, untouched
        after = workbench.cache.member_path(key).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(workbench.cache.entries()) == len(seeds)


def test_a_worker_without_the_shared_cache_returns_the_member_and_the_driver_stores_it(tmp_path, cluster):
    profile = tiny_profile(seeds=(1, 2))
    returned = bench(tmp_path / "returned", profile, RayBackend(return_artefacts=True)).population(VIT_KD)
    shared = bench(tmp_path / "shared", profile, RayBackend()).population(VIT_KD)
    assert not any(t["shared"] for t in returned.report.timings.values())
    assert all(t["shared"] for t in shared.report.timings.values())
    assert returned.keys == shared.keys and torch.equal(returned.test_logits, shared.test_logits)
    driver_cache = bench(tmp_path / "returned", profile).cache
    assert len(driver_cache.entries()) == 3  # the teacher and both students, stored by the driver
    for path in driver_cache.entries():
        read_entry(path)
    # in the worker's own cache only the teacher stays (for that node's students); students were handed back
    worker_entries = [read_entry(p).meta for p in cluster.rglob("*.safetensors")]
    assert [m["seed"] for m in worker_entries if m["config"]["arch"] == "vit"] == [0]


def test_kdclaims_train_backend_ray_on_a_running_cluster(tmp_path):
    import subprocess

    address = ray.get_runtime_context().gcs_address  # the module's cluster, as `ray start --head` would give
    command = [sys.executable, "-m", "kdclaims.cli", "train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup",
               "independent", "--seeds", "2", "--cache-dir", str(tmp_path), "--backend", "ray", "--address", address,
               "--max-retries", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vgg16_bn/independent: 2 members (2 trained now)" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 members (0 trained now)" in again.stdout
