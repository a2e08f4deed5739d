"""The member cache: checksums on every load, corrupt entries quarantined and retrained, a cache that
cannot be written detected before training, and the `kdclaims cache` commands (verify, info, gc,
export, import), including hostile archives that must be refused without writing anything."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import logging
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdclaims.cache import (Cache, MANIFEST_NAME, cache_info, file_sha256, gc_plan, read_entry, teacher_key_of,
                            verify_cache)
from kdclaims.cli import main
from kdclaims.profiles import get_profile
from kdclaims.spec import CACHE_SCHEMA, PopulationSpec, hash_config
from kdclaims.errors import CacheError

ACCURACY = 0.328125  # a distinctive value, to find in the file's bytes: 21 of put's 64 test examples


def member_config(setup="independent", seed=1, alpha=None, schema=CACHE_SCHEMA, arch="vgg16_bn") -> dict:
    return {"schema": schema, "arch": arch, "model": {"width": 8}, "recipe": {"epochs": 4}, "setup": setup,
            "alpha": alpha, "temperature": 1.0, "soft_targets": None, "data": {"fingerprint": "f"},
            "init_seed": 0, "seed": seed, "precision": "fp32"}


def put(cache: Cache, config: dict, population: str | None = None, n: int = 64) -> str:
    key = hash_config(config)
    logits = torch.randn(n, 10, generator=torch.Generator().manual_seed(config["seed"] + 100))
    population = population or (f"{config['arch']}/{config['setup']}" if config["alpha"] is None
                                else f"{config['arch']}/{config['setup']}-a{config['alpha']:g}")
    cache.store(key, {"test_logits": logits}, {"config": config, "population": population, "seed": config["seed"],
                                               "profile": "smoke", "test_accuracy": ACCURACY, "test_loss": 1.0,
                                               "finite": True})
    return key


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("kdclaims: error:") and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 or (len(lines) == 2 and "--debug" in lines[1]), result.stderr
    return lines[0]


@pytest.fixture
def cache(tmp_path) -> Cache:
    return Cache(tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------


def test_store_then_load_round_trips_with_checksums(cache):
    key = put(cache, member_config())
    record = cache.load(key)
    assert record.meta["key"] == key and record.meta["test_accuracy"] == ACCURACY
    assert set(record.meta["sha256"]) == {"test_logits"} and len(record.meta["meta_sha256"]) == 64
    assert cache.load("0" * 64) is None


def _rewrite(path: Path, change) -> None:
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))


def flip_tensor_byte(data: bytearray) -> None:
    data[-5] ^= 0x40  # the tensor data comes last


def edit_metadata(data: bytearray) -> None:  # same length, so the safetensors header stays well-formed
    at = data.index(str(ACCURACY).encode())
    data[at:at + len(str(ACCURACY))] = b"0.999999"


def truncate(data: bytearray) -> None:
    del data[len(data) // 2:]


@pytest.mark.parametrize("damage, message", [(flip_tensor_byte, "fails its checksum (test_logits)"),
                                             (edit_metadata, "fails its metadata checksum"),
                                             (truncate, "is unreadable")])
def test_a_damaged_entry_is_never_loaded(cache, damage, message):
    key = put(cache, member_config())
    path = cache.member_path(key)
    _rewrite(path, damage)
    with pytest.raises(CacheError) as info:
        cache.load(key)
    assert str(path) in str(info.value) and message in str(info.value) and "\n" not in str(info.value)


def test_an_entry_under_another_key_is_refused(cache):
    key = put(cache, member_config(seed=1))
    other = hash_config(member_config(seed=2))
    cache.member_path(other).parent.mkdir(parents=True, exist_ok=True)
    cache.member_path(other).write_bytes(cache.member_path(key).read_bytes())
    with pytest.raises(CacheError, match="holds key"):
        cache.load(other)


def test_a_consistent_forgery_with_another_config_is_refused(cache):
    """Metadata whose checksum was recomputed still must hash to the key it is filed under."""
    key = put(cache, member_config(seed=1))
    forged = member_config(seed=1)
    forged["alpha"] = 0.5
    record = cache.load(key)
    cache.store(key, record.tensors, dict(record.meta, config=forged))
    with pytest.raises(CacheError, match="config whose hash is not its key"):
        cache.load(key)


# ---------------------------------------------------------------------------------------------
# corrupt entries in a run: quarantined, reported, retrained
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [flip_tensor_byte, truncate], ids=["tampered", "truncated"])
def test_workbench_quarantines_a_corrupt_entry_and_retrains_it(tmp_path, damage, caplog):
    from kdclaims.population import Workbench

    profile = get_profile("smoke").with_seeds((1,))
    spec = PopulationSpec("vgg16_bn", "independent")
    bench = Workbench(profile, tmp_path / "c", device="cpu", progress=False)
    original = bench.ensure_member(spec, 1)
    path = bench.cache.member_path(original.key)
    _rewrite(path, damage)

    again = Workbench(profile, tmp_path / "c", device="cpu", progress=False)
    with caplog.at_level(logging.WARNING, logger="kdclaims"):
        record = again.ensure_member(spec, 1)
    assert record.fresh and torch.equal(record.test_logits, original.test_logits)  # retrained, same result
    (moved,) = again.quarantined
    assert moved.parent == bench.cache.quarantine_dir and moved.is_file()
    assert any(str(path) in r.getMessage() and str(moved) in r.getMessage() for r in caplog.records)
    read_entry(path)  # the new entry is whole
    assert again.population(spec).trained_now == 0


# ---------------------------------------------------------------------------------------------
# a cache that cannot take an entry
# ---------------------------------------------------------------------------------------------


def test_unwritable_cache_is_detected_by_a_probe_write(cache, monkeypatch):
    import kdclaims.cache as cachemod

    cache.members_dir.mkdir(parents=True)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cachemod.tempfile, "mkstemp", refuse)
    with pytest.raises(CacheError, match="is not writable: use --cache-dir"):
        cache.check_writable()


def test_cache_under_a_regular_file_is_named(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(CacheError, match=f"{blocker} is a file, not a directory"):
        Cache(blocker / "sub").check_writable()


def test_full_disk_leaves_no_partial_file(cache, monkeypatch):
    import kdclaims.atomic as atomic

    def full(path, write, *args, **kwargs):  # the real atomic writer, on a disk that fills up mid-write
        def partial(tmp):
            Path(tmp).write_bytes(b"first ten.")
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
        return write_atomically(path, partial, *args, **kwargs)

    write_atomically = atomic.write_atomically
    monkeypatch.setattr(atomic, "write_atomically", full)
    with pytest.raises(CacheError, match="no space left writing"):
        put(cache, member_config())
    assert not cache.entries() and not cache.tmp_leftovers()


# ---------------------------------------------------------------------------------------------
# kdclaims cache verify / info / gc
# ---------------------------------------------------------------------------------------------


def test_verify_reports_every_bad_entry_and_exits_1(cache):
    keys = [put(cache, member_config(seed=s)) for s in (1, 2, 3)]
    done = cli("cache", "verify", "--cache-dir", str(cache.root))
    assert done.exit_code == 0 and "3 entries good, 0 bad" in done.stdout
    _rewrite(cache.member_path(keys[0]), flip_tensor_byte)
    _rewrite(cache.member_path(keys[1]), truncate)
    misplaced = cache.members_dir / "zz" / cache.member_path(keys[2]).name
    misplaced.parent.mkdir()
    misplaced.write_bytes(cache.member_path(keys[2]).read_bytes())
    (cache.checkpoints_dir).mkdir()
    (cache.checkpoints_dir / f"{keys[2]}.pt").write_bytes(b"not a checkpoint")
    done = cli("cache", "verify", "--cache-dir", str(cache.root))
    assert done.exit_code == 1
    assert "1 entries good, 3 bad; 0 checkpoints good, 1 bad" in done.stdout
    for path in (cache.member_path(keys[0]), cache.member_path(keys[1]), misplaced, cache.checkpoints_dir):
        assert str(path) in done.stdout


def test_info_counts_entries_by_population(cache):
    put(cache, member_config(seed=1))
    put(cache, member_config(seed=2))
    put(cache, member_config(setup="kd", alpha=0.5, seed=1))
    put(cache, member_config(seed=3, schema="kdclaims-member-v0"))
    info = cache_info(cache)
    assert info["entries"] == 4 and info["by"]["population"] == {"vgg16_bn/independent": 3, "vgg16_bn/kd-a0.5": 1}
    done = cli("cache", "info", "--cache-dir", str(cache.root))
    assert done.exit_code == 0
    assert "entries: 4" in done.stdout and "by setup: independent 3, kd 1" in done.stdout
    assert "old schema" in done.stdout and "quarantine: 0" in done.stdout
    assert "dataset summaries (rewritten by a full load when deleted): 0" in done.stdout
    cache.datasets_dir.mkdir()
    (cache.datasets_dir / f"{'ab' * 32}.json").write_text("{}")
    assert cache_info(cache)["dataset_summaries"] == {"count": 1, "bytes": 2}


def test_gc_removes_leftovers_stale_checkpoints_quarantine_and_old_schema_but_not_what_is_in_use(cache):
    keep = put(cache, member_config(seed=1))
    old = put(cache, member_config(seed=2, schema="kdclaims-member-v0"))
    in_flight = hash_config(member_config(seed=3))
    cache.checkpoints_dir.mkdir()
    stale_ckpt = cache.checkpoints_dir / f"{keep}.pt"
    live_ckpt = cache.checkpoints_dir / f"{in_flight}.pt"  # its member is not stored yet: a resumable run
    stale_ckpt.write_bytes(b"x")
    live_ckpt.write_bytes(b"x")
    leftover = cache.member_path(keep).parent / f".{keep}-abc.tmp"
    leftover.write_bytes(b"half")
    busy = cache.member_path(in_flight).parent
    busy.mkdir(parents=True, exist_ok=True)
    busy_tmp = busy / f".{in_flight}-def.tmp"
    busy_tmp.write_bytes(b"being written")
    cache.quarantine_dir.mkdir()
    (cache.quarantine_dir / "junk.safetensors.20240101").write_bytes(b"x")

    dry = cli("cache", "gc", "--dry-run", "--cache-dir", str(cache.root))
    assert dry.exit_code == 0 and "would remove" in dry.stdout and leftover.exists()

    fd = os.open(cache.member_path(in_flight).with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live trainer holds that member's lock
        done = cli("cache", "gc", "--cache-dir", str(cache.root))
    finally:
        os.close(fd)
    assert done.exit_code == 0, done.stderr
    assert not leftover.exists() and not stale_ckpt.exists() and not cache.quarantined()
    assert not cache.member_path(old).exists() and cache.member_path(keep).exists()
    assert busy_tmp.exists() and live_ckpt.exists() and "keeping" in done.stdout
    assert gc_plan(cache)[0] == [] or all(i.path == busy_tmp for i in gc_plan(cache)[0])


# ---------------------------------------------------------------------------------------------
# export / import
# ---------------------------------------------------------------------------------------------


def populated(cache: Cache) -> dict[str, str]:
    teacher = member_config(seed=0)
    keys = {"teacher": put(cache, teacher)}
    for s in (1, 2):
        keys[f"ind{s}"] = put(cache, member_config(seed=s))
        kd = member_config(setup="kd", alpha=0.9, seed=s)
        kd["soft_targets"] = {"kind": "teacher", "teacher_key": keys["teacher"]}
        keys[f"kd{s}"] = put(cache, kd)
    assert teacher_key_of(kd) == keys["teacher"]
    return keys


def test_export_then_import_into_an_empty_cache_gives_identical_entries(cache, tmp_path):
    populated(cache)
    archive = tmp_path / "share" / "pop.tar.gz"
    done = cli("cache", "export", str(archive), "--cache-dir", str(cache.root))
    assert done.exit_code == 0 and "5 entries" in done.stdout
    other = Cache(tmp_path / "other")
    done = cli("cache", "import", str(archive), "--cache-dir", str(other.root))
    assert done.exit_code == 0 and "imported 5 entries" in done.stdout, done.stderr
    assert [p.relative_to(other.root) for p in other.entries()] == [p.relative_to(cache.root) for p in cache.entries()]
    assert [file_sha256(p) for p in other.entries()] == [file_sha256(p) for p in cache.entries()]
    assert not verify_cache(other).bad and not other.staging_dirs()
    again = cli("cache", "import", str(archive), "--cache-dir", str(other.root))
    assert again.exit_code == 0 and "5 already there" in again.stdout


def test_export_of_one_population_brings_its_teacher(cache, tmp_path):
    keys = populated(cache)
    archive = tmp_path / "kd.tar.gz"
    assert cli("cache", "export", str(archive), "--population", "vgg16_bn/kd-a0.9",
               "--cache-dir", str(cache.root)).exit_code == 0
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST_NAME).read())
    assert {e["key"] for e in manifest["entries"]} == {keys["kd1"], keys["kd2"], keys["teacher"]}
    line = one_error_line(cli("cache", "export", str(archive), "--population", "vit/kd-a0.9",
                              "--cache-dir", str(cache.root)))
    assert "no entries of population 'vit/kd-a0.9'" in line


def test_export_refuses_a_corrupt_entry_naming_it(cache, tmp_path):
    keys = populated(cache)
    _rewrite(cache.member_path(keys["kd1"]), flip_tensor_byte)
    line = one_error_line(cli("cache", "export", str(tmp_path / "x.tar.gz"), "--cache-dir", str(cache.root)))
    assert str(cache.member_path(keys["kd1"])) in line and not (tmp_path / "x.tar.gz").exists()


def _archive(path: Path, members) -> Path:
    """members: (TarInfo-or-name, bytes or None) pairs, written in order."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _exported(cache: Cache, tmp_path: Path) -> tuple[bytes, list[tuple[str, bytes]]]:
    populated(cache)
    archive = tmp_path / "good.tar.gz"
    assert cli("cache", "export", str(archive), "--cache-dir", str(cache.root)).exit_code == 0
    with tarfile.open(archive) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    return members[0][1], members[1:]


