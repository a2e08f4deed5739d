"""kdclaims.data: reading, verifying, fetching and generating CIFAR-100 archives, safely."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import pickle
import pickletools
import shlex
import struct
import tarfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdclaims import data
from kdclaims.data import (ARCHIVE_NAME, CIFAR100_MD5, Dataset, fetch, find_cifar100, load_cifar100, verify,
                           write_synthetic_cifar100)
from kdclaims.errors import DataError

SMALL = dict(num_classes=5, train_per_class=8, test_per_class=4, seed=3)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> pathlib.Path:
    """A small synthetic archive (+ sidecar), shared read-only by the tests of this module."""
    return write_synthetic_cifar100(tmp_path_factory.mktemp("synthetic"), **SMALL)


def md5(path: pathlib.Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def members_of(path: pathlib.Path) -> dict[str, bytes]:
    """The regular-file members of one of our own (trusted) archives."""
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def pack(dest: pathlib.Path, entries, *, sidecar: bool = True) -> pathlib.Path:
    """Write ``dest/ARCHIVE_NAME`` from (name, bytes) pairs or ready TarInfo(+bytes) pairs, with a correct
    sidecar MD5 so that only the reader's other defences stand between the content and the caller."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / ARCHIVE_NAME
    with tarfile.open(target, "w:gz") as tar:
        for entry, payload in entries:
            info = entry if isinstance(entry, tarfile.TarInfo) else tarfile.TarInfo(entry)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    if sidecar:
        (dest / (ARCHIVE_NAME + ".md5")).write_text(md5(target) + "\n")
    return target


def replaced(archive: pathlib.Path, dest: pathlib.Path, **payloads: bytes) -> pathlib.Path:
    """A copy of ``archive`` whose train/test/meta members are swapped for the given bytes."""
    members = members_of(archive)
    for name, payload in payloads.items():
        members[f"cifar-100-python/{name}"] = payload
    return pack(dest, list(members.items()))


