"""Hostile input, round two (issue #16): each attack the issue reproduced, reproduced here and refused.

* a forged cache entry whose checksums were recomputed (plain SHA-256s anyone can recompute): a forged
  accuracy, a missing or mistyped field, logits of the wrong shape -- quarantined, retrained, never used;
* a sparse 4 KB member file whose header declares a 1 GiB tensor: refused by `cache verify` and by the
  loader before anything is read, under a memory bound;
* signed exports: `cache export --sign`, `cache import --require-signature`;
* a member's lock file replaced by a symlink: one line;
* a 20M-element list in a small dataset archive whose MD5 matches: refused in well under 2 s and a few MB;
* claim files: a 757-byte nested-alias bomb refused in under 2 s under a memory limit, a matrix standing for
  6.5e11 claims, deep nesting, non-UTF-8 bytes, and values of the wrong type or range (``temperature: abc``,
  ``alpha: [0.5]``, ``p: 1e999``, ``bound: .inf``, ``alpha: true``, ...): one line naming file, line and field,
  through `kdclaims claims validate` and through pytest's collection.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdclaims import metrics
from kdclaims.cache import MANIFEST_NAME, Cache, CorruptEntry, meta_sha256
from kdclaims.cli import main
from kdclaims.spec import PopulationSpec
from kdclaims.data import ARCHIVE_NAME, FOLDER_NAME, write_synthetic_cifar100
from kdclaims.errors import CacheError, DataError
from kdclaims.population import Workbench

from helpers import GOOD_CLAIM, tiny_profile

ROOT = Path(__file__).resolve().parents[1]
SPEC = PopulationSpec("vgg16_bn", "independent")


# Peak memory of what follows, in MB: Linux's VmHWM, reset once the imports are done (their own peak, torch's,
# would otherwise hide anything smaller); elsewhere the growth of ru_maxrss, which can only under-report.
MEMORY_PROBE = """
import resource

def _status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

