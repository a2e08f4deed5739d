"""The member cache: one safetensors file per trained member, keyed by the hash of its config.

Layout under the cache directory::

    members/<key[:2]>/<key>.safetensors   one trained member (beside its <key>.lock file)
    checkpoints/<key>.pt                  the training state of a member in flight (see checkpoint.py)
    quarantine/                           corrupt entries and checkpoints, moved aside, never used again
    .import-*/                            staging of a `kdclaims cache import` in progress

A member file holds the member's test logits (and, for a teacher, its training-set logits) plus a
JSON metadata string: the full config that was hashed, the seed, accuracy, loss, versions, device,
pid, host, wall time, a SHA-256 of every tensor and a SHA-256 of the metadata itself. safetensors
stores raw tensors and a header, so loading runs no code. Every load checks all of it: the tensors
against their checksums, the metadata against its own, the key against the file name and against the
hash of the recorded config. A corrupt entry is never returned (``CacheError`` names its path).

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
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from kdclaims.atomic import write_atomically, write_bytes_atomically
from kdclaims.checkpoint import load_checkpoint
from kdclaims.errors import CacheError
from kdclaims.spec import CACHE_SCHEMA, canonical_json, hash_config

SUFFIX = ".safetensors"
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
MEMBER_NAME_RE = re.compile(r"^members/([0-9a-f]{2})/([0-9a-f]{64})\.safetensors$")
TMP_RE = re.compile(r"^\.([0-9a-f]{64})-.*\.tmp$")
STAGING_PREFIX = ".import-"
EXPORT_FORMAT = "kdclaims-cache-export-v1"
MANIFEST_NAME = "manifest.json"
_MAX_ENTRY_BYTES = 1 << 32  # 4 GiB: far beyond any member (a CIFAR-100 teacher is ~25 MB)
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_HEADER_BYTES = 100 << 20

log = logging.getLogger("kdclaims")


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().cpu().numpy().tobytes()).hexdigest()


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
    key: str
    tensors: dict[str, torch.Tensor]  # "test_logits", and "train_logits" for teachers
    meta: dict  # see module docstring
    fresh: bool = False  # True when this process has just trained it

    @property
    def test_logits(self) -> torch.Tensor:
        return self.tensors["test_logits"]

    @property
    def train_logits(self) -> torch.Tensor:
        return self.tensors["train_logits"]


class CorruptEntry(CacheError):
    """A cache entry that must not be used; ``problem`` says what is wrong with it, in a few words."""

    HINT = "it is corrupt or was tampered with; delete it (or run `kdclaims cache verify`) to retrain that member"

    def __init__(self, where: str, problem: str):
        super().__init__(f"cache entry {where} {problem}: {self.HINT}")
        self.where, self.problem = where, problem


def _check_entry(key: str, where: str, raw_meta: str | None, tensors: dict[str, torch.Tensor]) -> MemberRecord:
    """Everything a member entry must satisfy; CorruptEntry naming ``where`` otherwise."""
    if raw_meta is None:
        raise CorruptEntry(where, "has no kdclaims metadata")
    try:
        meta = json.loads(raw_meta)
    except ValueError as exc:
        raise CorruptEntry(where, f"has unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CorruptEntry(where, "has metadata that is not a JSON object")
    if meta.get("meta_sha256") != meta_sha256(meta):
        raise CorruptEntry(where, "fails its metadata checksum")
    if meta.get("key") != key:
        raise CorruptEntry(where, f"holds key {str(meta.get('key'))[:64]}, not {key}")
    config = meta.get("config")
    if not isinstance(config, dict) or hash_config(config) != key:
        raise CorruptEntry(where, f"records a config whose hash is not its key {key}")
    digests = meta.get("sha256")
    if not isinstance(digests, dict) or set(digests) != set(tensors) or "test_logits" not in tensors:
        raise CorruptEntry(where, f"holds tensors {sorted(tensors)} but checksums for "
                                  f"{sorted(digests) if isinstance(digests, dict) else None}")
    for name in sorted(tensors):
        if tensor_sha256(tensors[name]) != digests[name]:
            raise CorruptEntry(where, f"fails its checksum ({name})")
    return MemberRecord(key, tensors, meta)


def read_entry(path: Path | str, key: str | None = None) -> MemberRecord:
    """Read and fully verify the member file at ``path`` (its key is its file name unless given)."""
    path = Path(path)
    key = key if key is not None else path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if not KEY_RE.match(key):
        raise CacheError(f"cache entry {path} is not named <64 hex digits>{SUFFIX}: move it out of the cache")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get("kdclaims")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CorruptEntry(str(path), f"is unreadable ({' '.join(str(exc).split())[:200]})") from exc
    return _check_entry(key, str(path), raw_meta, tensors)


def read_meta(path: Path | str) -> dict:
    """The metadata of a member file, unverified (cheap: the header only). ValueError if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["kdclaims"])
    except (SafetensorError, OSError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return meta


def verify_entry_bytes(key: str, data: bytes, where: str) -> MemberRecord:
    """Verify a member file held in memory (an archive member), exactly as ``read_entry`` would on disk."""
    try:
        if len(data) < 8:
            raise ValueError("shorter than a safetensors header")
        header_len = int.from_bytes(data[:8], "little")
        if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
            raise ValueError(f"header length {header_len} exceeds the file")
        header = json.loads(data[8:8 + header_len])
        raw_meta = (header.get("__metadata__") or {}).get("kdclaims") if isinstance(header, dict) else None
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise CacheError(f"{where} is not a readable cache entry ({' '.join(str(exc).split())[:200]})") from exc
    return _check_entry(key, where, raw_meta, tensors)


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

    def member_path(self, key: str) -> Path:
        return self.members_dir / key[:2] / f"{key}{SUFFIX}"

    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoints_dir / f"{key}.pt"

    def member_lock(self, key: str, timeout: float = -1) -> FileLock:
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        return FileLock(str(path.with_suffix(".lock")), timeout=timeout)

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

    def load(self, key: str) -> MemberRecord | None:
        """The cached member, or None if absent. A corrupt entry raises CacheError naming its path."""
        path = self.member_path(key)
        if not path.is_file():
            return None
        return read_entry(path, key)

    def store(self, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> MemberRecord:
        """Write atomically: a temporary file in the same directory, fsync, then rename into place."""
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
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
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return CacheError(f"no space left writing {path}: free disk space or point --cache-dir elsewhere")
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


def verify_cache(cache: Cache) -> VerifyReport:
    """Read every entry and checkpoint in full and check everything a load checks."""
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


def export_cache(cache: Cache, out: Path | str, populations: tuple[str, ...] = ()) -> dict:
    """Write the selected entries (default all; with a population, its teachers too) and a manifest into
    one tar.gz, atomically. Every entry is verified first: a corrupt one stops the export, named."""
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

    manifest = json.dumps({"format": EXPORT_FORMAT, "schema": CACHE_SCHEMA, "kdclaims": kdclaims.__version__,
                           "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "entries": listed}, indent=1, sort_keys=True).encode()

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
    return {"path": str(out), "entries": len(listed), "bytes": out.stat().st_size}


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


def _parse_manifest(archive: Path, data: bytes) -> dict[str, dict]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise _refuse(archive, f"{MANIFEST_NAME} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT \
            or not isinstance(manifest.get("entries"), list):
        raise _refuse(archive, f"{MANIFEST_NAME} is not a {EXPORT_FORMAT} manifest")
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


def import_archive(cache: Cache, archive: Path | str) -> dict:
    """Import an archive written by ``export_cache``, all or nothing.

    Nothing is extracted: members are read one by one into memory by name, and only names of the form
    ``members/xx/<key>.safetensors`` listed in the manifest are accepted (absolute paths, ``..``, links,
    devices and anything else make the whole archive refused). Each is checked against the manifest's
    SHA-256 and its own checksums, staged in a folder inside the cache, and only when the whole archive
    has passed are the entries renamed into place. Nothing is written outside the cache directory.
    """
    import tarfile
    import zlib

    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise CacheError(f"archive {archive} not found: give the .tar.gz that `kdclaims cache export` wrote")
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
                    entries: dict[str, dict] | None = None
                    seen: set[str] = set()
                    for member in tar:
                        if entries is None:
                            if member.name != MANIFEST_NAME or not member.isfile() or member.size > _MAX_MANIFEST_BYTES:
                                raise _refuse(archive, f"the first member is {member.name!r}, not {MANIFEST_NAME}: "
                                                       "not an archive written by `kdclaims cache export`")
                            entries = _parse_manifest(archive, tar.extractfile(member).read())
                            continue
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
                    if entries is None:
                        raise _refuse(archive, "it is empty")
                    unlisted = sorted(set(entries) - seen)
                    if unlisted:
                        raise _refuse(archive, f"{len(unlisted)} entries of the manifest are missing, e.g. "
                                               f"{unlisted[0]}")
            except CacheError:
                raise
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
                    raise cache._os_error(staging, exc) from exc
                raise CacheError(f"{archive}: not a readable gzip tar archive ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]}); nothing was imported") from exc
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