def split_dict(n=4, num_classes=5) -> dict:
    rng = np.random.default_rng(0)
    return {
        b"filenames": [b"x.png"] * n,
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": [int(i % num_classes) for i in range(n)],
        b"coarse_labels": [int(i % num_classes) // 5 for i in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    }


def files_under(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------------
# the generator and the reader agree
# ---------------------------------------------------------------------------------------------


def test_synthetic_archive_loads_with_cifar_shapes_dtypes_and_labels(archive):
    ds = load_cifar100(archive)
    assert isinstance(ds, Dataset)
    assert ds.train_images.shape == (40, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (20, 3, 32, 32) and ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == torch.int64 and ds.test_labels.dtype == torch.int64
    assert torch.bincount(ds.train_labels).tolist() == [8] * 5  # balanced, classes 0..4
    assert torch.bincount(ds.test_labels).tolist() == [4] * 5
    assert len(ds.class_names) == 100 and ds.num_classes == 100 and ds.class_names[0] == "class_000"
    assert ds.archive_md5 == md5(archive) and ds.source == os.path.abspath(archive)
    assert len(ds.fingerprint) == 64
    assert ds.train_images.float().std() > 10  # not a blank image


def test_synthetic_pickles_have_exactly_cifars_keys_types_and_globals(archive):
    members = members_of(archive)
    assert set(members) == {"cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"}
    allowed = {"_codecs encode", "numpy ndarray", "numpy dtype", "numpy._core.multiarray _reconstruct",
               "numpy.core.multiarray _reconstruct"}
    for name, payload in members.items():
        assert payload[:2] == b"\x80\x02"  # protocol 2, like the original
        ops = list(pickletools.genops(payload))
        assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} <= allowed, name
    train = data._unpickle(members["cifar-100-python/train"], "train")
    assert set(train) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (40, 3072)
    assert all(type(x) is int for x in train[b"fine_labels"]) and isinstance(train[b"batch_label"], bytes)
    assert all(isinstance(f, bytes) for f in train[b"filenames"])
    assert train[b"coarse_labels"] == [f // 5 for f in train[b"fine_labels"]]
    meta = data._unpickle(members["cifar-100-python/meta"], "meta")
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    assert all(isinstance(n, bytes) for n in meta[b"fine_label_names"])


def test_rows_are_r_then_g_then_b_planes(archive):
    train = data._unpickle(members_of(archive)["cifar-100-python/train"], "train")
    ds = load_cifar100(archive)
    row = train[b"data"][7]
    assert np.array_equal(ds.train_images[7, 1].numpy(), row[1024:2048].reshape(32, 32))  # G plane


def test_generator_is_deterministic_and_seed_dependent(tmp_path, archive):
    again = write_synthetic_cifar100(tmp_path / "a", **SMALL)
    assert again.read_bytes() == archive.read_bytes()
    assert (tmp_path / "a" / (ARCHIVE_NAME + ".md5")).read_text().strip() == md5(archive)
    assert load_cifar100(again).fingerprint == load_cifar100(archive).fingerprint
    other = write_synthetic_cifar100(tmp_path / "b", **{**SMALL, "seed": 4})
    assert load_cifar100(other).fingerprint != load_cifar100(archive).fingerprint


def test_generator_defaults_write_100_classes(tmp_path):
    ds = load_cifar100(write_synthetic_cifar100(tmp_path, train_per_class=2, test_per_class=1))
    assert ds.train_labels.unique().tolist() == list(range(100)) and ds.test_images.shape[0] == 100


@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"num_classes": 101}, {"train_per_class": 0},
                                 {"test_per_class": 1.5}, {"seed": -1}, {"noise": -0.1}, {"noise": float("nan")}])
def test_generator_rejects_bad_arguments(tmp_path, bad):
    with pytest.raises(DataError, match=next(iter(bad))):
        write_synthetic_cifar100(tmp_path, **{**SMALL, **bad})


def test_generator_never_overwrites_the_real_archive(tmp_path, archive, monkeypatch):
    (tmp_path / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    monkeypatch.setattr(data, "CIFAR100_MD5", md5(archive))  # pretend this file is the real download
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_synthetic_cifar100(tmp_path, **SMALL)


def test_archive_and_extracted_folder_have_the_same_fingerprint(tmp_path, archive):
    for name, payload in members_of(archive).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(payload)
    folder = tmp_path / "cifar-100-python"
    from_archive, from_folder, from_parent = load_cifar100(archive), load_cifar100(folder), load_cifar100(tmp_path)
    assert from_folder.fingerprint == from_archive.fingerprint == from_parent.fingerprint
    assert from_folder.archive_md5 is None and from_folder.source == os.path.abspath(folder)
    assert torch.equal(from_folder.train_images, from_archive.train_images)


def test_summary_is_plain_json(archive):
    summary = verify(archive)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["num_classes"] == 100 and summary["archive_md5"] == md5(archive)
    assert summary["train"]["count"] == 40 and summary["test"]["images_shape"] == [20, 3, 32, 32]
    assert summary["train"]["label_range"] == [0, 4] and summary["train"]["classes_present"] == 5


# A Python-2 pickle (as the official archive holds): bytes are STRING opcodes, numpy's module is
# numpy.core.multiarray, and the dtype arguments are ('u1', 0, 1). Python 3 cannot write these, so
# they are spelled out opcode by opcode.
def _py2(obj) -> bytes:
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, list):
        return b"]" + (b"(" + b"".join(_py2(x) for x in obj) + b"e" if obj else b"")
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, np.ndarray):
        rows, cols = obj.shape
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R("
                b"K\x01" + _py2(rows) + _py2(cols) + b"\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
                b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2(obj.tobytes()) + b"tb")
    raise TypeError(obj)


def test_reads_python2_pickles_like_the_official_archive(tmp_path, archive):
    members = members_of(archive)
    py2 = {}
    for name, payload in members.items():
        obj = data._unpickle(payload, name)
        py2[name] = b"\x80\x02" + _py2(obj) + b"."
    official = pack(tmp_path, list(py2.items()) + [("cifar-100-python/file.txt~", b"extra")])
    assert load_cifar100(official).fingerprint == load_cifar100(archive).fingerprint


# ---------------------------------------------------------------------------------------------
# MD5 and damaged archives
# ---------------------------------------------------------------------------------------------


def test_flipped_byte_fails_the_md5_check_naming_both_md5s(tmp_path, archive):
    tampered = bytearray(archive.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    (tmp_path / ARCHIVE_NAME).write_bytes(bytes(tampered))
    (tmp_path / (ARCHIVE_NAME + ".md5")).write_text(md5(archive) + "\n")
    with pytest.raises(DataError, match="MD5") as err:
        load_cifar100(tmp_path / ARCHIVE_NAME)
    assert md5(archive) in str(err.value) and hashlib.md5(tampered).hexdigest() in str(err.value)
    assert "kdclaims data fetch" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError):  # without the MD5 check, gzip's own CRC (or the pickle) still catches it
        load_cifar100(tmp_path / ARCHIVE_NAME, check_md5=False)


