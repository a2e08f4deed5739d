"""The member cache: one safetensors file per trained member, keyed by the hash of its config.

Layout under the cache directory::

    members/<key[:2]>/<key>.safetensors   one trained member (beside its <key>.lock file)
    checkpoints/<key>.pt                  the training state of a member in flight (see checkpoint.py)
    quarantine/                           corrupt entries and checkpoints, moved aside, never used again
    .import-*/                            staging of a `kdclaims cache import` in progress

A member file holds the member's test logits (and, for a teacher, its training-set logits) plus a
JSON metadata string: the full config that was hashed, the seed, accuracy, loss, versions, device,
pid, host, wall time, a SHA-256 of every tensor and a SHA-256 of the metadata itself. safetensors
stores raw tensors and a header, so loading runs no code. Every load checks all of it, cheapest first so
that a hostile file costs little: the file's size and its header (tensor names, float32, 2-D shapes, a
size limit) before any tensor byte is read; the metadata's fields and types, its checksum, the key
against the file name and against the hash of the recorded config; the tensors against their checksums;
and what the metadata derives from the logits (accuracy, loss, finite), recomputed where the loader knows
the dataset (``KnownDataset``), since checksums anyone can recompute prove nothing about them. A corrupt
entry is never returned (``CacheError`` names its path).

Writes go to a temporary file in the same directory (``.<key>-*.tmp``), are fsynced and renamed into
place, so a reader sees a whole entry or none, and a writer killed mid-write leaves only a ``.tmp``
that ``kdclaims cache gc`` removes. ``member_lock`` is a FileLock (flock on POSIX: the kernel drops it
when its process dies, so a killed trainer leaves no lock to wait on) that makes "train if missing"
happen once across processes: pytest-xdist workers, two CLI runs, Ray tasks on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from safetensors.numpy import save as save_safetensors_bytes  # the same bytes safetensors.torch writes

from kdclaims.arrays import as_numpy
from kdclaims.atomic import write_atomically, write_bytes_atomically
from kdclaims.errors import NO_SPACE_ERRNOS, CacheError, no_space_left
from kdclaims.spec import CACHE_SCHEMA, canonical_json, hash_config

SUFFIX = ".safetensors"
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
MEMBER_NAME_RE = re.compile(r"^members/([0-9a-f]{2})/([0-9a-f]{64})\.safetensors$")
TMP_RE = re.compile(r"^\.([0-9a-f]{64})-.*\.tmp$")
STAGING_PREFIX = ".import-"
EXPORT_FORMAT = "kdclaims-cache-export-v1"
MANIFEST_NAME = "manifest.json"
# A member stores logits, not weights: the largest kdclaims writes is a CIFAR-100 teacher, (50,000 train +
# 10,000 test) x 100 classes x 4 bytes = 24 MB plus a few KB of metadata. 64 MiB is 2.5 times that, and
# is what a reader that does not know the dataset (`cache verify`, `cache import`) accepts, so a forged
# header cannot make it read gigabytes; raise it for a dataset whose teacher logits are bigger.
_MAX_ENTRY_BYTES = 64 << 20
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_HEADER_BYTES = 1 << 20  # a real header (the config and metadata as JSON) is ~3 KB

log = logging.getLogger("kdclaims")


def tensor_sha256(tensor) -> str:
    """The SHA-256 of a tensor's (or numpy array's) raw bytes in row-major order."""
    return hashlib.sha256(np.ascontiguousarray(as_numpy(tensor)).tobytes()).hexdigest()


def meta_sha256(meta: dict) -> str:
    """The checksum of a member's metadata: every field but the checksum itself, as canonical JSON."""
    return hashlib.sha256(canonical_json({k: v for k, v in meta.items() if k != "meta_sha256"}).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def teacher_key_of(config: dict) -> str:
    """The key of the teacher a member is evaluated against: the seed-0 independent member of the same
    architecture, size, recipe, data and precision (what ``Workbench.member_key(teacher_spec(arch), 0)`` gives)."""
    return hash_config(dict(config, setup="independent", alpha=None, temperature=1.0, soft_targets=None, seed=0))


@dataclass
class MemberRecord:
    """One member as read from (or written to) the cache. Its logits are numpy arrays (``arrays``), so that a
    warm run never imports torch; ``tensors``, ``test_logits`` and ``train_logits`` are torch views of the same
    memory, for training and other torch code (they import torch)."""

    key: str
    arrays: dict[str, np.ndarray]  # "test_logits", and "train_logits" for teachers; float32
    meta: dict  # see module docstring
    fresh: bool = False  # True when this process has just trained it

    @property
    def test_logits_array(self) -> np.ndarray:
        return self.arrays["test_logits"]

    @property
    def tensors(self) -> dict:
        import torch

        return {name: torch.from_numpy(array) for name, array in self.arrays.items()}

    @property
    def test_logits(self):
        """The test logits as a torch tensor (a view of ``test_logits_array``)."""
        import torch

        return torch.from_numpy(self.arrays["test_logits"])

    @property
    def train_logits(self):
        """A teacher's training-set logits (KD's soft targets) as a torch tensor."""
        import torch

        return torch.from_numpy(self.arrays["train_logits"])


class CorruptEntry(CacheError):
    """A cache entry that must not be used; ``problem`` says what is wrong with it, in a few words."""

    HINT = "it is corrupt or was tampered with; delete it (or run `kdclaims cache verify`) to retrain that member"

    def __init__(self, where: str, problem: str):
        super().__init__(f"cache entry {where} {problem}: {self.HINT}")
        self.where, self.problem = where, problem


# What a member file may hold: logits, never weights. ``test_logits`` (N_test, C) always, ``train_logits``
# (N_train, C) for a teacher (KD's soft targets); float32 ("F32") both, as ``training.predict`` returns them.
TENSOR_NAMES = frozenset({"test_logits", "train_logits"})
TENSOR_DTYPE, TENSOR_ITEMSIZE = "F32", 4


@dataclass(frozen=True, eq=False)  # eq=False: a tensor field does not compare to one bool
class KnownDataset:
    """What the reader knows of the dataset a member was trained on (a ``Workbench`` knows it; ``cache verify``
    and ``cache import`` do not). With it the header's shapes are checked exactly and the metadata's
    derived fields (test accuracy, test loss, finite) are recomputed from the stored logits, never trusted."""

    test_labels: np.ndarray  # (N_test,) int64 (a torch tensor given here is read as numpy)
    num_classes: int
    num_train: int

    def __post_init__(self):
        object.__setattr__(self, "test_labels", as_numpy(self.test_labels))

    @property
    def num_test(self) -> int:
        return int(self.test_labels.shape[0])

    def max_entry_bytes(self) -> int:
        """The largest a member of this dataset can be: a teacher's two logit tensors plus its header."""
        return 8 + _MAX_HEADER_BYTES + TENSOR_ITEMSIZE * self.num_classes * (self.num_test + self.num_train)


class _Unreadable(ValueError):
    """The bytes are not a well-formed member file; each entry point words that its own way."""


@dataclass
class _Layout:
    """A member file's header, checked: its raw metadata and where each tensor's bytes lie."""

    raw_meta: str
    shapes: dict[str, tuple[int, int]]
    offsets: dict[str, tuple[int, int]]  # [begin, end) within the data that follows the header
    data_bytes: int


def _check_layout(header_bytes: bytes, file_size: int, known: KnownDataset | None) -> _Layout:
    """The safetensors header of a member, checked before a single tensor byte is read: names, dtypes,
    2-D shapes (exactly the dataset's where it is known), offsets that tile the data, and a data size
    that is what the shapes say and what the file holds. ``_Unreadable`` otherwise."""
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested 100,000 deep
        raise _Unreadable(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _Unreadable("header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    raw_meta = metadata.get("kdclaims") if isinstance(metadata, dict) else None
    if not isinstance(raw_meta, str):
        raise _Unreadable("it has no kdclaims metadata")
    if not header.keys() <= TENSOR_NAMES or "test_logits" not in header:
        raise _Unreadable(f"it holds tensors {sorted(header)[:4]}, not test_logits (and train_logits for a teacher)")
    shapes, offsets = {}, {}
    for name, info in header.items():
        info = info if isinstance(info, dict) else {}
        shape, span = info.get("shape"), info.get("data_offsets")
        if info.get("dtype") != TENSOR_DTYPE:
            raise _Unreadable(f"{name} is not {TENSOR_DTYPE} ({_short_json(info)})")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(type(s) is int and s >= 1 for s in shape)):
            raise _Unreadable(f"{name} has shape {_short_json(shape)}, not (examples, classes)")
        if not isinstance(span, list) or len(span) != 2 or not all(type(s) is int and s >= 0 for s in span):
            raise _Unreadable(f"{name} has data offsets {_short_json(span)}")
        if span[1] - span[0] != shape[0] * shape[1] * TENSOR_ITEMSIZE:
            raise _Unreadable(f"{name} of shape {shape} has {span[1] - span[0]} bytes of data")
        shapes[name], offsets[name] = (shape[0], shape[1]), (span[0], span[1])
    position = 0
    for begin, end in sorted(offsets.values()):
        if begin != position:
            raise _Unreadable("its tensors' data overlap or leave gaps")
        position = end
    if file_size != 8 + len(header_bytes) + position:
        raise _Unreadable(f"it is {file_size} bytes, its header describes {8 + len(header_bytes) + position}")
    classes = {c for _, c in shapes.values()}
    if len(classes) != 1:
        raise _Unreadable(f"its tensors disagree on the number of classes ({shapes})")
    if known is not None:
        expected = {"test_logits": (known.num_test, known.num_classes),
                    "train_logits": (known.num_train, known.num_classes)}
        for name, shape in shapes.items():
            if shape != expected[name]:
                raise _Unreadable(f"{name} has shape {list(shape)}, the dataset's is {list(expected[name])}")
    return _Layout(raw_meta, shapes, offsets, position)


def _short_json(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_layout(f, file_size: int, known: KnownDataset | None) -> _Layout:
    """Read a member's header from ``f`` (at its start) with bounded reads and check it."""
    limit = known.max_entry_bytes() if known is not None else _MAX_ENTRY_BYTES
    if file_size > limit:
        why = "the dataset's logits and a header" if known is not None else "any member"
        raise _Unreadable(f"it is {file_size} bytes, more than {why} can take ({limit})")
    prefix = f.read(8)
    if len(prefix) < 8:
        raise _Unreadable("it is shorter than a safetensors header")
    header_len = int.from_bytes(prefix, "little")
    if header_len > min(file_size - 8, _MAX_HEADER_BYTES):
        raise _Unreadable(f"header length {header_len} exceeds the file or {_MAX_HEADER_BYTES} bytes")
    header_bytes = f.read(header_len)
    if len(header_bytes) != header_len:
        raise _Unreadable("it ends inside its header")
    return _check_layout(header_bytes, file_size, known)


def _read_tensors(f, layout: _Layout) -> dict[str, np.ndarray]:
    """The tensors whose checked layout ``_read_layout`` returned, read from ``f`` (just past the header),
    as numpy arrays: no torch needed to read a member, and no code runs (raw bytes, never pickle)."""
    data = bytearray(layout.data_bytes)
    if f.readinto(data) != layout.data_bytes:
        raise _Unreadable("it ends inside its tensor data")
    tensors = {}
    for name, (begin, end) in layout.offsets.items():
        # safetensors stores little-endian; "<f4" reads it right on any machine (no copy on little-endian ones)
        array = np.frombuffer(data, dtype="<f4", count=(end - begin) // TENSOR_ITEMSIZE, offset=begin)
        tensors[name] = array.astype(np.float32, copy=False).reshape(layout.shapes[name])
    return tensors


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value, low: int = 0) -> bool:
    return type(value) is int and value >= low


# The metadata a member must carry (see the module docstring), field -> (check, what it must be). Derived
# fields (test_accuracy, test_loss, finite) are further checked against the logits in ``_check_derived``.
_REQUIRED_META = {
    "key": (lambda v: isinstance(v, str) and bool(KEY_RE.match(v)), "64 hex digits"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "population": (lambda v: isinstance(v, str) and v != "", "a name"),
    "seed": (_is_count, "an integer >= 0"),
    "profile": (lambda v: isinstance(v, str) and v != "", "a name"),
    "test_accuracy": (lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "test_loss": (lambda v: _is_number(v) and (math.isnan(v) or v >= 0.0), "a number >= 0 (NaN if diverged)"),
    "finite": (lambda v: isinstance(v, bool), "true or false"),
    "sha256": (lambda v: isinstance(v, dict) and all(isinstance(d, str) and KEY_RE.match(d) for d in v.values()),
               "an object of SHA-256s"),
    "meta_sha256": (lambda v: isinstance(v, str) and bool(KEY_RE.match(v)), "a SHA-256"),
}
# Recorded by every member kdclaims trains, read by reports and plans; older entries may lack some.
_OPTIONAL_META = {
    "wall_time_s": (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    "device_time_s": (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    "concurrent": (lambda v: _is_count(v, 1), "an integer >= 1"),
    "resumed_from_epoch": (lambda v: v is None or _is_count(v), "null or an epoch"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "device_name": (lambda v: isinstance(v, str), "a string"),
    "torch_threads": (lambda v: _is_count(v, 1), "an integer >= 1"),
    "versions": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                 "an object of strings"),
    "pid": (_is_count, "a process id"),
    "host": (lambda v: isinstance(v, str), "a string"),
    "created_at": (lambda v: isinstance(v, str), "a string"),
}


def _check_meta(key: str, where: str, raw_meta: str) -> dict:
    """The metadata of the member filed under ``key``: its schema, its checksum, its key and its config."""
    try:
        meta = json.loads(raw_meta)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested 100,000 deep
        raise CorruptEntry(where, f"has unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CorruptEntry(where, "has metadata that is not a JSON object")
    if meta.get("meta_sha256") != meta_sha256(meta):
        raise CorruptEntry(where, "fails its metadata checksum")
    for name, (ok, what) in _REQUIRED_META.items():
        if name not in meta:
            raise CorruptEntry(where, f"has no {name} in its metadata")
        if not ok(meta[name]):
            raise CorruptEntry(where, f"has {name} {_short_json(meta[name])} in its metadata, not {what}")
    for name, (ok, what) in _OPTIONAL_META.items():
        if name in meta and not ok(meta[name]):
            raise CorruptEntry(where, f"has {name} {_short_json(meta[name])} in its metadata, not {what}")
    if meta["key"] != key:
        raise CorruptEntry(where, f"holds key {meta['key']}, not {key}")
    config = meta["config"]
    if hash_config(config) != key:
        raise CorruptEntry(where, f"records a config whose hash is not its key {key}")
    if "seed" in config and config["seed"] != meta["seed"]:
        raise CorruptEntry(where, f"records seed {meta['seed']} but its config has seed {_short_json(config['seed'])}")
    return meta


# How far a recorded test loss may be from the one recomputed here: float32 sums reduced in another order
# (another torch version or thread count) differ in the last digits; the recomputed value is used anyway.
_LOSS_RTOL = 1e-4


def _check_derived(where: str, meta: dict, tensors: dict[str, np.ndarray], known: KnownDataset | None) -> dict:
    """What the metadata records that the logits determine, checked against them; the metadata to use.

    With the dataset known, test accuracy, test loss and the finite flag are recomputed from the test
    logits and the test labels, a mismatch makes the entry corrupt, and the recomputed values replace the
    recorded ones. Without it (``cache verify``, ``cache import``) only what the logits alone determine can
    be checked: the finite flag, the class count of the config, and an accuracy that is a whole number of
    test examples. ``verify`` says so."""
    from kdclaims import metrics

    logits = tensors["test_logits"]
    num_test, num_classes = logits.shape
    model = meta["config"].get("model")
    declared = model.get("num_classes") if isinstance(model, dict) else None
    if type(declared) is int and declared != num_classes:
        raise CorruptEntry(where, f"holds logits of {num_classes} classes, its config says {declared}")
    finite = bool(np.isfinite(logits).all())
    if meta["finite"] != finite:
        raise CorruptEntry(where, f"records finite={meta['finite']}, but its test logits are "
                                  f"{'all' if finite else 'not all'} finite")
    recorded_accuracy, recorded_loss = float(meta["test_accuracy"]), float(meta["test_loss"])
    if known is None:
        correct = recorded_accuracy * num_test
        if abs(correct - round(correct)) > 1e-6 * num_test:
            raise CorruptEntry(where, f"records test accuracy {recorded_accuracy!r}, which is no whole number of "
                                      f"its {num_test} test examples")
        return meta
    labels = known.test_labels
    accuracy = metrics.test_accuracy(logits, labels).item()
    loss = metrics.test_loss(logits, labels).item()
    if abs(accuracy - recorded_accuracy) > 0.5 / num_test:
        raise CorruptEntry(where, f"records test accuracy {recorded_accuracy:.6g}, its logits give {accuracy:.6g}")
    same_loss = (math.isnan(loss) and math.isnan(recorded_loss)) or loss == recorded_loss or (
        math.isfinite(loss) and abs(loss - recorded_loss) <= _LOSS_RTOL * max(abs(loss), 1e-6))
    if not same_loss:
        raise CorruptEntry(where, f"records test loss {recorded_loss:.6g}, its logits give {loss:.6g}")
    return dict(meta, test_accuracy=accuracy, test_loss=loss, finite=finite)


def _read_member(f, file_size: int, key: str, where: str, known: KnownDataset | None,
                 unreadable: Callable[[str], CacheError]) -> MemberRecord:
    """Everything a member must satisfy, in the order that keeps a hostile file cheap: the size and the
    header (bounded reads), then the metadata's schema and checksums, and only then the tensors, their
    checksums and what the metadata derives from them. ``unreadable(reason)`` words a malformed file."""
    try:
        layout = _read_layout(f, file_size, known)
    except _Unreadable as exc:
        raise unreadable(str(exc)) from exc
    meta = _check_meta(key, where, layout.raw_meta)
    digests = meta["sha256"]
    if set(digests) != set(layout.shapes):
        raise CorruptEntry(where, f"holds tensors {sorted(layout.shapes)} but checksums for {sorted(digests)}")
    try:
        tensors = _read_tensors(f, layout)
    except _Unreadable as exc:
        raise unreadable(str(exc)) from exc
    for name in sorted(tensors):
        if tensor_sha256(tensors[name]) != digests[name]:
            raise CorruptEntry(where, f"fails its checksum ({name})")
    return MemberRecord(key, tensors, _check_derived(where, meta, tensors, known))


def read_entry(path: Path | str, key: str | None = None, known: KnownDataset | None = None) -> MemberRecord:
    """Read and fully verify the member file at ``path`` (its key is its file name unless given); with the
    dataset ``known``, its shapes and derived metadata are checked against it too (``KnownDataset``)."""
    path = Path(path)
    key = key if key is not None else path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if not KEY_RE.match(key):
        raise CacheError(f"cache entry {path} is not named <64 hex digits>{SUFFIX}: move it out of the cache")

    def unreadable(reason: str) -> CacheError:
        return CorruptEntry(str(path), f"is unreadable ({' '.join(reason.split())[:200]})")

    try:
        with open(path, "rb") as f:
            return _read_member(f, os.fstat(f.fileno()).st_size, key, str(path), known, unreadable)
    except OSError as exc:
        raise unreadable(exc.strerror or str(exc)) from exc


def read_meta(path: Path | str) -> dict:
    """The metadata of a member file, unverified (cheap: the header only, read with bounded reads).
    ValueError if unreadable."""
    try:
        with open(path, "rb") as f:
            layout = _read_layout(f, os.fstat(f.fileno()).st_size, None)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from exc
    try:
        meta = json.loads(layout.raw_meta)
    except RecursionError as exc:
        raise ValueError("metadata is nested too deeply") from exc
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return meta


def verify_entry_bytes(key: str, data: bytes, where: str, known: KnownDataset | None = None) -> MemberRecord:
    """Verify a member file held in memory (an archive member), exactly as ``read_entry`` would on disk."""

    def unreadable(reason: str) -> CacheError:
        return CacheError(f"{where} is not a readable cache entry ({' '.join(reason.split())[:200]})")

    return _read_member(io.BytesIO(data), len(data), key, where, known, unreadable)


class MemberLock:
    """A member's FileLock (flock on POSIX) whose failures are one-line CacheErrors naming the lock file: a
    lock replaced by a symlink (never followed: ELOOP), by a folder, or one that cannot be opened.
    ``Timeout`` (a lock another process holds past ``timeout``) passes through unchanged."""

    def __init__(self, cache: "Cache", path: Path, timeout: float = -1):
        self.cache, self.path = cache, path
        self._lock = FileLock(str(path), timeout=timeout)

    def acquire(self) -> "MemberLock":
        try:
            self._lock.acquire()
        except Timeout:
            raise
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise self.cache._os_error(self.path, exc) from exc
            raise CacheError(f"cannot take the lock {self.path} ({exc.strerror or exc}): it must be a regular file "
                             "kdclaims can create; delete it, and the next run makes a new one") from exc
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "MemberLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


class Cache:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()
        self._writable_checked = False

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    # -- paths -----------------------------------------------------------------------------------

    @property
    def members_dir(self) -> Path:
        return self.root / "members"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def datasets_dir(self) -> Path:
        """Where a full load of a dataset records its summary (``kdclaims.data.read_dataset_summary``)."""
        return self.root / "datasets"

    def member_path(self, key: str) -> Path:
        return self.members_dir / key[:2] / f"{key}{SUFFIX}"

    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoints_dir / f"{key}.pt"

    def member_lock(self, key: str, timeout: float = -1) -> MemberLock:
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        return MemberLock(self, path.with_suffix(".lock"), timeout)

    def entries(self) -> list[Path]:
        """Every member file, sorted."""
        if not self.members_dir.is_dir():
            return []
        return sorted(p for p in self.members_dir.glob(f"*/*{SUFFIX}") if p.is_file())

    def checkpoints(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("*.pt") if p.is_file())

    def quarantined(self) -> list[Path]:
        if not self.quarantine_dir.is_dir():
            return []
        return sorted(p for p in self.quarantine_dir.iterdir() if p.is_file())

    def tmp_leftovers(self) -> list[Path]:
        found: list[Path] = []
        for directory in (self.members_dir, self.checkpoints_dir):
            if directory.is_dir():
                found += [p for p in directory.rglob(".*.tmp") if p.is_file()]
        return sorted(found)

    def staging_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(f"{STAGING_PREFIX}*") if p.is_dir())

    # -- members ---------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return self.member_path(key).is_file()

    def load(self, key: str, known: KnownDataset | None = None) -> MemberRecord | None:
        """The cached member, or None if absent. A corrupt entry raises CacheError naming its path; with the
        dataset ``known``, so does one whose shapes or derived metadata do not match it (``KnownDataset``)."""
        path = self.member_path(key)
        if not path.is_file():
            return None
        return read_entry(path, key, known)

    def store(self, key: str, tensors: dict, meta: dict) -> MemberRecord:
        """Write atomically: a temporary file in the same directory, fsync, then rename into place.
        ``tensors``: torch tensors or numpy arrays (float32; stored as they are)."""
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        tensors = {name: np.ascontiguousarray(as_numpy(t)) for name, t in tensors.items()}
        meta = dict(meta, key=key, sha256={name: tensor_sha256(t) for name, t in tensors.items()})
        meta.pop("meta_sha256", None)
        meta = json.loads(json.dumps(meta))  # exactly what a reader will see (tuples as lists, ...)
        meta["meta_sha256"] = meta_sha256(meta)
        # Serialised in memory and written by us: safetensors' own save_file would stage the bytes in a
        # temporary file of its own naming, which a kill could leave behind unrecognised.
        data = save_safetensors_bytes(tensors, metadata={"kdclaims": json.dumps(meta, sort_keys=True)})
        try:
            write_bytes_atomically(path, data, f".{key}-")
        except OSError as exc:
            raise self._os_error(path, exc) from exc
        return MemberRecord(key, tensors, meta)

    def store_bytes(self, key: str, data: bytes) -> Path:
        """Place a verified member file's exact bytes (an import), atomically."""
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        try:
            write_bytes_atomically(path, data, f".{key}-")
        except OSError as exc:
            raise self._os_error(path, exc) from exc
        return path

    def quarantine(self, path: Path, problem: str = "is corrupt", then: str = "") -> Path:
        """Move a corrupt file out of use, into ``quarantine/``, keeping it as evidence; return where it went.
        One warning line names the file, its ``problem``, where it went and what happens ``then``."""
        self._ensure_dir(self.quarantine_dir)
        target = self.quarantine_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return target  # another process moved it first
        except OSError as exc:
            raise self._os_error(path, exc) from exc
        log.warning("kdclaims: warning: cache entry %s %s: moved to %s%s", path, problem, target,
                    f", {then}" if then else "")
        return target

    # -- usability -------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail now, before any training, if the cache cannot take a new entry.

        A probe file is created, written, fsynced and removed in ``members/``: permission bits alone do
        not say it (root ignores them; a read-only mount or a full disk does not show in them).
        """
        if self._writable_checked:
            return
        self._ensure_dir(self.members_dir)
        probe = None
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=self.members_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(b"kdclaims write probe\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise self._os_error(self.members_dir, exc) from exc
        finally:
            if probe is not None:
                with contextlib.suppress(OSError):
                    os.unlink(probe)
        self._writable_checked = True

    def _ensure_dir(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(directory, exc) from exc

    def _os_error(self, path: Path, exc: OSError) -> CacheError:
        fix = "use --cache-dir or KDCLAIMS_CACHE_DIR to choose a writable one"
        if exc.errno in NO_SPACE_ERRNOS:
            return no_space_left(path)
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return CacheError(f"cache directory {self.root} is not writable: {fix}")
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            target = Path(exc.filename) if exc.filename else Path(path)
            blocker = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), target)
            return CacheError(f"cache directory {self.root} cannot be used: {blocker} is a file, not a directory; "
                              f"{fix}")
        return CacheError(f"cannot write cache entry {path}: {exc.strerror or exc}")

    # -- maintenance -----------------------------------------------------------------------------

    def lock_is_free(self, key: str) -> bool:
        """Whether no process holds ``key``'s lock now (taking and dropping it at once)."""
        try:
            with self.member_lock(key, timeout=0):
                return True
        except Timeout:
            return False


# ---------------------------------------------------------------------------------------------
# verify, info, gc, export, import
# ---------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    good: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    checkpoints_good: list[Path] = field(default_factory=list)
    checkpoints_bad: list[tuple[Path, str]] = field(default_factory=list)
    # What verify cannot check without the dataset, which a run (knowing it) checks on every load.
    unchecked: str = ("test accuracy and loss were checked for consistency only (no test labels here to "
                      "recompute them from); a run recomputes them from the logits on every load")


def verify_cache(cache: Cache) -> VerifyReport:
    """Read every entry and checkpoint in full and check everything a load checks without the dataset
    (``KnownDataset``): each entry's header before its tensors, its metadata's schema and checksums, its
    tensors' checksums and what the logits alone determine. ``VerifyReport.unchecked`` says what is left."""
    from kdclaims.checkpoint import load_checkpoint  # torch's own format: imported where checkpoints are read

    report = VerifyReport()
    for path in cache.entries():
        try:
            if path.parent.name != path.name[:2]:
                raise CacheError(f"cache entry {path} is in folder {path.parent.name}/, not {path.name[:2]}/: "
                                 "it is never found there; move or delete it")
            read_entry(path)
            report.good.append(path)
        except CacheError as exc:
            report.bad.append((path, str(exc)))
    for path in cache.checkpoints():
        try:
            load_checkpoint(path)
            report.checkpoints_good.append(path)
        except CacheError as exc:
            report.checkpoints_bad.append((path, str(exc)))
    return report


def cache_info(cache: Cache) -> dict:
    """What the cache holds, from each entry's metadata (its header only: nothing is verified)."""
    by: dict[str, dict[str, int]] = {"profile": {}, "arch": {}, "setup": {}, "population": {}, "schema": {}}
    size = 0
    unreadable = 0
    for path in cache.entries():
        size += path.stat().st_size
        try:
            meta = read_meta(path)
        except ValueError:
            unreadable += 1
            continue
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        values = {"profile": meta.get("profile"), "arch": config.get("arch"), "setup": config.get("setup"),
                  "population": meta.get("population"), "schema": config.get("schema")}
        for field_name, value in values.items():
            name = str(value)
            by[field_name][name] = by[field_name].get(name, 0) + 1

    def files(paths: list[Path]) -> dict:
        return {"count": len(paths), "bytes": sum(p.stat().st_size for p in paths if p.exists())}

    return {
        "root": str(cache.root),
        "entries": len(cache.entries()),
        "bytes": size,
        "unreadable_metadata": unreadable,
        "by": {k: dict(sorted(v.items())) for k, v in by.items()},
        "checkpoints": files(cache.checkpoints()),
        "quarantine": files(cache.quarantined()),
        "tmp_leftovers": files(cache.tmp_leftovers()),
        "dataset_summaries": files(sorted(cache.datasets_dir.glob("*.json")) if cache.datasets_dir.is_dir() else []),
        "current_schema": CACHE_SCHEMA,
    }


@dataclass
class GcItem:
    path: Path
    reason: str
    size: int


def gc_plan(cache: Cache) -> tuple[list[GcItem], list[GcItem]]:
    """(what gc removes, what it keeps because a live process is using it)."""
    remove: list[GcItem] = []
    busy: list[GcItem] = []

    def size(p: Path) -> int:
        try:
            return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        except OSError:
            return 0

    for path in cache.tmp_leftovers():
        match = TMP_RE.match(path.name)
        item = GcItem(path, "temporary file of an interrupted write", size(path))
        (remove if match is None or cache.lock_is_free(match.group(1)) else busy).append(item)
    for path in cache.checkpoints():
        key = path.stem
        if KEY_RE.match(key) and cache.has(key):
            item = GcItem(path, "checkpoint of a member that is already stored", size(path))
            (remove if cache.lock_is_free(key) else busy).append(item)
    if cache.members_dir.is_dir():  # staged by safetensors' own save_file, as kdclaims <= 0.1 wrote entries
        for path in cache.members_dir.glob("*/.tmp*"):
            if path.is_file() and not TMP_RE.match(path.name) and time.time() - path.stat().st_mtime > 3600:
                remove.append(GcItem(path, "temporary file of an interrupted write (over an hour old)", size(path)))
    for path in cache.quarantined():
        remove.append(GcItem(path, "quarantined (corrupt) file", size(path)))
    for path in cache.entries():
        try:
            schema = (read_meta(path).get("config") or {}).get("schema")
        except (ValueError, AttributeError):
            continue  # unreadable: `verify` reports it and a run quarantines it; gc removes only what it understands
        if schema != CACHE_SCHEMA:
            remove.append(GcItem(path, f"entry of cache schema {schema!r}, not the current {CACHE_SCHEMA!r}", size(path)))
    for path in cache.staging_dirs():
        try:
            with FileLock(str(path / ".lock"), timeout=0):
                free = True
        except Timeout:
            free = False
        except OSError:
            free = True
        (remove if free else busy).append(GcItem(path, "staging folder of an interrupted import", size(path)))
    return remove, busy


def gc_remove(items: list[GcItem]) -> int:
    freed = 0
    for item in items:
        try:
            if item.path.is_dir():
                shutil.rmtree(item.path)
            else:
                item.path.unlink()
            freed += item.size
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CacheError(f"cannot remove {item.path}: {exc.strerror or exc}; check the cache's permissions") from exc
    return freed


def _selected_entries(cache: Cache, populations: tuple[str, ...]) -> list[Path]:
    entries = cache.entries()
    if not populations:
        return entries
    known: dict[str, list[Path]] = {}
    configs: dict[Path, dict] = {}
    for path in entries:
        try:
            meta = read_meta(path)
        except ValueError as exc:
            raise CacheError(f"cache entry {path} is unreadable ({exc}): run `kdclaims cache verify`") from exc
        known.setdefault(str(meta.get("population")), []).append(path)
        configs[path] = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    missing = [p for p in populations if p not in known]
    if missing:
        raise CacheError(f"no entries of population {', '.join(map(repr, missing))} in {cache.root}; populations "
                         f"there: {', '.join(sorted(known)) or 'none'}")
    chosen = {p for name in populations for p in known[name]}
    for path in list(chosen):  # each member's teacher: its test logits are what every metric compares with
        teacher = cache.member_path(teacher_key_of(configs[path]))
        if teacher.is_file():
            chosen.add(teacher)
    return sorted(chosen)


def export_cache(cache: Cache, out: Path | str, populations: tuple[str, ...] = (),
                 sign_with: SigningKey | None = None) -> dict:
    """Write the selected entries (default all; with a population, its teachers too) and a manifest into
    one tar.gz, atomically. Every entry is verified first: a corrupt one stops the export, named. With
    ``sign_with``, the manifest carries an HMAC-SHA-256 of itself under that key (see ``SIGNATURE_FIELD``)."""
    import tarfile

    out = Path(out).expanduser()
    selected = _selected_entries(cache, tuple(populations))
    if not selected:
        raise CacheError(f"nothing to export: {cache.root} holds no cache entries")
    listed = []
    for path in selected:
        data = path.read_bytes()
        record = verify_entry_bytes(path.name[: -len(SUFFIX)], data, f"cache entry {path}")
        listed.append({"key": record.key, "path": f"members/{record.key[:2]}/{record.key}{SUFFIX}",
                       "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                       "population": record.meta.get("population"), "seed": record.meta.get("seed"),
                       "profile": record.meta.get("profile")})
    import kdclaims

    document = {"format": EXPORT_FORMAT, "schema": CACHE_SCHEMA, "kdclaims": kdclaims.__version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "entries": listed}
    if sign_with is not None:
        document[SIGNATURE_FIELD] = {"algorithm": SIGNATURE_ALGORITHM, "mac": _manifest_mac(document, sign_with)}
    manifest = _manifest_bytes(document)

    def info(name: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = size, 0o644, int(time.time()), 0, 0, "", ""
        return ti

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
            for path, entry in zip(selected, listed):
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise CacheError(f"cache entry {path} changed during the export: run it again")
                tar.addfile(info(entry["path"], len(data)), io.BytesIO(data))

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, write, f".{out.name}-")
    except OSError as exc:
        raise CacheError(f"cannot write {out}: {exc.strerror or exc}; choose a writable path with free space") from exc
    return {"path": str(out), "entries": len(listed), "bytes": out.stat().st_size, "signed": sign_with is not None}


# Signing: `cache export --sign KEYFILE` adds an HMAC-SHA-256 of the manifest, keyed with the file's bytes,
# and `cache import --require-signature KEYFILE` refuses an archive whose manifest it does not authenticate.
# The manifest lists every entry's SHA-256 and size, and each entry is checked against them, so the one MAC
# covers every byte that is imported. Plain SHA-256s (all an unsigned archive has) anyone can recompute.
SIGNATURE_FIELD = "signature"
SIGNATURE_ALGORITHM = "hmac-sha256"
_MIN_KEY_BYTES = 16  # 128 bits: HMAC-SHA-256's security needs a key at least that random
_MAX_KEY_BYTES = 1 << 16  # a key file holds a few dozen random bytes; anything huge is the wrong file


@dataclass(frozen=True, repr=False)  # repr=False: the key's bytes never appear in a log or a traceback
class SigningKey:
    path: Path
    secret: bytes


def read_signing_key(path: Path | str) -> SigningKey:
    """The raw bytes of a key file (at least 16: e.g. ``head -c 32 /dev/urandom > KEYFILE``); CacheError otherwise."""
    path = Path(path).expanduser()
    make = f"make one with `head -c 32 /dev/urandom > {path}` and share it only with whoever must import"
    try:
        with open(path, "rb") as f:
            secret = f.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise CacheError(f"cannot read the signing key {path}: {exc.strerror or exc}; {make}") from exc
    if len(secret) < _MIN_KEY_BYTES:
        size = "empty" if not secret else f"only {len(secret)} bytes"
        raise CacheError(f"signing key {path} is {size}: a key needs at least {_MIN_KEY_BYTES} random bytes; {make}")
    if len(secret) > _MAX_KEY_BYTES:
        raise CacheError(f"signing key {path} is over {_MAX_KEY_BYTES} bytes, not a key file; {make}")
    return SigningKey(path, secret)


def _manifest_bytes(manifest: dict) -> bytes:
    """The manifest as written into an archive, and (without its signature) as signed."""
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def _manifest_mac(manifest: dict, key: SigningKey) -> str:
    unsigned = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return hmac.new(key.secret, _manifest_bytes(unsigned), hashlib.sha256).hexdigest()


def _check_signature(archive: Path, manifest: dict, key: SigningKey) -> None:
    signature = manifest.get(SIGNATURE_FIELD)
    if signature is None:
        raise _refuse(archive, f"it is not signed, and --require-signature {key.path} asks for a signature "
                               "(export it with `kdclaims cache export --sign KEYFILE`)")
    mac = signature.get("mac") if isinstance(signature, dict) else None
    if not isinstance(signature, dict) or signature.get("algorithm") != SIGNATURE_ALGORITHM or not isinstance(mac, str):
        raise _refuse(archive, f"its signature is not an {SIGNATURE_ALGORITHM} signature")
    if not hmac.compare_digest(mac.encode(), _manifest_mac(manifest, key).encode()):
        raise _refuse(archive, f"its signature does not match the key {key.path} (signed with another key, or "
                               "the manifest was altered)")


def _refuse(archive: Path, what: str) -> CacheError:
    return CacheError(f"{archive}: {what}; refusing the whole archive (nothing was imported)")


def _check_member_name(archive: Path, member, entries: dict[str, dict]) -> dict:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, f"member {name!r} has an absolute path")
    if ".." in parts:
        raise _refuse(archive, f"member {name!r} climbs out of the cache with '..'")
    if not member.isfile():
        kind = ("symlink" if member.issym() else "hard link" if member.islnk() else "directory" if member.isdir()
                else "device" if member.isdev() else "fifo" if member.isfifo() else "non-regular file")
        raise _refuse(archive, f"member {name!r} is a {kind}, not a regular file")
    match = MEMBER_NAME_RE.match(name)
    if match is None or match.group(1) != match.group(2)[:2]:
        raise _refuse(archive, f"member {name!r} is not a cache entry (members/xx/<64 hex>{SUFFIX})")
    entry = entries.get(name)
    if entry is None:
        raise _refuse(archive, f"member {name!r} is not listed in its {MANIFEST_NAME}")
    if member.size > _MAX_ENTRY_BYTES or member.size != entry["size"]:
        raise _refuse(archive, f"member {name!r} has {member.size} bytes, the manifest says {entry['size']}")
    return entry


def _parse_manifest(archive: Path, data: bytes, signing_key: SigningKey | None = None) -> dict[str, dict]:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested 100,000 deep
        raise _refuse(archive, f"{MANIFEST_NAME} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT \
            or not isinstance(manifest.get("entries"), list):
        raise _refuse(archive, f"{MANIFEST_NAME} is not a {EXPORT_FORMAT} manifest")
    if signing_key is not None:
        _check_signature(archive, manifest, signing_key)
    entries: dict[str, dict] = {}
    for entry in manifest["entries"]:
        ok = (isinstance(entry, dict) and isinstance(entry.get("key"), str) and KEY_RE.match(entry["key"])
              and entry.get("path") == f"members/{entry['key'][:2]}/{entry['key']}{SUFFIX}"
              and isinstance(entry.get("sha256"), str) and KEY_RE.match(entry["sha256"])
              and type(entry.get("size")) is int and 0 < entry["size"] <= _MAX_ENTRY_BYTES)
        if not ok:
            raise _refuse(archive, f"{MANIFEST_NAME} has a malformed entry {json.dumps(entry)[:120]}")
        if entry["path"] in entries:
            raise _refuse(archive, f"{MANIFEST_NAME} lists {entry['path']} twice")
        entries[entry["path"]] = entry
    return entries


def _read_manifest(archive: Path, tar, members, signing_key: SigningKey | None) -> dict[str, dict]:
    """The entries listed by the archive's first member (the next of the iterator ``members`` over
    ``tar``), which must be its manifest, signed under ``signing_key`` when one is given."""
    member = next(members, None)
    if member is None:
        raise _refuse(archive, "it is empty")
    if member.name != MANIFEST_NAME or not member.isfile() or member.size > _MAX_MANIFEST_BYTES:
        raise _refuse(archive, f"the first member is {member.name!r}, not {MANIFEST_NAME}: "
                               "not an archive written by `kdclaims cache export`")
    return _parse_manifest(archive, tar.extractfile(member).read(), signing_key)


def _unreadable_archive(archive: Path, exc: BaseException) -> CacheError:
    return CacheError(f"{archive}: not a readable gzip tar archive ({type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:200]}); nothing was imported")


def import_archive(cache: Cache, archive: Path | str, require_signature: SigningKey | None = None) -> dict:
    """Import an archive written by ``export_cache``, all or nothing.

    Nothing is extracted: members are read one by one into memory by name, and only names of the form
    ``members/xx/<key>.safetensors`` listed in the manifest are accepted (absolute paths, ``..``, links,
    devices and anything else make the whole archive refused). Each is checked against the manifest's
    SHA-256 and everything a load checks (``verify_entry_bytes``), staged in a folder inside the cache, and
    only when the whole archive has passed are the entries renamed into place. Nothing is written outside
    the cache directory. With ``require_signature``, an archive whose manifest that key does not
    authenticate is refused before anything at all is written.
    """
    import tarfile
    import zlib

    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise CacheError(f"archive {archive} not found: give the .tar.gz that `kdclaims cache export` wrote")
    if require_signature is not None:  # checked here, before the staging folder exists, and again below
        try:
            with tarfile.open(archive, "r|gz") as tar:
                _read_manifest(archive, tar, iter(tar), require_signature)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _unreadable_archive(archive, exc) from exc
    cache._ensure_dir(cache.root)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=cache.root))
    except OSError as exc:
        raise cache._os_error(cache.root, exc) from exc
    counts = {"imported": 0, "already_present": 0, "replaced_corrupt": 0}
    try:
        with FileLock(str(staging / ".lock")):
            staged: list[tuple[str, Path]] = []
            try:
                with tarfile.open(archive, "r|gz") as tar:
                    members = iter(tar)
                    entries = _read_manifest(archive, tar, members, require_signature)
                    seen: set[str] = set()
                    for member in members:
                        entry = _check_member_name(archive, member, entries)
                        if member.name in seen:
                            raise _refuse(archive, f"member {member.name!r} appears twice")
                        seen.add(member.name)
                        data = tar.extractfile(member).read()
                        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                            raise _refuse(archive, f"member {member.name!r} does not match its SHA-256 in the "
                                                   "manifest (tampered or corrupt)")
                        try:
                            verify_entry_bytes(entry["key"], data, f"member {member.name!r}")
                        except CacheError as exc:
                            raise _refuse(archive, str(exc)) from exc
                        target = staging / f"{entry['key']}{SUFFIX}"
                        target.write_bytes(data)  # scratch: stored atomically below, once all has passed
                        staged.append((entry["key"], target))
                    unlisted = sorted(set(entries) - seen)
                    if unlisted:
                        raise _refuse(archive, f"{len(unlisted)} entries of the manifest are missing, e.g. "
                                               f"{unlisted[0]}")
            except CacheError:
                raise
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
                    raise cache._os_error(staging, exc) from exc
                raise _unreadable_archive(archive, exc) from exc
            for key, source in staged:
                with cache.member_lock(key):
                    path = cache.member_path(key)
                    if path.is_file():
                        try:
                            read_entry(path, key)
                            counts["already_present"] += 1
                            continue
                        except CorruptEntry as exc:
                            cache.quarantine(path, exc.problem, "replacing it with the imported one")
                            counts["replaced_corrupt"] += 1
                    cache.store_bytes(key, source.read_bytes())
                    counts["imported"] += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