def start_memory_probe():
    global _probe
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _probe = ("hwm", _status("VmRSS"))
    except OSError:
        _probe = ("rusage", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

def grown_mb():
    kind, base = _probe
    peak = _status("VmHWM") if kind == "hwm" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - base
"""


def run_python(script: str, *args: str) -> dict:
    """Run ``script`` (with MEMORY_PROBE) in a fresh interpreter and return the JSON it prints last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE + script, *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("kdclaims: error:") and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 or (len(lines) == 2 and "--debug" in lines[1]), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A cache (and its synthetic data) holding a real tiny population, seeds 1 and 2; copied, never changed."""
    root = tmp_path_factory.mktemp("trained") / "cache"
    Workbench(tiny_profile(), root, device="cpu", progress=False).population(SPEC)
    return root


def workbench(root: Path) -> Workbench:
    return Workbench(tiny_profile(), root, device="cpu", progress=False)


@pytest.fixture
def bench(trained, tmp_path) -> Workbench:
    shutil.copytree(trained, tmp_path / "cache")
    return workbench(tmp_path / "cache")


def forge(bench: Workbench, seed: int, change) -> str:
    """Replace the member of ``seed`` by ``change(tensors, meta, labels)``, stored with every checksum
    recomputed -- so the checks of the previous round (SHA-256s, key, config hash) all pass."""
    key = bench.member_key(SPEC, seed)
    record = bench.cache.load(key)
    tensors, meta = change(dict(record.tensors), dict(record.meta), bench.dataset.test_labels)
    bench.cache.store(key, tensors, meta)
    return key


def true_accuracy(logits, labels) -> float:
    return metrics.test_accuracy(logits, labels).item()


def sparse_header_bomb(path: Path, meta: dict) -> None:
    """A member file of 4 KB on disk whose header declares a 1 GiB tensor (the rest is a hole)."""
    meta = dict(meta)
    meta["meta_sha256"] = meta_sha256(meta)
    header = json.dumps({"__metadata__": {"kdclaims": json.dumps(meta, sort_keys=True)},
                         "test_logits": {"dtype": "F32", "shape": [262144, 1024], "data_offsets": [0, 1 << 30]}})
    header += " " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode() + os.urandom(4096))
        f.truncate(8 + len(header) + (1 << 30))


# ---------------------------------------------------------------------------------------------
# forged entries: quarantined with a warning, retrained, never used
# ---------------------------------------------------------------------------------------------

FORGERIES = {
    # the attack: 0.99 instead of the real accuracy, checksums recomputed
    "accuracy-0.99": (lambda t, m, y: (t, dict(m, test_accuracy=0.99)), "records test accuracy 0.99"),
    # a forgery no check without the labels can see: a whole number of test examples, 3 more than true
    "accuracy-plausible": (lambda t, m, y: (t, dict(m, test_accuracy=true_accuracy(t["test_logits"], y)
                                                     + 3 / y.shape[0])), "records test accuracy"),
    "loss": (lambda t, m, y: (t, dict(m, test_loss=m["test_loss"] / 2)), "records test loss"),
    "finite-flag": (lambda t, m, y: (t, dict(m, finite=False)), "records finite=False"),
    "no-test_accuracy": (lambda t, m, y: (t, {k: v for k, v in m.items() if k != "test_accuracy"}),
                         "has no test_accuracy in its metadata"),
    "accuracy-as-text": (lambda t, m, y: (t, dict(m, test_accuracy="0.99")), 'has test_accuracy "0.99"'),
    "seed-not-the-config's": (lambda t, m, y: (t, dict(m, seed=m["seed"] + 1)), "but its config has seed"),
    "fewer-classes": (lambda t, m, y: ({"test_logits": t["test_logits"][:, :-1].contiguous()}, m),
                      "test_logits has shape [64, 99], the dataset's is [64, 100]"),
    "fewer-examples": (lambda t, m, y: ({"test_logits": t["test_logits"][:-1].contiguous()}, m),
                       "test_logits has shape [63, 100], the dataset's is [64, 100]"),
    "one-dimensional": (lambda t, m, y: ({"test_logits": t["test_logits"].flatten()}, m),
                        "has shape [6400], not (examples, classes)"),
    "float64": (lambda t, m, y: ({"test_logits": t["test_logits"].double()}, m), "test_logits is not F32"),
    "extra-tensor": (lambda t, m, y: (dict(t, weights=torch.zeros(3, 3)), m), "holds tensors"),
}


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_entry_is_quarantined_and_retrained_never_used(bench, case, caplog):
    change, message = FORGERIES[case]
    original = bench.cache.load(bench.member_key(SPEC, 1))
    key = forge(bench, 1, change)
    path = bench.cache.member_path(key)

    again = workbench(bench.cache.root)
    with pytest.raises(CorruptEntry) as info:  # the loader names it, in one line
        again.cache.load(key, again.known_dataset)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)

    with caplog.at_level(logging.WARNING, logger="kdclaims"):
        population = again.population(SPEC)  # no KeyError, ValueError or RuntimeError from the forged entry
    (moved,) = again.quarantined
    assert any(str(path) in r.getMessage() and str(moved) in r.getMessage() and message in r.getMessage()
               for r in caplog.records)
    assert population.trained_now == 1 and population.seeds == (1, 2)
    assert torch.equal(population.test_logits[0], original.test_logits)  # retrained: the same member again
    labels = again.dataset.test_labels
    assert population.test_accuracy.tolist() == metrics.test_accuracy(population.test_logits, labels).tolist()
    assert 0.99 not in population.test_accuracy.tolist()


def test_the_accuracy_used_is_recomputed_from_the_logits(bench):
    """Where the recorded accuracy is within rounding of the truth, the value used is still the recomputed one."""
    key = bench.member_key(SPEC, 2)
    record = workbench(bench.cache.root).cache.load(key, bench.known_dataset)
    truth = true_accuracy(record.test_logits, bench.dataset.test_labels)
    assert record.meta["test_accuracy"] == truth
    assert record.meta["test_loss"] == metrics.test_loss(record.test_logits, bench.dataset.test_labels).item()


def test_verify_without_the_dataset_checks_what_it_can_and_says_so(bench):
    forged = forge(bench, 1, FORGERIES["accuracy-0.99"][0])  # 0.99 of 64 test examples is no whole number
    done = cli("cache", "verify", "--cache-dir", str(bench.cache.root))
    assert done.exit_code == 1 and "1 bad" in done.stdout
    assert "records test accuracy 0.99, which is no whole number of its 64 test examples" in done.stdout
    bench.cache.member_path(forged).unlink()

    forge(bench, 2, FORGERIES["accuracy-plausible"][0])
    done = cli("cache", "verify", "--cache-dir", str(bench.cache.root))
    # without the test labels this forgery cannot be seen: verify passes it, and says what it could not check
    assert done.exit_code == 0 and "0 bad" in done.stdout
    assert "checked for consistency only" in done.stdout and "a run recomputes them" in done.stdout
    again = workbench(bench.cache.root)
    assert again.population(SPEC).trained_now == 2 and len(again.quarantined) == 1  # a run does see it


# ---------------------------------------------------------------------------------------------
# a sparse file whose header declares a 1 GiB tensor
# ---------------------------------------------------------------------------------------------

BOMB_PROBE = """
import json, sys
import torch
from kdclaims.cache import Cache, KnownDataset, read_meta, verify_cache
from kdclaims.errors import CacheError
import kdclaims.training  # what verify imports, loaded before the baseline
cache, key = Cache(sys.argv[1]), sys.argv[2]
known = KnownDataset(torch.zeros(64, dtype=torch.long), 100, 192)
start_memory_probe()
errors = [reason for _, reason in verify_cache(cache).bad]
for k in (None, known):
    try:
        cache.load(key, k)
        errors.append("loaded")
    except CacheError as exc:
        errors.append(str(exc))
try:
    read_meta(cache.member_path(key))  # info, gc and plan read the header only
except ValueError as exc:
    errors.append(str(exc))
print(json.dumps({"grown_mb": grown_mb(), "errors": errors}))
"""


def test_a_sparse_header_bomb_is_refused_before_anything_is_read(bench, caplog):
    key = bench.member_key(SPEC, 1)
    path = bench.cache.member_path(key)
    sparse_header_bomb(path, bench.cache.load(key).meta)
    assert path.stat().st_size > 1 << 30

    result = run_python(BOMB_PROBE, str(bench.cache.root), key)
    verify_error, plain, with_dataset, header_only = result["errors"]
    assert str(path) in verify_error and f"more than any member can take ({64 << 20})" in verify_error
    assert f"more than any member can take ({64 << 20})" in plain
    assert "more than the dataset's logits and a header can take" in with_dataset
    assert "more than any member can take" in header_only
    assert result["grown_mb"] < 200, result  # the old reader materialised the 1 GiB tensor: 2.3 GB

    with caplog.at_level(logging.WARNING, logger="kdclaims"):
        population = workbench(bench.cache.root).population(SPEC)  # the loader: quarantined and retrained
    assert population.trained_now == 1 and any(str(path) in r.getMessage() for r in caplog.records)


def test_import_refuses_an_entry_larger_than_any_member(bench, tmp_path):
    archive = tmp_path / "big.tar.gz"
    assert cli("cache", "export", str(archive), "--cache-dir", str(bench.cache.root)).exit_code == 0
    members = read_archive(archive)
    manifest = json.loads(members[0][1])
    manifest["entries"][0]["size"] = (64 << 20) + 1
    write_archive(archive, [(MANIFEST_NAME, json.dumps(manifest).encode()), *members[1:]])
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(tmp_path / "target")))
    assert "malformed entry" in line


@pytest.mark.parametrize("case", ["accuracy-0.99", "one-dimensional", "float64", "no-test_accuracy"])
def test_import_applies_the_same_checks(trained, bench, tmp_path, case):
    good = tmp_path / "good.tar.gz"
    assert cli("cache", "export", str(good), "--cache-dir", str(trained)).exit_code == 0
    key = forge(bench, 1, FORGERIES[case][0])
    forged = bench.cache.member_path(key).read_bytes()
    # as a forger would: the entry replaced in the archive, its SHA-256 and size in the manifest with it
    members = read_archive(good)
    manifest = json.loads(members[0][1])
    name = f"members/{key[:2]}/{key}.safetensors"
    for entry in manifest["entries"]:
        if entry["path"] == name:
            entry.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged))
    archive = write_archive(tmp_path / "forged.tar.gz", [(MANIFEST_NAME, json.dumps(manifest).encode())]
                            + [(n, forged if n == name else data) for n, data in members[1:]])
    target = tmp_path / "target"
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(target)))
    assert name in line and "nothing was imported" in line
    assert not Cache(target).entries() and not Cache(target).staging_dirs()


# ---------------------------------------------------------------------------------------------
# signed exports
# ---------------------------------------------------------------------------------------------


def read_archive(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def write_archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    ours, theirs = tmp_path / "ours.key", tmp_path / "theirs.key"
    ours.write_bytes(os.urandom(32))
    theirs.write_bytes(os.urandom(32))
    return ours, theirs


@pytest.fixture
def signed(trained, tmp_path, keys) -> Path:
    archive = tmp_path / "signed.tar.gz"
    done = cli("cache", "export", str(archive), "--cache-dir", str(trained), "--sign", str(keys[0]))
    assert done.exit_code == 0 and f"signed with {keys[0]}" in done.stdout
    return archive


def test_a_signed_export_round_trips(trained, signed, keys, tmp_path):
    target = Cache(tmp_path / "target")
    done = cli("cache", "import", str(signed), "--cache-dir", str(target.root), "--require-signature", str(keys[0]))
    assert done.exit_code == 0, done.stderr
    source = Cache(trained)
    assert [p.name for p in target.entries()] == [p.name for p in source.entries()]
    for ours, theirs in zip(target.entries(), source.entries()):
        assert ours.read_bytes() == theirs.read_bytes()
    # a signature costs nothing to whoever does not check it
    done = cli("cache", "import", str(signed), "--cache-dir", str(tmp_path / "other"))
    assert done.exit_code == 0 and len(Cache(tmp_path / "other").entries()) == len(source.entries())


def _tampered_manifest(archive: Path, out: Path, change) -> Path:
    members = read_archive(archive)
    manifest = json.loads(members[0][1])
    change(manifest)
    return write_archive(out, [(MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode()),
                               *members[1:]])


@pytest.mark.parametrize("case", ["unsigned", "wrong-key", "manifest-edited", "entry-and-manifest-edited",
                                  "mac-replaced", "signature-removed"])
def test_an_archive_the_key_does_not_authenticate_is_refused_before_anything_is_written(
        trained, signed, keys, tmp_path, case):
    ours, theirs = keys
    key_used = ours
    if case == "unsigned":
        archive = tmp_path / "unsigned.tar.gz"
        assert cli("cache", "export", str(archive), "--cache-dir", str(trained)).exit_code == 0
        message = "it is not signed"
    elif case == "wrong-key":
        archive, key_used, message = signed, theirs, "does not match the key"
    elif case == "manifest-edited":
        archive = _tampered_manifest(signed, tmp_path / "t.tar.gz",
                                     lambda m: m["entries"][0].update(population="vgg16_bn/kd-a0.9"))
        message = "does not match the key"
    elif case == "entry-and-manifest-edited":
        members = read_archive(signed)
        name, data = members[1]
        altered = bytearray(data)
        altered[-5] ^= 1
        manifest = json.loads(members[0][1])
        for entry in manifest["entries"]:
            if entry["path"] == name:
                entry["sha256"] = hashlib.sha256(bytes(altered)).hexdigest()
        archive = write_archive(tmp_path / "t.tar.gz", [(MANIFEST_NAME, json.dumps(manifest).encode()),
                                                        (name, bytes(altered)), *members[2:]])
        message = "does not match the key"
    elif case == "mac-replaced":
        archive = _tampered_manifest(signed, tmp_path / "t.tar.gz",
                                     lambda m: m["signature"].update(mac="0" * 64))
        message = "does not match the key"
    else:
        archive = _tampered_manifest(signed, tmp_path / "t.tar.gz", lambda m: m.pop("signature"))
        message = "it is not signed"
    target = tmp_path / "target"
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(target),
                              "--require-signature", str(key_used)))
    assert message in line and str(archive) in line and "nothing was imported" in line
    assert not target.exists()  # refused before the cache directory was even created


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"short", "only 5 bytes"), (None, "cannot read")])
def test_a_bad_key_file_is_one_line(trained, signed, tmp_path, content, message):
    keyfile = tmp_path / "bad.key"
    if content is not None:
        keyfile.write_bytes(content)
    line = one_error_line(cli("cache", "export", str(tmp_path / "x.tar.gz"), "--cache-dir", str(trained),
                              "--sign", str(keyfile)))
    assert message in line and str(keyfile) in line and not (tmp_path / "x.tar.gz").exists()
    line = one_error_line(cli("cache", "import", str(signed), "--cache-dir", str(tmp_path / "target"),
                              "--require-signature", str(keyfile)))
    assert message in line and str(keyfile) in line and not (tmp_path / "target").exists()


# ---------------------------------------------------------------------------------------------
# a lock file replaced by a symlink
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "symlink-to-a-file", "directory"])
def test_a_lock_that_is_not_a_regular_file_is_one_line(trained, tmp_path, kind):
    archive = tmp_path / "all.tar.gz"
    assert cli("cache", "export", str(archive), "--cache-dir", str(trained)).exit_code == 0
    target = Cache(tmp_path / "target")
    key = Cache(trained).entries()[0].name[:64]
    lock = target.member_path(key).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    if kind == "symlink":
        lock.symlink_to(elsewhere)
    elif kind == "symlink-to-a-file":
        elsewhere.write_text("not yours")
        lock.symlink_to(elsewhere)
    else:
        lock.mkdir()
    with pytest.raises(CacheError) as info:
        with target.member_lock(key):
            pass
    assert str(lock) in str(info.value) and "\n" not in str(info.value)
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(target.root)))
    assert f"cannot take the lock {lock}" in line
    assert not target.entries()
    assert (kind != "symlink" or not elsewhere.exists()) and (kind != "symlink-to-a-file"
                                                             or elsewhere.read_text() == "not yours")


# ---------------------------------------------------------------------------------------------
# a dataset pickle that would build a 20M-element list
# ---------------------------------------------------------------------------------------------

# a list of 20,000,000 Nones, appended in batches of 1000 as picklers write them: 20 MB, ~20 KB of gzip
TWENTY_MILLION = b"\x80\x02]q\x00" + (b"(" + b"N" * 1000 + b"e") * 20_000 + b"."

DATA_PROBE = """
import json, sys, time
from kdclaims.data import load_cifar100
from kdclaims.errors import DataError
start_memory_probe()
started = time.perf_counter()
try:
    load_cifar100(sys.argv[1])
    error = None
except DataError as exc:
    error = str(exc)
print(json.dumps({"seconds": time.perf_counter() - started, "error": error, "grown_mb": grown_mb()}))
"""


@pytest.fixture(scope="module")
def good_members(tmp_path_factory) -> dict[str, bytes]:
    archive = write_synthetic_cifar100(tmp_path_factory.mktemp("good"), num_classes=4, train_per_class=4,
                                       test_per_class=2)
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name.rsplit("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.mark.parametrize("where, member", [("archive", "train"), ("archive", "meta"), ("folder", "train")])
def test_a_twenty_million_element_list_is_refused_fast_and_small(good_members, tmp_path, where, member):
    members = dict(good_members, **{member: TWENTY_MILLION if member == "train" else TWENTY_MILLION[:200_000]})
    if where == "archive":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path = tmp_path / ARCHIVE_NAME
        path.write_bytes(buf.getvalue())
        # the MD5 matches: only the reader's own bounds stand between the pickle and the unpickler
        (tmp_path / f"{ARCHIVE_NAME}.md5").write_text(hashlib.md5(buf.getvalue()).hexdigest() + "\n")
        assert path.stat().st_size < 100_000
    else:
        path = tmp_path / FOLDER_NAME
        path.mkdir()
        for name, data in members.items():
            (path / name).write_bytes(data)
    result = run_python(DATA_PROBE, str(path))
    assert result["error"] is not None and "opcodes" in result["error"] and "may be malicious" in result["error"]
    assert f"{member}:" in result["error"] and "\n" not in result["error"]
    assert result["seconds"] < 2, result  # the old reader: 48 s
    assert result["grown_mb"] < 32, result  # the old reader: 590 MB


def test_the_bound_scales_with_the_member_not_a_class_count():
    """The bound comes from the member's size: 5000 labels are fine beside the 5000 images they label, and
    refused alone. A dataset of other sizes or class counts needs no new constant."""
    from kdclaims import data

    labels = [7] * 5000
    with_images = pickle.dumps({b"data": bytes(5000 * data.ROW_LEN), b"fine_labels": labels}, protocol=2)
    assert data._unpickle(with_images, "train")[b"fine_labels"] == labels
    with pytest.raises(DataError, match="opcodes"):
        data._unpickle(pickle.dumps({b"fine_labels": labels}, protocol=2), "train")


# ---------------------------------------------------------------------------------------------
# claim files: an alias bomb, and values of the wrong type or out of range
# ---------------------------------------------------------------------------------------------

ENTRY = "  - id: c1\n"
BOUND_CLAIM = """
claims:
  - id: b1
    sentence: "KD barely moves with alpha"
    source: Table 1
    arch: resnet18
    kind: bound
    quantity: spread
    metrics: activation_distance
    arms: [{setup: kd, alpha: 0.1}, {setup: kd, alpha: 0.5}]
    bound: 0.005
    paper: {outcome: holds}
"""


def alias_bomb() -> str:
    """The issue's attack: nine levels of nine aliases (9^9 = 387M elements once expanded) defined under the
    free-form ``description:`` and referenced from a claim's ``note:``; str() of the note ran 60 s into a
    MemoryError."""
    levels = "abcdefghi"
    anchors = "description:\n  - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  - &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip(levels, levels[1:]))
    return anchors + textwrap.dedent(GOOD_CLAIM).lstrip().replace("    direction: less\n",
                                                                   "    direction: less\n    note: *i\n")


def in_entry(base: str, old: str, new: str) -> str:
    text = textwrap.dedent(base)
    assert old in text.split("claims:\n", 1)[1], old
    head, entries = text.split("claims:\n", 1)
    return head + "claims:\n" + entries.replace(old, new, 1)


# case -> (file content, what the one line must name besides the file: the line's text to find, the field)
HOSTILE_CLAIMS = {
    "temperature-abc": (in_entry(GOOD_CLAIM, "alpha: 0.1}", "alpha: 0.1, temperature: abc}"),
                        "- id: c1", "treatment.temperature must be a positive finite number, got 'abc'"),
    "temperature-inf": (in_entry(GOOD_CLAIM, "alpha: 0.1}", "alpha: 0.1, temperature: .inf}"),
                        "- id: c1", "treatment.temperature must be a positive finite number, got inf"),
    "temperature-true": (in_entry(GOOD_CLAIM, "alpha: 0.1}", "alpha: 0.1, temperature: true}"),
                         "- id: c1", "treatment.temperature must be a positive finite number, got True"),
    "alpha-list": (in_entry(GOOD_CLAIM, "alpha: 0.1", "alpha: [0.5]"), "- id: c1",
                   "treatment.alpha must be a finite number, got [0.5]"),
    "alpha-true": (in_entry(GOOD_CLAIM, "alpha: 0.1", "alpha: true"), "- id: c1",
                   "treatment.alpha must be a finite number, got True"),
    "p-abc": (in_entry(GOOD_CLAIM, "p: 0.956", "p: abc"), "- id: c1", "paper.p must be a number in [0, 1], got 'abc'"),
    "p-1e999": (in_entry(GOOD_CLAIM, "p: 0.956", "p: 1e999"), "- id: c1", "paper.p must be a number in [0, 1]"),
    "p-negative": (in_entry(GOOD_CLAIM, "p: 0.956", "p: -5"), "- id: c1", "paper.p must be a number in [0, 1], got -5"),
    "p-huge-integer": (in_entry(GOOD_CLAIM, "p: 0.956", "p: " + "9" * 400), "- id: c1",
                       "paper.p must be a number in [0, 1], got 999"),
    "kind-list": (in_entry(GOOD_CLAIM, "    direction: less\n", "    direction: less\n    kind: [comparison]\n"),
                  "- id: c1", "kind must be text, got ['comparison']"),
    "note-mapping": (in_entry(GOOD_CLAIM, "    direction: less\n", "    direction: less\n    note: {a: 1}\n"),
                     "- id: c1", "note must be text"),
    "bound-inf": (in_entry(BOUND_CLAIM, "bound: 0.005", "bound: .inf"), "- id: b1",
                  "bound must be a positive finite number, got inf"),
    "bound-true": (in_entry(BOUND_CLAIM, "bound: 0.005", "bound: true"), "- id: b1",
                   "bound must be a positive finite number, got True"),
    "matrix-bomb": (in_entry(GOOD_CLAIM, ENTRY, "  - matrix: {" + ", ".join(
        f"d{i}: [{', '.join(map(str, range(30)))}]" for i in range(8)) + "}\n    id: c1\n"),
        "- matrix:", "the matrix stands for 656100000000 claims"),
    "deep-nesting": ("claims: " + "[" * 50_000 + "\n", "claims:", "nested more than 32 levels deep"),
    "alias-bomb": (alias_bomb(), "&a", "anchors and aliases (&name, *name) are not allowed"),
    "non-utf8": (in_entry(GOOD_CLAIM, "KD is not", "KD \udcff is not"), "KD ", "not UTF-8 text (byte 0xff)"),
}


def write_claim_file(directory: Path, case: str) -> tuple[Path, str]:
    """The case's file, and the ``name:line`` its error must start with."""
    content, marker, _ = HOSTILE_CLAIMS[case]
    path = directory / f"{case}.yaml"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))  # \udcff: the lone byte 0xff
    line = next(i for i, text in enumerate(content.splitlines(), 1) if marker in text)
    return path, f"{path.name}:{line}"


