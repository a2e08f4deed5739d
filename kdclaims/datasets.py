"""Dataset kinds. Every dataset is read through ``kdclaims.data.load_cifar100``, so it comes in
CIFAR-100's format; a dataset kind only says where that archive (or extracted folder) is, or makes it.

Adding a kind is one ``register_dataset`` call; a profile then names it in ``DatasetSpec(kind=...)``.
This module loads no torch (the reader and the generator are imported where they run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdclaims.errors import ConfigError, DataError
from kdclaims.registry import Registry
from kdclaims.spec import hash_config


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # a key of DATASETS: "cifar100" (the real archive in the data dir) or "synthetic" (generated)
    image_size: int = 32  # models see images average-pooled down to this size (32 = as stored)
    synthetic: Mapping[str, Any] = field(default_factory=dict)  # write_synthetic_cifar100 arguments

    def as_dict(self) -> dict:
        return {"kind": self.kind, "image_size": self.image_size, "synthetic": dict(self.synthetic)}


# locate(spec, data_dir, cache_root) -> the archive or folder to read
DatasetLocator = Callable[[DatasetSpec, Path, Path], Path]
DATASETS: Registry[DatasetLocator] = Registry("dataset kind")
get_dataset = DATASETS.get


def register_dataset(kind: str, locate: DatasetLocator) -> DatasetLocator:
    """``locate(spec, data_dir, cache_root)`` returns the path ``load_cifar100`` reads, or raises a
    DataError saying how to get the data. It runs in every pytest-xdist worker, so a locator that
    writes files must do it under a lock (see ``locate_synthetic``). ``del DATASETS[kind]`` removes one.
    """
    if not callable(locate):
        raise ConfigError(f"locate for dataset kind {kind!r} is not callable")
    return DATASETS.register(kind, locate)


def locate_cifar100(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """The real CIFAR-100, found in the data dir; never downloaded implicitly."""
    from kdclaims.data import ARCHIVE_NAME, find_cifar100

    found = find_cifar100(data_dir)
    if found is None:
        raise DataError(
            f"CIFAR-100 not found in {data_dir}: run `kdclaims data fetch --data-dir {data_dir}` "
            f"(or place {ARCHIVE_NAME} there, or set KDCLAIMS_DATA_DIR), "
            "or run the smoke profile instead (`--profile smoke`)"
        )
    return found


def locate_synthetic(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """A synthetic CIFAR-100-format archive, generated on first use under ``<cache>/data/`` (its
    folder is named by a hash of its arguments, so different synthetic datasets never collide)."""
    from filelock import FileLock

    from kdclaims.data import ARCHIVE_NAME, write_synthetic_cifar100

    folder = Path(cache_root) / "data" / f"synthetic-{hash_config(dict(spec.synthetic))[:12]}"
    archive = folder / ARCHIVE_NAME
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):  # one writer among xdist workers
            if not archive.is_file():
                write_synthetic_cifar100(folder, **spec.synthetic)
    return archive


register_dataset("cifar100", locate_cifar100)
register_dataset("synthetic", locate_synthetic)
