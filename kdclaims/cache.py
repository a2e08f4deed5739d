"""The member cache: one safetensors file per trained member, keyed by the hash of its config.

Layout: ``<cache dir>/members/<key[:2]>/<key>.safetensors``, beside a ``.lock`` file. The file holds
the member's test logits (and, for a teacher, its training-set logits) plus a JSON metadata string:
the full config that was hashed, the seed, accuracy, loss, versions, device, wall time, and a
SHA-256 of every tensor. safetensors stores raw tensors and a header, so loading runs no code.

Writes go to a temporary file in the same directory and are renamed into place, so a reader sees a
whole entry or none. ``member_lock`` is a FileLock (flock on POSIX: the OS drops it when its process
dies, so a killed trainer leaves no lock to wait on) that makes "train if missing" happen once
across processes: pytest-xdist workers, two CLI runs, Ray tasks on a shared filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file

from kdclaims.errors import CacheError

SUFFIX = ".safetensors"


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().cpu().numpy().tobytes()).hexdigest()


@dataclass
class MemberRecord:
    key: str
    tensors: dict[str, torch.Tensor]  # "test_logits", and "train_logits" for teachers
    meta: dict  # see module docstring

    @property
    def test_logits(self) -> torch.Tensor:
        return self.tensors["test_logits"]

    @property
    def train_logits(self) -> torch.Tensor:
        return self.tensors["train_logits"]


class Cache:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def member_path(self, key: str) -> Path:
        return self.root / "members" / key[:2] / f"{key}{SUFFIX}"

    def member_lock(self, key: str) -> FileLock:
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        return FileLock(str(path.with_suffix(".lock")))

    def has(self, key: str) -> bool:
        return self.member_path(key).is_file()

    def load(self, key: str) -> MemberRecord | None:
        """The cached member, or None if absent. A corrupt entry raises CacheError naming its path."""
        path = self.member_path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["kdclaims"])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"cache entry {path} is unreadable ({exc}); delete it to retrain that member") from exc
        for name, digest in meta.get("sha256", {}).items():
            if name not in tensors or tensor_sha256(tensors[name]) != digest:
                raise CacheError(f"cache entry {path} fails its checksum ({name}); delete it to retrain that member")
        if meta.get("key") != key:
            raise CacheError(f"cache entry {path} holds key {meta.get('key')}, not {key}; delete it to retrain")
        return MemberRecord(key, tensors, meta)

    def store(self, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> MemberRecord:
        """Write atomically: a temporary file in the same directory, fsync, then rename into place."""
        path = self.member_path(key)
        self._ensure_dir(path.parent)
        tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
        meta = dict(meta, key=key, sha256={name: tensor_sha256(t) for name, t in tensors.items()})
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=path.parent)
            os.close(fd)
            save_file(tensors, tmp, metadata={"kdclaims": json.dumps(meta, sort_keys=True)})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise self._os_error(path, exc) from exc
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return MemberRecord(key, tensors, meta)

    def _ensure_dir(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(directory, exc) from exc

    def _os_error(self, path: Path, exc: OSError) -> CacheError:
        if exc.errno == errno.ENOSPC:
            return CacheError(f"no space left writing {path}: free disk space or point --cache-dir elsewhere")
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return CacheError(f"cache directory {self.root} is not writable: use --cache-dir or KDCLAIMS_CACHE_DIR "
                              "to choose a writable one")
        return CacheError(f"cannot write cache entry {path}: {exc.strerror or exc}")
