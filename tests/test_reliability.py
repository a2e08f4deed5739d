"""Fault injection with real processes: nothing lost, nothing silently wrong.

- a member interrupted mid-training resumes from its checkpoint and ends bit-identical (CPU) to one
  trained straight through, in-process and after a real SIGKILL;
- SIGKILL during a cache write leaves only whole entries (and .tmp leftovers that gc removes), and a
  reader polling the cache meanwhile never sees a half-written entry;
- two concurrent trainers on one population train each member exactly once;
- a lock left behind by a SIGKILLed holder does not block the next run;
- checkpoints load with weights_only=True: a pickle in one never runs.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdclaims.cache import Cache, read_entry
from kdclaims.cli import main
from kdclaims.spec import PopulationSpec
from kdclaims.errors import CacheError
from kdclaims.population import Workbench
from kdclaims.checkpoint import load_checkpoint, save_checkpoint

import helpers
from helpers import TESTS_DIR

REPO = Path(__file__).resolve().parent.parent
tiny_profile = functools.partial(helpers.tiny_profile, epochs=4)


TINY = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from helpers import tiny_profile
PROFILE = tiny_profile(seeds=SEEDS, epochs=EPOCHS)
"""


def python(script: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kwargs)


def wait_for(condition, timeout: float, proc: subprocess.Popen | None = None, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------------------------------------
# checkpoint / resume
# ---------------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("arch", ["vgg16_bn", "vit"])  # SGD + momentum + batch norm; AdamW + dropout
def test_a_resumed_member_is_bit_identical_to_one_trained_straight_through(tmp_path, arch):
    profile, spec = tiny_profile(seeds=(1,), epochs=5), PopulationSpec(arch, "independent")
    straight = Workbench(profile, tmp_path / "a", device="cpu", progress=False, checkpoint_every=0)
    expected = straight.ensure_member(spec, 1)
    assert not list((tmp_path / "a").rglob("*.pt"))  # checkpoint_every=0: none written

    first = Workbench(profile, tmp_path / "b", device="cpu", progress=False, checkpoint_every=1)
    key = first.member_key(spec, 1)

    def crash_after_epoch_3(epoch, epochs):
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        first.ensure_member(spec, 1, on_epoch=crash_after_epoch_3)
    checkpoint = first.cache.checkpoint_path(key)
    assert load_checkpoint(checkpoint)["epoch"] == 3 and not first.cache.has(key)

    epochs_run = []
    restarted = Workbench(profile, tmp_path / "b", device="cpu", progress=False, checkpoint_every=1)
    record = restarted.ensure_member(spec, 1, on_epoch=lambda e, n: epochs_run.append(e))
    assert epochs_run == [4, 5] and record.meta["resumed_from_epoch"] == 3
    assert torch.equal(record.test_logits, expected.test_logits)  # bit-identical
    assert not checkpoint.exists()  # removed once the member is stored


def test_a_corrupt_checkpoint_is_set_aside_and_the_member_starts_over(tmp_path, caplog):
    profile, spec = tiny_profile(seeds=(1,), epochs=3), PopulationSpec("vgg16_bn", "independent")
    expected = Workbench(profile, tmp_path / "a", device="cpu", progress=False, checkpoint_every=0).ensure_member(spec, 1)
    bench = Workbench(profile, tmp_path / "b", device="cpu", progress=False, checkpoint_every=1)
    with pytest.raises(Interrupted):
        bench.ensure_member(spec, 1, on_epoch=lambda e, n: (_ for _ in ()).throw(Interrupted()))
    checkpoint = bench.cache.checkpoint_path(bench.member_key(spec, 1))
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    epochs_run = []
    record = bench.ensure_member(spec, 1, on_epoch=lambda e, n: epochs_run.append(e))
    assert epochs_run == [1, 2, 3] and record.meta["resumed_from_epoch"] is None
    assert torch.equal(record.test_logits, expected.test_logits)
    assert len(bench.cache.quarantined()) == 1 and "checkpoint" in caplog.text


class Pwn:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_checkpoint_carrying_a_pickle_never_runs_it(tmp_path):
    pwned = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": "kdclaims-checkpoint-v1", "payload": Pwn(pwned)}, path)
    with pytest.raises(CacheError, match=f"checkpoint {path} is unusable"):
        load_checkpoint(path)
    assert not pwned.exists()
    save_checkpoint(path, {"x": torch.ones(2), "epoch": 3, "nested": {"a": [1, 2.5, "s", None]}})
    assert load_checkpoint(path)["nested"]["a"] == [1, 2.5, "s", None]  # plain data survives weights_only


TRAIN_SCRIPT = TINY.replace("SEEDS", "(1, 2, 3)").replace("EPOCHS", "5") + """
import sys, time
from kdclaims.spec import PopulationSpec
from kdclaims.population import Workbench, _MemberProgress
pause = float(sys.argv[2])
def epoch(self, e, n):  # slow each epoch down, so the test can kill the process mid-member
    time.sleep(pause)
_MemberProgress.epoch = epoch
bench = Workbench(PROFILE, sys.argv[1], device="cpu", progress=False, checkpoint_every=1)
pop = bench.population(PopulationSpec("vgg16_bn", "independent"))
print("trained", pop.trained_now, "resumed", [m.get("resumed_from_epoch") for m in pop.members_meta], flush=True)
"""


def test_sigkill_mid_training_loses_only_the_member_in_flight(tmp_path):
    cache_dir = tmp_path / "cache"
    bench = Workbench(tiny_profile(seeds=(1, 2, 3), epochs=5), cache_dir, device="cpu", progress=False,
                      checkpoint_every=0)
    spec = PopulationSpec("vgg16_bn", "independent")
    keys = [bench.member_key(spec, s) for s in (1, 2, 3)]  # also writes the dataset, as a first run would
    cache = bench.cache

    proc = python(TRAIN_SCRIPT, str(cache_dir), "0.2")
    try:  # kill once seed 1 is stored and seed 2 has checkpointed at least one epoch
        wait_for(lambda: cache.has(keys[0]) and cache.checkpoint_path(keys[1]).exists(), 120, proc)
    finally:
        if proc.poll() is None:
            sigkill(proc)
    finished = cache.member_path(keys[0]).stat()
    assert not cache.has(keys[2])

    done = python(TRAIN_SCRIPT, str(cache_dir), "0")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    trained, resumed = re.search(r"trained (\d+) resumed \[(.*)\]", out).groups()
    assert trained == "2"  # seeds 2 and 3; seed 1 was reused
    resumed_from = resumed.split(", ")
    assert resumed_from[0] == "None" and int(resumed_from[1]) >= 1 and resumed_from[2] == "None"

    after = cache.member_path(keys[0]).stat()
    assert (after.st_ino, after.st_mtime_ns) == (finished.st_ino, finished.st_mtime_ns)  # untouched
    for key in keys:
        read_entry(cache.member_path(key))  # every member whole
    assert not cache.checkpoints() and not cache.tmp_leftovers()
    # the member resumed in a new process after SIGKILL equals one trained without interruption
    straight = Workbench(tiny_profile(seeds=(1, 2, 3), epochs=5), tmp_path / "straight", device="cpu",
                         progress=False, checkpoint_every=0).ensure_member(spec, 2)
    assert torch.equal(cache.load(keys[1]).test_logits, straight.test_logits)


# ---------------------------------------------------------------------------------------------
# SIGKILL during a cache write; readers never see half an entry
# ---------------------------------------------------------------------------------------------

WRITER = """
import itertools, sys, torch
from kdclaims.cache import Cache
from kdclaims.spec import CACHE_SCHEMA, hash_config
cache = Cache(sys.argv[1])
big = torch.randn(30_000, 100)  # 12 MB: a write takes long enough to be caught in the middle
for i in itertools.count():
    config = {"schema": CACHE_SCHEMA, "slot": i % 4}
    # the metadata every member must carry; 0.5 is a whole number (15,000) of its 30,000 test examples
    cache.store(hash_config(config), {"test_logits": big + i}, {"config": config, "write": i, "population": "w",
                "seed": 0, "profile": "writer", "test_accuracy": 0.5, "test_loss": 1.0, "finite": True})
"""


def test_sigkill_during_a_cache_write_leaves_only_whole_entries(tmp_path):
    cache = Cache(tmp_path / "cache")
    caught_mid_write = False
    seen_whole = 0
    for attempt in range(10):
        proc = python(WRITER, str(cache.root))
        try:
            def entries_and_a_write_in_progress():
                nonlocal seen_whole
                for path in cache.entries():  # a reader polling meanwhile: every entry it sees is whole
                    try:
                        read_entry(path)
                        seen_whole += 1
                    except FileNotFoundError:
                        pass
                return len(cache.entries()) >= 2 and bool(cache.tmp_leftovers())

            wait_for(entries_and_a_write_in_progress, 120, proc, interval=0.005)
        finally:
            if proc.poll() is None:
                sigkill(proc)
        assert seen_whole > 0
        for path in cache.entries():
            read_entry(path)  # whole, checksums and all
        leftovers = cache.tmp_leftovers()
        others = [p for p in cache.members_dir.rglob("*") if p.is_file()
                  and p.suffix not in (".safetensors", ".lock") and p not in leftovers]
        assert others == []
        if leftovers:
            caught_mid_write = True
            break
    assert caught_mid_write, "never caught the writer mid-write"
    done = CliRunner().invoke(main, ["cache", "gc", "--cache-dir", str(cache.root)])
    assert done.exit_code == 0 and not cache.tmp_leftovers()
    assert CliRunner().invoke(main, ["cache", "verify", "--cache-dir", str(cache.root)]).exit_code == 0


# ---------------------------------------------------------------------------------------------
# two trainers on one population
# ---------------------------------------------------------------------------------------------


def test_two_concurrent_trainers_train_each_member_once(tmp_path):
    cache_dir = tmp_path / "cache"
    command = [sys.executable, "-m", "kdclaims.cli", "train", "--profile", "smoke", "--arch", "vgg16_bn",
               "--setup", "independent", "--seeds", "3", "--cache-dir", str(cache_dir), "--device", "cpu"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    trained = [int(re.search(r"3 members \((\d+) trained now\)", out).group(1)) for out, _ in outputs]
    cache = Cache(cache_dir)
    entries = cache.entries()
    assert len(entries) == 3 and sum(trained) == 3  # each member trained exactly once, by one of the two
    trainers = {read_entry(p).meta["pid"] for p in entries}
    assert trainers <= {p.pid for p in procs}
    assert sum(1 for p in entries if read_entry(p).meta["pid"] == procs[0].pid) == trained[0]
    assert not cache.tmp_leftovers() and not cache.checkpoints()


# ---------------------------------------------------------------------------------------------
# a lock left behind by a killed process
# ---------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from kdclaims.cache import Cache
lock = Cache(sys.argv[1]).member_lock(sys.argv[2])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    profile, spec = tiny_profile(seeds=(1,)), PopulationSpec("vgg16_bn", "independent")
    bench = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    key = bench.member_key(spec, 1)
    holder = python(HOLDER, str(bench.cache.root), key)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert not bench.cache.lock_is_free(key)
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(record=bench.ensure_member(spec, 1)), daemon=True)
        worker.start()
        worker.join(1.5)
        assert worker.is_alive()  # a live holder is waited for: it may be training this very member
    finally:
        sigkill(holder)
    lock_file = bench.cache.member_path(key).with_suffix(".lock")
    assert lock_file.exists()  # the file stays behind; the kernel dropped the flock with the process
    started = time.monotonic()
    worker.join(60)
    assert not worker.is_alive(), "a lock left by a killed process blocked the next run"
    assert result["record"].fresh and time.monotonic() - started < 60


# ---------------------------------------------------------------------------------------------
# a diverged member
# ---------------------------------------------------------------------------------------------


def test_a_diverged_member_is_reported_not_averaged_in(tmp_path):
    from kdclaims import metrics
    from kdclaims.evaluate import TrainedEvidence

    profile, spec = tiny_profile(seeds=(1, 2, 3), epochs=2), PopulationSpec("vgg16_bn", "independent")
    bench = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    bench.population(spec)
    key = bench.member_key(spec, 2)
    record = bench.cache.load(key)  # replace seed 2 by what a diverged run stores: NaN logits
    nan = torch.full_like(record.test_logits, float("nan"))
    # with what training derives from such logits: every load recomputes these and refuses a mismatch
    accuracy = metrics.test_accuracy(nan, bench.dataset.test_labels).item()
    bench.cache.store(key, {"test_logits": nan}, dict(record.meta, finite=False, test_accuracy=accuracy,
                                                      test_loss=float("nan")))
    arm = TrainedEvidence(Workbench(profile, tmp_path / "cache", device="cpu", progress=False)).arm(
        spec, "js_divergence")
    assert arm.diverged_seeds == [2] and arm.summary.n == 2