@pytest.mark.parametrize("case", sorted(HOSTILE_CLAIMS))
def test_a_malformed_claim_file_is_one_line_naming_file_line_and_field(tmp_path, case):
    path, location = write_claim_file(tmp_path, case)
    line = one_error_line(cli("claims", "validate", str(path)))
    assert f"{tmp_path / location}" in line and HOSTILE_CLAIMS[case][2] in line, line


def test_malformed_claim_files_fail_pytest_collection_in_one_line_each(tmp_path):
    """The same files collected by pytest (one run for all), under a bound on address space that the old
    loader's alias expansion (~30 GB) would have hit: a collection error naming file, line and field each."""
    import resource

    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    locations = {case: write_claim_file(claims_dir, case)[1] for case in HOSTILE_CLAIMS}

    def bound_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "pytest", "claims", "--collect-only", "--profile", "smoke",
                           "-p", "no:cacheprovider", "-p", "no:xdist"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=bound_memory)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output and "MemoryError" not in output, output[-3000:]
    for case, location in locations.items():
        line = next((text for text in output.splitlines() if location in text and "malformed claim file" in text), "")
        assert HOSTILE_CLAIMS[case][2] in line, (case, output[-3000:])


# The CLI in a fresh interpreter whose address space may grow by 1.5 GB past what its imports mapped.
CLAIM_BOMB_PROBE = """
import resource, sys, time
import kdclaims.claims  # the command imports it (and torch) lazily: imported here, outside the clock
from kdclaims.cli import main
with open("/proc/self/status") as f:
    mapped = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
limit = mapped + 1536 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
started = time.perf_counter()
try:
    main(["claims", "validate", sys.argv[1]], prog_name="kdclaims")
finally:
    with open(sys.argv[2], "w") as f:
        f.write(str(time.perf_counter() - started))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc")
def test_the_alias_bomb_is_refused_in_under_two_seconds_under_a_memory_limit(tmp_path):
    path, location = write_claim_file(tmp_path, "alias-bomb")
    assert path.stat().st_size < 800  # the file: 757 bytes
    seconds = tmp_path / "seconds"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CLAIM_BOMB_PROBE, str(path), str(seconds)], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"kdclaims: error: {tmp_path / location}: not valid YAML (anchors and aliases")
    assert float(seconds.read_text()) < 2  # the old loader: 60 s, then a MemoryError traceback


# ---------------------------------------------------------------------------------------------
# tracebacks the issue saw, now one line: a full disk under a checkpoint, a nested manifest, an arch name
# ---------------------------------------------------------------------------------------------


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    """torch.save writing a file on a full disk raises a RuntimeError that says nothing of why ("basic_ios::clear:
    iostream error", or "PytorchStreamWriter failed writing file"), and it escaped as a traceback. Here
    torch.save raises that whenever it is given a file, and the disk fills up halfway through the checkpoint's
    bytes (the OSError with ENOSPC a write gets from the kernel)."""
    import kdclaims.checkpoint as checkpoint

    torch_save = torch.save

    def save(obj, target, *args, **kwargs):
        if not isinstance(target, io.BytesIO):
            raise RuntimeError("basic_ios::clear: iostream error")
        return torch_save(obj, target, *args, **kwargs)

    write_atomically = checkpoint.write_bytes_atomically.__globals__["write_atomically"]

    def onto_a_full_disk(path, data, tmp_prefix=".", mode=None):
        def write(tmp):
            Path(tmp).write_bytes(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
        write_atomically(path, write, tmp_prefix, mode)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    monkeypatch.setattr(checkpoint, "write_bytes_atomically", onto_a_full_disk)
    monkeypatch.setenv("KDCLAIMS_CHECKPOINT_EVERY", "1")
    monkeypatch.setattr("kdclaims.profiles.Profile.epochs_for", lambda self, arch: 2)  # one checkpoint, then done
    cache_dir = tmp_path / "cache"
    done = cli("train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "independent", "--device", "cpu",
               "--seeds", "1", "--cache-dir", str(cache_dir))
    line = one_error_line(done)
    assert "no space left writing" in line and str(cache_dir / "checkpoints") in line, line
    assert not list(cache_dir.rglob("*.tmp"))


def test_a_deeply_nested_manifest_is_one_line(tmp_path):
    archive = write_archive(tmp_path / "nested.tar.gz",
                            [(MANIFEST_NAME, b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")])
    line = one_error_line(cli("cache", "import", str(archive), "--cache-dir", str(tmp_path / "c")))
    assert str(archive) in line and MANIFEST_NAME in line
    assert not (tmp_path / "c" / "members").exists() or not any((tmp_path / "c" / "members").iterdir())


HOSTILE_ARCH = "../up/<img src=x onerror=alert(1)>"


def test_an_architecture_name_with_slashes_and_markup_gets_safe_figures_and_escaped_reports(tmp_path):
    from kdclaims.results import save_evaluation
    from test_report import fake_evaluation

    payload = fake_evaluation()
    for population in payload["populations"]:
        population["arch"] = HOSTILE_ARCH
    evaluation = save_evaluation(payload, tmp_path / "evaluations")
    out = tmp_path / "reports" / "deep"
    done = cli("report", "--format", "markdown", "--evaluation", str(evaluation), "--output", str(out / "r.md"))
    assert done.exit_code == 0, (done.stdout, done.stderr)
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) == 1 and pngs[0].parent == out  # in the report's folder, not up/ nor a missing folder
    markdown = (out / "r.md").read_text()
    assert f"]({pngs[0].name})" in markdown and "<img" not in markdown
    done = cli("report", "--format", "html", "--evaluation", str(evaluation), "--output", str(out / "r.html"))
    assert done.exit_code == 0, (done.stdout, done.stderr)
    assert "<img src=x" not in (out / "r.html").read_text()


def test_markdown_reports_show_markup_in_claim_text_never_run_it():
    from kdclaims.render.document import build_document
    from kdclaims.render.markdown import markdown_report
    from test_report import fake_evaluation

    payload = fake_evaluation()
    first, second = payload["results"][0], payload["results"][1]
    first["sentence"] = "KD <script>alert(1)</script> wins | always"
    first["note"] = "<img src=x onerror=alert(2)>"
    second["reason"] = "<b onmouseover=alert(3)>bold</b>"
    second["id"] = "x<svg/onload=alert(4)>"
    markdown = markdown_report(build_document(payload))
    for markup in ("<script>", "<img", "<b ", "<svg"):
        assert markup not in markdown, markup
    assert "KD &lt;script&gt;alert(1)&lt;/script&gt; wins \\| always" in markdown
    assert "&lt;img src=x onerror=alert(2)&gt;" in markdown and "&lt;b onmouseover=alert(3)&gt;bold" in markdown