def _manifest_with(manifest: bytes, name: str, data: bytes, key: str | None = None) -> bytes:
    import hashlib

    doc = json.loads(manifest)
    key = key or name.rsplit("/", 1)[-1].split(".")[0]
    doc["entries"].append({"key": key, "path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    return json.dumps(doc).encode()


class Pwn:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def hostile_archives(tmp_path: Path, manifest: bytes, good: list[tuple[str, bytes]], pwned: Path):
    name, data = good[0]
    outside = tmp_path / "outside.txt"
    link = tarfile.TarInfo(name)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo(name)
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    dev = tarfile.TarInfo(name)
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    alt = f"members/cd/{'cd' * 32}.safetensors"  # a well-formed name the manifest does not list
    evil = pickle.dumps(Pwn(pwned))
    tampered = bytearray(data)
    tampered[-5] ^= 1
    return {
        "traversal": ([(MANIFEST_NAME, manifest), ("../../outside.txt", b"escaped")], "climbs out of the cache"),
        "nested-traversal": ([(MANIFEST_NAME, manifest), (f"members/../../../{outside.name}", b"x")],
                             "climbs out of the cache"),
        "absolute": ([(MANIFEST_NAME, manifest), (str(outside), b"escaped")], "absolute path"),
        "symlink": ([(MANIFEST_NAME, manifest), (link, None)], "is a symlink"),
        "hardlink": ([(MANIFEST_NAME, manifest), (hard, None)], "is a hard link"),
        "device": ([(MANIFEST_NAME, manifest), (dev, None)], "is a device"),
        "stray-file": ([(MANIFEST_NAME, manifest), ("members/ab/evil.pkl", evil)], "not a cache entry"),
        "unlisted": ([(MANIFEST_NAME, manifest), (alt, data)], "not listed in its manifest.json"),
        "pickle-entry": ([(MANIFEST_NAME, _manifest_with(manifest, alt, evil)), (alt, evil)],
                         "not a readable cache entry"),
        "pickle-manifest": ([(MANIFEST_NAME, evil)], "not JSON"),
        "no-manifest": ([(name, data)], "not manifest.json"),
        "tampered-entry": ([(MANIFEST_NAME, manifest), (name, bytes(tampered))], "does not match its SHA-256"),
        "tampered-entry-and-manifest": ([(MANIFEST_NAME, json.dumps({**json.loads(manifest), "entries": [
            {**e, "sha256": __import__("hashlib").sha256(bytes(tampered)).hexdigest()} if e["path"] == name else e
            for e in json.loads(manifest)["entries"]]}).encode()), (name, bytes(tampered))], "fails its checksum"),
        "good-then-bad": ([(MANIFEST_NAME, manifest), *good[:2], ("../x", b"x")], "climbs out"),
        "missing-entries": ([(MANIFEST_NAME, manifest), good[0]], "entries of the manifest are missing"),
    }


CASES = ["traversal", "nested-traversal", "absolute", "symlink", "hardlink", "device", "stray-file", "unlisted",
         "pickle-entry", "pickle-manifest", "no-manifest", "tampered-entry", "tampered-entry-and-manifest",
         "good-then-bad", "missing-entries"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_or_broken_archives_are_refused_and_write_nothing(cache, tmp_path, case):
    manifest, good = _exported(cache, tmp_path)
    pwned = tmp_path / "PWNED"
    members, message = hostile_archives(tmp_path, manifest, good, pwned)[case]
    archive = _archive(tmp_path / f"{case}.tar.gz", members)
    target = Cache(tmp_path / "deep" / "a" / "b" / "target")
    target.root.mkdir(parents=True)
    before = set(tmp_path.rglob("*"))
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(target.root)))
    assert message in line and str(archive) in line
    assert not pwned.exists()  # no pickle ever ran
    assert not target.entries() and not target.staging_dirs()  # all or nothing
    created = {p for p in set(tmp_path.rglob("*")) - before if not p.is_relative_to(target.root)}
    assert created == set(), created  # nothing outside the cache directory
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path.parent / "outside.txt").exists()


def test_import_of_something_that_is_not_an_archive(cache, tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    line = one_error_line(cli("cache", "import", str(junk), "--cache-dir", str(cache.root)))
    assert "not a readable gzip tar archive" in line and not cache.staging_dirs()
    line = one_error_line(cli("cache", "import", str(tmp_path / "absent.tar.gz"), "--cache-dir", str(cache.root)))
    assert "not found" in line


def test_import_replaces_a_corrupt_local_entry(cache, tmp_path):
    keys = populated(cache)
    archive = tmp_path / "all.tar.gz"
    assert cli("cache", "export", str(archive), "--cache-dir", str(cache.root)).exit_code == 0
    _rewrite(cache.member_path(keys["ind1"]), truncate)
    done = cli("cache", "import", str(archive), "--cache-dir", str(cache.root))
    assert done.exit_code == 0 and "1 corrupt ones replaced" in done.stdout
    assert not verify_cache(cache).bad and len(cache.quarantined()) == 1


def test_cache_commands_have_help():
    for command in ("verify", "info", "gc", "export", "import"):
        done = cli("cache", command, "--help")
        assert done.exit_code == 0 and "--cache-dir" in done.stdout