def test_md5_sources_sidecar_argument_and_official_default(tmp_path, archive):
    target = tmp_path / ARCHIVE_NAME
    target.write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match=CIFAR100_MD5):  # no sidecar: the official MD5 is expected
        load_cifar100(target)
    assert load_cifar100(target, expected_md5=md5(archive).upper()).archive_md5 == md5(archive)
    assert load_cifar100(target, check_md5=False).archive_md5 == md5(archive)
    sidecar = tmp_path / (ARCHIVE_NAME + ".md5")
    sidecar.write_text(f"{md5(archive)}  {ARCHIVE_NAME}\n")  # md5sum's format works too
    load_cifar100(target)
    sidecar.write_text("0" * 32 + "\n")
    with pytest.raises(DataError, match="MD5"):
        load_cifar100(target)
    sidecar.write_text("not an md5\n")
    with pytest.raises(DataError, match=r"\.md5"):
        load_cifar100(target)
    with pytest.raises(DataError, match="not an MD5"):
        load_cifar100(target, expected_md5="xyz")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "gzip-not-tar"])
def test_damaged_archives_raise_data_error_not_tracebacks(tmp_path, archive, damage):
    payload = {
        "truncated": archive.read_bytes()[: archive.stat().st_size // 2],
        "garbage": os.urandom(5000),
        "empty": b"",
        "gzip-not-tar": gzip.compress(os.urandom(5000)),
    }[damage]
    target = tmp_path / ARCHIVE_NAME
    target.write_bytes(payload)
    with pytest.raises(DataError, match=str(target)):
        load_cifar100(target, check_md5=False)
    with pytest.raises(DataError, match="MD5"):
        load_cifar100(target)


def test_archive_without_the_train_member_is_named(tmp_path, archive):
    members = members_of(archive)
    del members["cifar-100-python/train"]
    with pytest.raises(DataError, match="lacks cifar-100-python/train"):
        load_cifar100(pack(tmp_path, list(members.items())))


# ---------------------------------------------------------------------------------------------
# hostile content: code in pickles, odd tar members
# ---------------------------------------------------------------------------------------------


class Reduce:
    """Pickles as ``func(*args)``: what an attacker puts in a pickle to run code on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(pwned: pathlib.Path):
    import _codecs

    return {
        "os.system": (Reduce(os.system, f"touch {shlex.quote(str(pwned))}"), 2),
        "pathlib.Path.touch": (Reduce(pathlib.Path.touch, pathlib.Path(pwned)), 4),
        "builtins.eval": (Reduce(eval, f"open({str(pwned)!r}, 'w')"), 2),
        "object-dtype": ({b"data": np.array([1, None], dtype=object)}, 2),
        "ndarray-called": (Reduce(np.ndarray, (2, 2)), 2),
        "other-codec": (Reduce(_codecs.encode, "x", "rot13"), 2),
        "dtype-object": (Reduce(np.dtype, "O"), 2),
    }


@pytest.mark.parametrize("kind", ["os.system", "pathlib.Path.touch", "builtins.eval", "object-dtype",
                                  "ndarray-called", "other-codec", "dtype-object"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, archive, kind):
    pwned = tmp_path / "pwned"
    obj, protocol = _payloads(pwned)[kind]
    hostile = replaced(archive, tmp_path / "evil", train=pickle.dumps(obj, protocol=protocol))
    with pytest.raises(DataError, match="cifar-100-python/train") as err:
        load_cifar100(hostile)  # the sidecar MD5 is right: only the unpickler stands in the way
    if kind in ("os.system", "pathlib.Path.touch", "builtins.eval"):
        assert "refuses to load global" in str(err.value) and "malicious" in str(err.value)
    assert not pwned.exists()


def _array_pickle() -> bytes:
    return pickle.dumps({b"data": np.zeros((1, 3072), dtype=np.uint8)}, protocol=2)


DTYPE_STATE = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # (..., elsize -1, alignment -1, flags 0)


@pytest.mark.parametrize("hostile, message", [
    # numpy itself would accept these: a 'u1' dtype flagged as holding Python objects (flags 63) ...
    pytest.param(_array_pickle().replace(DTYPE_STATE, DTYPE_STATE[:-3] + b"K\x3ft"), "dtype", id="dtype-flags"),
    # ... or a dtype given fields
    pytest.param(_array_pickle().replace(b"NNNJ", b"NN}J", 1), "dtype", id="dtype-fields"),
    # BUILD on an allowed global would set attributes such as __defaults__ on it
    pytest.param(b"\x80\x02c_codecs\nencode\n}b.", "modify", id="build-on-global"),
    pytest.param(b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R.", "dtype", id="object-dtype-py2"),
    # an array whose data do not match its shape
    pytest.param(_array_pickle().replace(b"M\x00\x0c", b"M\x01\x0c", 1), "do not match", id="short-data"),
    # _reconstruct asked to allocate
    pytest.param(_array_pickle().replace(b"K\x00\x85", b"J\x00\x00\x00\x10\x85", 1), "_reconstruct",
                 id="reconstruct-alloc"),
])
def test_allowed_globals_cannot_be_steered(hostile, message):
    with pytest.raises(DataError, match=message):
        data._unpickle(hostile, "cifar-100-python/train")


def test_huge_memo_index_is_refused_before_allocating(tmp_path, archive):
    bomb = b"\x80\x02}r\xff\xff\xff\x7f."  # LONG_BINPUT 2**31-1: the C unpickler would size its memo to that
    with pytest.raises(DataError, match="memo"):
        load_cifar100(replaced(archive, tmp_path, train=bomb))


def test_path_traversal_and_stray_links_are_never_written(tmp_path, archive, monkeypatch):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # where a careless extractall would write "../../escape"
    absolute = tmp_path / "absolute_escape"
    entries = list(members_of(archive).items())
    entries += [("../../escape", b"x"), (str(absolute), b"x"), ("cifar-100-python/../../escape2", b"x")]
    link = tarfile.TarInfo("cifar-100-python/evil-link")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
    entries.append((link, None))
    hostile = pack(tmp_path / "evil", entries)
    before = files_under(tmp_path)
    assert load_cifar100(hostile).fingerprint == load_cifar100(archive).fingerprint  # extras ignored
    assert files_under(tmp_path) == before and not absolute.exists()


@pytest.mark.parametrize("linktype", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_posing_as_a_split_is_refused(tmp_path, archive, linktype):
    members = members_of(archive)
    del members["cifar-100-python/train"]
    link = tarfile.TarInfo("cifar-100-python/train")
    link.type, link.linkname = linktype, "/etc/passwd"
    with pytest.raises(DataError, match="not a regular file"):
        load_cifar100(pack(tmp_path, list(members.items()) + [(link, None)]))


def test_duplicate_split_member_is_refused(tmp_path, archive):
    members = list(members_of(archive).items())
    with pytest.raises(DataError, match="twice"):
        load_cifar100(pack(tmp_path, members + [members[0]]))


# ---------------------------------------------------------------------------------------------
# well-formed pickles holding the wrong things
# ---------------------------------------------------------------------------------------------


def _with(split=None, drop=()):
    obj = split_dict()
    obj.update(split or {})
    for key in drop:
        del obj[key]
    return pickle.dumps(obj, protocol=2)


@pytest.mark.parametrize("train, field", [
    (_with({b"data": np.zeros((4, 3072), dtype=np.float64)}), "data"),
    (_with({b"data": np.zeros((4, 3071), dtype=np.uint8)}), "data"),
    (_with({b"data": np.zeros((4, 3, 32, 32), dtype=np.uint8)}), "data"),
    (_with({b"data": [0] * 3072}), "data"),
    (_with(drop=[b"data"]), "data"),
    (_with(drop=[b"fine_labels"]), "fine_labels"),
    (_with({b"fine_labels": [0, 1, 2, 100]}), "fine_labels"),
    (_with({b"fine_labels": [0, 1, 2, -1]}), "fine_labels"),
    (_with({b"fine_labels": [0, 1, 2]}), "fine_labels"),
    (_with({b"fine_labels": [0, 1, 2, 3.0]}), "fine_labels"),
    (_with({b"fine_labels": [0, 1, 2, 2**70]}), "fine_labels"),
    (_with({b"coarse_labels": [0, 0, 0, 20]}), "coarse_labels"),
    (pickle.dumps([1, 2, 3], protocol=2), "dict"),
    (b"\x80\x02}q\x00(", "not a valid"),  # truncated pickle
])
def test_malformed_split_names_the_field(tmp_path, archive, train, field):
    with pytest.raises(DataError, match=field) as err:
        load_cifar100(replaced(archive, tmp_path, train=train))
    assert "cifar-100-python/train" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("meta, field", [
    # any number of classes is allowed (#13), but not none
    ({b"fine_label_names": [], b"coarse_label_names": [b"s"] * 20}, "fine_label_names"),
    ({b"coarse_label_names": [b"s"] * 20}, "fine_label_names"),
    ({b"fine_label_names": [b"c"] * 99 + [7], b"coarse_label_names": [b"s"] * 20}, "fine_label_names"),
    ({b"fine_label_names": [b"c"] * 100, b"coarse_label_names": [b"s"] * 19}, "coarse_label_names"),
])
def test_malformed_meta_names_the_field(tmp_path, archive, meta, field):
    with pytest.raises(DataError, match=field):
        load_cifar100(replaced(archive, tmp_path, meta=pickle.dumps(meta, protocol=2)))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_pickles_only_ever_raise_data_error(draws):
    payload = bytearray(pickle.dumps(split_dict(n=3), protocol=2))
    for _ in range(draws.draw(st.integers(1, 4))):
        payload[draws.draw(st.integers(0, len(payload) - 1))] = draws.draw(st.integers(0, 255))
    try:
        data._parse_split(data._unpickle(bytes(payload), "fuzz"), 100, "fuzz")
    except DataError:
        pass


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------


def test_fetch_from_a_file_url_verifies_and_places_the_archive(tmp_path, archive, capsys):
    dest = tmp_path / "dl"
    got = fetch(dest, url=archive.as_uri(), md5=md5(archive), progress=True)
    assert got == dest / ARCHIVE_NAME and got.read_bytes() == archive.read_bytes()
    assert load_cifar100(got).fingerprint == load_cifar100(archive).fingerprint  # sidecar written for it
    assert sorted(os.listdir(dest)) == [ARCHIVE_NAME, ARCHIVE_NAME + ".md5"]
    # already there and valid: returned without touching the (now unreachable) network
    assert fetch(dest, url="http://127.0.0.1:9/x", md5=md5(archive), progress=False) == got


def test_fetch_with_wrong_md5_leaves_nothing_behind(tmp_path, archive):
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="MD5"):
        fetch(dest, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert os.listdir(dest) == []


def test_fetch_replaces_an_existing_corrupt_archive(tmp_path, archive):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / ARCHIVE_NAME).write_bytes(b"half a download")
    fetch(dest, url=archive.as_uri(), md5=md5(archive), progress=False)
    assert (dest / ARCHIVE_NAME).read_bytes() == archive.read_bytes()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "file:///nonexistent/cifar.tar.gz", "nonsense://x"])
def test_fetch_unreachable_url_says_what_to_do(tmp_path, url):
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="could not reach") as err:
        fetch(dest, url=url, progress=False)
    assert "smoke" in str(err.value) and str(dest) in str(err.value)
    assert os.listdir(dest) == []


# ---------------------------------------------------------------------------------------------
# find_cifar100 and missing data
# ---------------------------------------------------------------------------------------------


def test_find_cifar100(tmp_path, archive):
    assert find_cifar100(tmp_path / "missing") is None
    assert find_cifar100(tmp_path) is None
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        (folder / name).write_bytes(b"")
    assert find_cifar100(tmp_path) is None  # incomplete folder
    (folder / "meta").write_bytes(b"")
    assert find_cifar100(tmp_path) == folder
    assert find_cifar100(folder) == folder
    (tmp_path / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    assert find_cifar100(tmp_path) == tmp_path / ARCHIVE_NAME  # the archive (MD5-checkable) wins
    assert find_cifar100(str(tmp_path / ARCHIVE_NAME)) == tmp_path / ARCHIVE_NAME


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="kdclaims data fetch"):
        load_cifar100(tmp_path / "nowhere")
    with pytest.raises(DataError, match="kdclaims data fetch"):
        load_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"")
    with pytest.raises(DataError, match="lacks test, meta"):
        load_cifar100(tmp_path)
