"""Dataset kinds. Every dataset is read through ``kdclaims.data.load_dataset`` (CIFAR's python format, either
layout, or a plain ``.npz``); a dataset kind only says where that file or folder is, or makes it.

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
    kind: str  # a key of DATASETS: "cifar100", "cifar", "npz" (files), "synthetic", "digits" (made here)
    # Models see images average-pooled down to this size; None: as stored (it must divide the stored size).
    image_size: int | None = None
    synthetic: Mapping[str, Any] = field(default_factory=dict)  # write_synthetic_cifar100 arguments
    # "cifar" and "npz": the file or folder to read (a profile file's relative path is resolved against
    # the file's folder); None: --data-dir names it.
    path: str | None = None

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "image_size": self.image_size, "synthetic": dict(self.synthetic)}
        if self.path is not None:
            out["path"] = self.path
        return out


# locate(spec, data_dir, cache_root) -> the archive or folder to read
DatasetLocator = Callable[[DatasetSpec, Path, Path], Path]


@dataclass(frozen=True)
class DatasetKind:
    """A registered dataset kind: how to locate (or make) its data, and whether --data-dir means anything to it."""

    name: str
    locate: DatasetLocator
    uses_data_dir: bool = True  # False: the data is made (synthetic, digits), so --data-dir is refused

    def __call__(self, spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
        return self.locate(spec, data_dir, cache_root)


DATASETS: Registry[DatasetKind] = Registry("dataset kind")
get_dataset = DATASETS.get


def register_dataset(kind: str, locate: DatasetLocator, *, uses_data_dir: bool = True) -> DatasetKind:
    """``locate(spec, data_dir, cache_root)`` returns the path ``kdclaims.data.load_dataset`` reads, or raises
    a DataError saying how to get the data. It runs in every pytest-xdist worker, so a locator that
    writes files must do it under a lock (see ``locate_synthetic``). ``del DATASETS[kind]`` removes one.
    ``uses_data_dir=False``: the kind makes its data, and a --data-dir given with it is refused.
    """
    if not callable(locate):
        raise ConfigError(f"locate for dataset kind {kind!r} is not callable")
    return DATASETS.register(kind, DatasetKind(kind, locate, uses_data_dir))


def check_data_dir(spec: DatasetSpec, data_dir, profile_name: str) -> None:
    """Refuse a --data-dir the profile's dataset does not read (it would be silently ignored)."""
    if data_dir is None:
        return
    if not get_dataset(spec.kind).uses_data_dir:
        raise ConfigError(f"profile {profile_name!r} uses {spec.kind} data made by kdclaims, so --data-dir "
                          f"{data_dir} would be ignored: drop --data-dir, or use a profile that reads a dataset")
    if spec.path is not None:
        raise ConfigError(f"profile {profile_name!r} names its data ({spec.path}), so --data-dir {data_dir} would be "
                          "ignored: drop --data-dir, or remove dataset.path from the profile file")


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
    from kdclaims.data import ARCHIVE_NAME, write_synthetic_cifar100
    folder = Path(cache_root) / "data" / f"synthetic-{hash_config(dict(spec.synthetic))[:12]}"
    return _generated_once(folder / ARCHIVE_NAME, lambda: write_synthetic_cifar100(folder, **spec.synthetic))


def _generated_once(target: Path, write) -> Path:
    """``target``, made by ``write()`` the first time it is asked for, by one writer among xdist workers."""
    from filelock import FileLock

    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / ".lock")):
            if not target.is_file():
                write()
    return target


def locate_file(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """Your own dataset ("npz" or "cifar" kind): the profile's dataset.path, else --data-dir. A folder given
    for an .npz dataset must hold exactly one .npz."""
    target = Path(spec.path).expanduser() if spec.path else Path(data_dir)
    if not target.exists():
        raise DataError(f"{spec.kind} dataset not found at {target}: set dataset.path in the profile file or give "
                        "--data-dir")
    if spec.kind == "npz" and target.is_dir():
        found = sorted(target.glob("*.npz"))
        if len(found) != 1:
            raise DataError(f"{target} holds {len(found)} .npz files; name the one to read in dataset.path")
        target = found[0]
    return target


def locate_digits(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """scikit-learn's handwritten digits (bundled with it: no download) as an .npz under ``<cache>/data/``,
    split as ``kdclaims.data.write_digits_npz`` says (its arguments are ``spec.synthetic``)."""
    from kdclaims.data import write_digits_npz
    folder = Path(cache_root) / "data" / f"digits-{hash_config(dict(spec.synthetic))[:12]}"
    target = folder / "digits.npz"
    return _generated_once(target, lambda: write_digits_npz(target, **spec.synthetic))


register_dataset("cifar100", locate_cifar100)
register_dataset("synthetic", locate_synthetic, uses_data_dir=False)
register_dataset("npz", locate_file)
register_dataset("cifar", locate_file)
register_dataset("digits", locate_digits, uses_data_dir=False)
