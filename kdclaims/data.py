"""CIFAR-100: find, download, verify and read it safely; and write synthetic data in its exact format.

The official archive (``cifar-100-python.tar.gz``) is a gzip tar holding three Python-2 pickles,
``cifar-100-python/{train,test,meta}``. Each split is a dict with bytes keys::

    b'filenames'     list of bytes          b'batch_label'   bytes
    b'fine_labels'   list of int in 0..99   b'coarse_labels' list of int in 0..19
    b'data'          numpy uint8 (N, 3072): per row 1024 R, then 1024 G, then 1024 B, each a row-major 32x32

and ``meta`` holds ``b'fine_label_names'`` (100 names) and ``b'coarse_label_names'`` (20).

Pickles run code on load, and an archive from the internet (or a shared drive) is untrusted. So this
module never calls ``pickle.load``: a restricted unpickler accepts only the handful of globals a numpy
array needs, and tar members are read into memory by exact name, never extracted to disk. Each member's
opcodes are scanned as it is read, MD5 or no MD5, and a pickle with more than its size can hold (a list
of millions of elements gzips to a few KB) is refused before anything is built. Everything a
user can get wrong (missing, truncated, tampered, malformed, malicious) surfaces as a one-line
``DataError`` that names the file and says how to fix it.

The synthetic generator writes the same format byte-for-byte-deterministically, so the smoke profile
exercises exactly the code path the real dataset takes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import math
import numbers
import os
import pickle
import pickletools
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdclaims.arrays import as_numpy
from kdclaims.atomic import write_atomically, write_bytes_atomically
from kdclaims.errors import DataError, short_repr as _short  # _short: one home for the one-line repr

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_NAME = "cifar-100-python.tar.gz"

FOLDER_NAME = "cifar-100-python"  # the single top-level folder inside the archive
SPLIT_FILES = ("train", "test", "meta")
CIFAR10_ARCHIVE_NAME = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass(frozen=True)
class CifarLayout:
    """Where one of CIFAR's two python layouts keeps its pickles, and under which keys."""

    folder: str  # the top-level folder in the archive
    train: tuple[str, ...]  # training pickles, concatenated in this order
    test: tuple[str, ...]
    meta: str
    labels_key: bytes
    names_key: bytes
    official_archive: str
    official_md5: str

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test + (self.meta,)


CIFAR100_LAYOUT = CifarLayout(FOLDER_NAME, ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names",
                              "cifar-100-python.tar.gz", CIFAR100_MD5)
CIFAR10_LAYOUT = CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                             "batches.meta", b"labels", b"label_names", CIFAR10_ARCHIVE_NAME, CIFAR10_MD5)
LAYOUTS = (CIFAR100_LAYOUT, CIFAR10_LAYOUT)
NUM_FINE = 100  # CIFAR-100's fine classes: meta always lists this many names
NUM_COARSE = 20
IMAGE_SHAPE = (3, 32, 32)
ROW_LEN = 3 * 32 * 32

# The real train pickle is ~155 MB; a member far beyond that is not CIFAR-100 and reading it into
# memory would only let a hostile archive (a gzip bomb) exhaust RAM.
_MAX_MEMBER_BYTES = 1 << 30
# The real meta pickle (100 + 20 class names) is ~1.5 KB; 256 KiB holds ten thousand names of 20 characters.
_MAX_META_BYTES = 256 << 10

_FETCH_HINT = "re-download it with `kdclaims data fetch`"


# ---------------------------------------------------------------------------------------------
# The dataset as the rest of kdclaims sees it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to a single bool
class Dataset:
    """A dataset in memory. It holds numpy arrays (torch tensors given are read as numpy, sharing their memory),
    so that reading it -- all a warm run needs: the fingerprint for the member keys, the test labels for the
    metrics -- imports no torch; ``train_images``, ``train_labels``, ``test_images`` and ``test_labels`` are
    torch views of the same memory, for training (they import torch)."""

    train_images_array: np.ndarray  # uint8, (N_train, C, H, W): (N, 3, 32, 32) for CIFAR
    train_labels_array: np.ndarray  # int64, (N_train,) fine labels
    test_images_array: np.ndarray  # uint8, (N_test, C, H, W)
    test_labels_array: np.ndarray  # int64, (N_test,)
    class_names: tuple[str, ...]  # fine_label_names from meta (100 for CIFAR-100)
    source: str  # path it was read from
    archive_md5: str | None  # md5 of the .tar.gz when read from an archive, else None
    fingerprint: str  # sha256 over the content; identical for an archive and its extracted folder

    def __post_init__(self):
        for name in ("train_images_array", "train_labels_array", "test_images_array", "test_labels_array"):
            object.__setattr__(self, name, as_numpy(getattr(self, name)))

    @property
    def train_images(self):
        return _torch_view(self.train_images_array)

    @property
    def train_labels(self):
        return _torch_view(self.train_labels_array)

    @property
    def test_images(self):
        return _torch_view(self.test_images_array)

    @property
    def test_labels(self):
        return _torch_view(self.test_labels_array)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return int(self.train_labels_array.shape[0])

    def to_summary(self) -> DatasetSummary:
        """What a run needs of this dataset when it trains nothing (see ``DatasetSummary``)."""
        test_labels = np.array(self.test_labels_array)  # a copy: the summary's must stay read-only
        test_labels.flags.writeable = False
        return DatasetSummary(
            fingerprint=self.fingerprint, source=self.source, archive_md5=self.archive_md5,
            num_classes=self.num_classes,
            train=SplitSummary.of(self.train_images_array.shape, self.train_images_array.dtype,
                                  self.train_labels_array),
            test=SplitSummary.of(self.test_images_array.shape, self.test_images_array.dtype, test_labels),
            test_labels_array=test_labels,
        )

    def summary(self) -> dict:
        """Plain-JSON description: where it came from, what it holds, and how to recognise it again."""
        return self.to_summary().as_dict()


@dataclass(frozen=True)
class SplitSummary:
    """One split as ``Dataset.summary()`` describes it: its shapes and dtypes, and what its labels span."""

    count: int
    images_shape: tuple[int, ...]  # (N, C, H, W)
    images_dtype: str
    labels_dtype: str
    label_range: tuple[int, int] | None  # (min, max); None for an empty split
    classes_present: int

    @classmethod
    def of(cls, images_shape, images_dtype, labels: np.ndarray) -> SplitSummary:
        return cls(
            count=int(labels.shape[0]),
            images_shape=tuple(int(s) for s in images_shape),
            images_dtype=str(images_dtype),
            labels_dtype=str(labels.dtype),
            label_range=(int(labels.min()), int(labels.max())) if labels.size else None,
            classes_present=_distinct_count(labels),
        )

    def as_dict(self) -> dict:
        return {
            "count": self.count,
            "images_shape": list(self.images_shape),
            "images_dtype": self.images_dtype,
            "labels_dtype": self.labels_dtype,
            "label_range": list(self.label_range) if self.label_range is not None else None,
            "classes_present": self.classes_present,
        }


def _distinct_count(labels: np.ndarray) -> int:
    """How many distinct values ``labels`` holds. Class indices (0 .. a few thousand) are counted by bincount:
    np.unique's first call in a process costs ~20 ms, and in a warm run this is its only call."""
    if labels.size and labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < 1 << 20:
        return int(np.count_nonzero(np.bincount(labels.astype(np.intp, copy=False))))  # uint64 included
    return int(np.unique(labels).size)


@dataclass(frozen=True, eq=False)  # eq below: the labels array does not compare to a single bool
class DatasetSummary:
    """A dataset without its images and training labels: all a run that trains nothing reads of it -- the
    fingerprint (member keys), class count, image shape and training-set size (model configs, and the shapes
    every cached member is checked against), the test labels (metrics, and each cached member's accuracy
    recomputed), and what the evaluation records (``as_dict``, the same dict as ``Dataset.summary()``).
    ``Dataset.to_summary()`` makes one; ``read_dataset_summary`` reads the one a full load recorded in the
    cache, so that a warm run never unpickles the dataset."""

    fingerprint: str
    source: str
    archive_md5: str | None
    num_classes: int
    train: SplitSummary
    test: SplitSummary
    test_labels_array: np.ndarray  # (N_test,) read-only

    @property
    def num_train(self) -> int:
        return self.train.count

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image."""
        return self.train.images_shape[1:]

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "archive_md5": self.archive_md5,
            "fingerprint": self.fingerprint,
            "num_classes": self.num_classes,
            "train": self.train.as_dict(),
            "test": self.test.as_dict(),
        }

    def __eq__(self, other) -> bool:
        if not isinstance(other, DatasetSummary):
            return NotImplemented
        return (self.as_dict() == other.as_dict() and self.test_labels_array.dtype == other.test_labels_array.dtype
                and np.array_equal(self.test_labels_array, other.test_labels_array))

    __hash__ = None  # equal summaries would need equal hashes, and an array has none


def _torch_view(array: np.ndarray):
    import torch  # here: reading a dataset needs no torch, only training on it does

    return torch.from_numpy(array)


def _fingerprint(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, class_names: tuple[str, ...]) -> str:
    """sha256 over content only (never paths or container bytes), so an archive and its extracted
    folder, or two copies anywhere, fingerprint the same."""
    h = hashlib.sha256()
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        h.update(np.ascontiguousarray(images, dtype=np.uint8).reshape(-1).data)
        h.update(np.ascontiguousarray(labels, dtype="<i8").reshape(-1).data)
    h.update("\n".join(class_names).encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Finding it
# ---------------------------------------------------------------------------------------------


def _is_extracted_folder(folder: Path, layout: CifarLayout = CIFAR100_LAYOUT) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in layout.files)


def _folder_layout(folder: Path) -> CifarLayout | None:
    return next((layout for layout in LAYOUTS if _is_extracted_folder(folder, layout)), None)


def find_cifar100(data_dir) -> Path | None:
    """The archive or extracted folder in ``data_dir`` (or ``data_dir`` itself being one); None if absent.

    The archive wins over a folder beside it because only the archive's MD5 can be checked.
    """
    if data_dir is None:
        return None
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_file():
        return data_dir if data_dir.name.endswith(".tar.gz") else None
    if not data_dir.is_dir():
        return None
    if (data_dir / ARCHIVE_NAME).is_file():
        return data_dir / ARCHIVE_NAME
    if _is_extracted_folder(data_dir / FOLDER_NAME):
        return data_dir / FOLDER_NAME
    if _is_extracted_folder(data_dir):
        return data_dir
    return None


# ---------------------------------------------------------------------------------------------
# MD5: of files, of sidecars, of user input
# ---------------------------------------------------------------------------------------------

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def _md5_file(path: Path) -> str:
    return _file_digests(path, "md5")[0]


def _file_digests(path: Path, *algorithms: str) -> tuple[str, ...]:
    """The hex digests of ``path``'s bytes under each of ``algorithms`` (hashlib names), in one pass."""
    hashes = [hashlib.new(name) for name in algorithms]
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                for h in hashes:
                    h.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file's permissions") from e
    return tuple(h.hexdigest() for h in hashes)


def _normalize_md5(value: str, what: str) -> str:
    md5 = str(value).strip().lower()
    if not _MD5_RE.match(md5):
        raise DataError(f"{what} {value!r} is not an MD5: give 32 hexadecimal digits")
    return md5


def _sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".md5")


def _read_sidecar(archive: Path) -> str | None:
    """The MD5 in ``<archive>.md5`` (first token of the first line, as md5sum writes it), or None."""
    sidecar = _sidecar(archive)
    if not sidecar.is_file():
        return None
    try:
        first = sidecar.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    except OSError as e:
        raise DataError(f"cannot read {sidecar}: {e.strerror or e}; fix its permissions or delete it") from e
    token = first[0].split()[0] if first and first[0].split() else ""
    if not _MD5_RE.match(token.lower()):
        raise DataError(f"{sidecar} does not hold an MD5 (32 hex digits on its first line): fix it or delete it")
    return token.lower()


# ---------------------------------------------------------------------------------------------
# Safe unpickling
# ---------------------------------------------------------------------------------------------
# numpy pickles an array (protocol 2) as
#     a = _reconstruct(numpy.ndarray, (0,), b'b');  a.__setstate__((1, shape, dtype, fortran, raw_bytes))
# with dtype = numpy.dtype('u1', False, True) followed by dtype.__setstate__((3, '|', None, ...)), and
# Python 3 spells every bytes object _codecs.encode('<latin-1 text>', 'latin1'). Those four globals
# are all CIFAR needs, so find_class hands out stand-ins for exactly those four and refuses the rest.
#
# The stand-ins never pass pickle-controlled state to numpy: numpy's own __setstate__ methods accept
# far too much (a pickle can flag a 'u1' dtype as holding Python objects, or give it object fields).
# Instead, _reconstruct returns an _ArrayStub whose __setstate__ validates shape, dtype and byte
# count and builds the array with np.frombuffer; numpy.dtype returns a _DtypeStub that only accepts
# the state numpy writes for a plain numeric dtype. Stubs are swapped for their arrays after loading.


def _as_text(value) -> str | None:
    if isinstance(value, bytes):  # Python-2 pickles loaded with encoding="bytes"
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def _malicious(what: str) -> DataError:
    return DataError(f"{what}: the file may be malicious")


# Plain numeric dtypes only: never object ('O'), void/structured, strings or datetimes.
_SAFE_DTYPES = frozenset({"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})


class _Global:
    """Base of what find_class hands out. No __dict__, and a pickle's BUILD opcode on it (which would
    otherwise set attributes such as __defaults__ on a function) is refused."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _malicious(f"pickle tries to modify {self!r}")


class _NdarrayClass(_Global):
    """Stands in for ``numpy.ndarray``: valid only as _reconstruct's first argument, not callable."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


class _DtypeStub:
    """What ``numpy.dtype(name, align, copy)`` gives: a plain numeric dtype, byte order set by its state."""

    __slots__ = ("dtype", "built")

    def __init__(self, name: str):
        self.dtype, self.built = np.dtype(name), False

    def __setstate__(self, state):
        # numpy writes (3, byteorder, None, None, None, -1, -1, 0) for every plain numeric dtype
        # (version 4 appends metadata); anything else describes a structured/subarray/object dtype.
        if (self.built or not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or _as_text(state[1]) not in ("<", ">", "|", "=") or state[2:8] != (None, None, None, -1, -1, 0)
                or (len(state) == 9 and state[8] not in (None, {}))):
            raise _malicious(f"pickle gives numpy dtype {self.dtype} the state {_short(state)}")
        order = _as_text(state[1])
        self.dtype, self.built = self.dtype.newbyteorder(order) if order in "<>" else self.dtype, True


class _ArrayStub:
    """What ``_reconstruct`` gives; its __setstate__ builds the real array from validated parts."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise _malicious(f"pickle gives a numpy array the state {_short(state)}")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise _malicious(f"pickle gives a numpy array the dtype {_short(dtype)}")
        if (not isinstance(shape, tuple) or len(shape) > 32
                or not all(type(s) is int and s >= 0 for s in shape)):
            raise _malicious(f"pickle gives a numpy array the shape {_short(shape)}")
        if not isinstance(raw, bytes) or fortran not in (0, 1):
            raise _malicious(f"pickle gives a numpy array data of type {type(raw).__name__}")
        if len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise DataError(f"pickle gives a numpy array of shape {shape} and dtype {dtype.dtype} {len(raw)} bytes "
                            "of data, which do not match: the file is corrupt")
        self.array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _Reconstruct(_Global):
    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy _reconstruct"

    def __call__(self, subtype, shape, dtype):
        # numpy always writes _reconstruct(ndarray, (0,), b'b'): an empty placeholder that
        # __setstate__ then fills; anything else (a subclass, a shape to allocate) is not numpy's doing.
        if not isinstance(subtype, _NdarrayClass) or shape != (0,) or _as_text(dtype) != "b":
            raise _malicious(f"pickle calls _reconstruct{_short((subtype, shape, dtype))}")
        return _ArrayStub()


class _Dtype(_Global):
    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.dtype"

    def __call__(self, spec, align=False, copy=True):
        name = _as_text(spec)
        if name not in _SAFE_DTYPES or align not in (0, 1) or copy not in (0, 1):
            raise _malicious(f"pickle asks for numpy dtype {_short(spec)}, but only plain numeric dtypes are allowed")
        return _DtypeStub(name)


class _Encode(_Global):
    __slots__ = ()

    def __repr__(self) -> str:
        return "_codecs.encode"

    def __call__(self, obj, encoding="utf-8", errors="strict"):
        # Python 3 writes bytes under protocol 2 as _codecs.encode(str, 'latin1'); allow nothing else,
        # because other codecs are looked up (and imported) by name.
        if not isinstance(obj, str) or _as_text(encoding) not in ("latin1", "latin-1") or errors != "strict":
            raise _malicious(f"pickle asks _codecs.encode for codec {_short(encoding)}, but only latin1 is allowed")
        return obj.encode("latin-1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _Reconstruct(),  # as Python 2 / numpy 1 wrote it
    ("numpy._core.multiarray", "_reconstruct"): _Reconstruct(),  # as numpy 2 writes it
    ("numpy", "ndarray"): _NdarrayClass(),
    ("numpy", "dtype"): _Dtype(),
    ("_codecs", "encode"): _Encode(),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals above; every other import is refused.

    ``find_class`` is the single door through which a pickle reaches code (GLOBAL, STACK_GLOBAL, INST,
    OBJ and the copyreg EXT opcodes all go through it), so closing it closes code execution.
    """

    def __init__(self, data: bytes, where: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.where = where

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise DataError(f"{self.where}: the reader refuses to load global {str(module)[:60]}.{str(name)[:60]}: "
                            f"the file may be malicious; {_FETCH_HINT} from the official address") from None

    def persistent_load(self, pid):
        raise DataError(f"{self.where}: the reader refuses persistent ids: the file may be malicious; {_FETCH_HINT}")


# How much a pickle may make the unpickler build, from its size alone. Every element of a list (or dict, or
# tuple) is pushed by at least one opcode, so a bound on the opcodes bounds every container, and a bytes or
# str object is never longer than the pickle. A split of N images holds their N x ROW_LEN bytes of pixels,
# so N <= size // ROW_LEN, and per image a label, a coarse label and a file name: about 4 opcodes as Python 2
# wrote them, 10 as Python 3 does (bytes as _codecs.encode calls). A meta pickle holds only class names, at
# least 2 bytes per opcode. Allowing other image sizes or class counts changes only these expected shapes.
_SPLIT_OPS_PER_ROW = 16
_FIXED_OPS = 4096  # the dicts, keys, batch label and array header around the per-image entries


def _max_opcodes(kind: str, size: int) -> int:
    """The most opcodes a well-formed ``kind`` ("meta", or a split) pickle of ``size`` bytes has."""
    if kind == "meta":
        return _FIXED_OPS + size // 2
    return _FIXED_OPS + _SPLIT_OPS_PER_ROW * (size // ROW_LEN)


class _RecordingReader:
    """The bytes of a pickle as they are read from ``stream`` (``size`` at most), kept so the unpickler sees
    exactly what was scanned, and only as far as the scan got: a refused member costs what was read of it."""

    def __init__(self, stream, size: int):
        self.stream, self.left, self.chunks = stream, size, []

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(chunk)
        self.chunks.append(chunk)
        return chunk

    def readline(self) -> bytes:  # protocol-0 opcodes end their arguments with a newline
        line = self.stream.readline(self.left)
        self.left -= len(line)
        self.chunks.append(line)
        return line

    def data(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks = [data]
        return data


def _scan_pickle(stream, size: int, where: str, kind: str) -> bytes:
    """Read a ``kind`` pickle of ``size`` bytes from ``stream``, scanning its opcodes (pure Python, building
    nothing) as they arrive; return its bytes for the unpickler. Refused, before anything is built:

    * more opcodes than a well-formed pickle of that size has (``_max_opcodes``): a list of millions of
      elements fits in a few KB of gzip, and would cost the unpickler seconds and hundreds of MB;
    * memo slots far beyond what the pickle has stored so far. Picklers number memo slots 0, 1, 2...
      (cPickle from 1), one per PUT opcode, so a slot index above the opcode count only serves to make
      the C unpickler grow (and zero) its memo table to that size: a four-byte LONG_BINPUT could demand
      tens of GB;
    * anything structurally broken.
    """
    reader = _RecordingReader(stream, size)
    max_ops = _max_opcodes(kind, size)
    for count, (op, arg, _) in enumerate(pickletools.genops(reader)):
        if count >= max_ops:
            what = "class names" if kind == "meta" else "images"
            raise DataError(f"{where}: the pickle holds more than {max_ops} opcodes, more than any CIFAR pickle of "
                            f"{what} of its size ({size} bytes) has: the file may be malicious; {_FETCH_HINT}")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count + 1:
            raise DataError(f"{where}: pickle memo index {arg} is out of all proportion to its size: the file may "
                            f"be malicious; {_FETCH_HINT}")
    return reader.data()


def _materialize(obj, where: str):
    """Swap the array stubs among a CIFAR dict's values for their arrays. Stubs anywhere else stay
    stubs, and the field validation rejects them as the wrong type."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, _ArrayStub):
                if value.array is None:
                    raise DataError(f"{where}: a numpy array in the pickle never received its data; {_FETCH_HINT}")
                obj[key] = value.array
    return obj


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _unpickle(data: bytes, where: str, kind: str = "split"):
    """Scan (``_scan_pickle``) and load a ``kind`` ("meta", or a split) pickle held in memory."""
    return _load_scanned(_guarded(lambda: _scan_pickle(io.BytesIO(data), len(data), where, kind), where), where)


def _load_scanned(data: bytes, where: str):
    """Load a pickle that ``_scan_pickle`` has passed, through the restricted unpickler."""
    return _guarded(lambda: _materialize(_RestrictedUnpickler(data, where).load(), where), where)


def _guarded(step, where: str, passthrough: tuple[type[BaseException], ...] = ()):
    """``step()``, with every failure but ``passthrough`` a one-line DataError naming ``where``."""
    try:
        return step()
    except passthrough:
        raise
    except DataError as e:
        if str(e).startswith(where):
            raise
        raise DataError(f"{where}: {e}; {_FETCH_HINT}") from e
    # A malformed pickle can fail with nearly any exception type (UnpicklingError, EOFError, TypeError
    # from a stub called wrongly, IndexError, MemoryError...); all mean "not a valid file".
    except Exception as e:
        raise DataError(f"{where}: not a valid CIFAR-100 pickle ({type(e).__name__}: {_one_line(e)[:200]}); "
                        f"{_FETCH_HINT}") from e


# ---------------------------------------------------------------------------------------------
# Validating what came out of the pickles
# ---------------------------------------------------------------------------------------------


def _field(obj: dict, key: bytes, where: str):
    if key not in obj:
        raise DataError(f"{where}: field '{key.decode()}' is missing; {_FETCH_HINT}")
    return obj[key]


def _names(obj: dict, key: bytes, count: int | None, where: str) -> tuple[str, ...]:
    """The names under ``key``: exactly ``count`` of them, or (None) any number from one up."""
    raw = _field(obj, key, where)
    field = key.decode()
    if not isinstance(raw, (list, tuple)) or (len(raw) != count if count is not None else not raw):
        got = f"{len(raw)} entries" if isinstance(raw, (list, tuple)) else f"a {type(raw).__name__}"
        want = f"{count} names" if count is not None else "at least one name"
        raise DataError(f"{where}: field '{field}' should list {want} but holds {got}; {_FETCH_HINT}")
    names = []
    for name in raw:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
        except UnicodeDecodeError:
            text = None
        if not isinstance(text, str):
            raise DataError(f"{where}: field '{field}' holds a non-text name {_short(name)}; {_FETCH_HINT}")
        names.append(text)
    return tuple(names)


def _labels(obj: dict, key: bytes, n: int, num_classes: int, where: str) -> np.ndarray:
    raw = _field(obj, key, where)
    field = key.decode()
    if not isinstance(raw, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: field '{field}' should be a list of ints but is a {type(raw).__name__}; "
                        f"{_FETCH_HINT}")
    labels = np.asarray(raw)
    # A list of Python ints becomes an integer array; floats, bools, strings or ints too large for
    # int64 come out with another dtype kind and are rejected rather than silently cast.
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: field '{field}' should be a flat list of ints (got dtype {labels.dtype}, "
                        f"shape {labels.shape}); {_FETCH_HINT}")
    if labels.shape[0] != n:
        raise DataError(f"{where}: field '{field}' has {labels.shape[0]} entries but 'data' has {n} rows; "
                        f"{_FETCH_HINT}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: field '{field}' has labels in [{labels.min()}, {labels.max()}] outside "
                        f"[0, {num_classes}); {_FETCH_HINT}")
    return labels.astype(np.int64)


def _parse_meta(obj, where: str, layout: CifarLayout = CIFAR100_LAYOUT) -> tuple[str, ...]:
    """The class names: any number of classes (CIFAR-100's meta has 100, CIFAR-10's 10)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: should hold a dict but holds a {type(obj).__name__}; {_FETCH_HINT}")
    fine = _names(obj, layout.names_key, None, where)
    if b"coarse_label_names" in obj:
        _names(obj, b"coarse_label_names", NUM_COARSE, where)
    return fine


def _parse_split(obj, num_classes: int, where: str,
                 layout: CifarLayout = CIFAR100_LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: should hold a dict but holds a {type(obj).__name__}; {_FETCH_HINT}")
    data = _field(obj, b"data", where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        what = f"dtype {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DataError(f"{where}: field 'data' should be a uint8 numpy array but is {what}; {_FETCH_HINT}")
    if data.ndim != 2 or data.shape[1] != ROW_LEN or data.shape[0] == 0:
        raise DataError(f"{where}: field 'data' has shape {tuple(data.shape)}, expected (N>0, {ROW_LEN}); "
                        f"{_FETCH_HINT}")
    n = data.shape[0]
    labels = _labels(obj, layout.labels_key, n, num_classes, where)
    if layout is CIFAR100_LAYOUT and b"coarse_labels" in obj:
        _labels(obj, b"coarse_labels", n, NUM_COARSE, where)
    # (N, 3072) rows are R, G, B planes of 32x32 row-major: exactly a C-order (N, 3, 32, 32) view.
    images = np.require(data.reshape((n,) + IMAGE_SHAPE), dtype=np.uint8, requirements=["C", "W"])
    return images, labels


def _build(raw: dict[str, bytes], where: dict[str, str], source: str, archive_md5: str | None,
           layout: CifarLayout = CIFAR100_LAYOUT) -> Dataset:
    """The dataset from the layout's pickles, each already passed by ``_scan_pickle`` as it was read."""
    meta = _load_scanned(raw[layout.meta], where[layout.meta])
    class_names = _parse_meta(meta, where[layout.meta], layout)
    del meta
    splits = {}
    for split, names in (("train", layout.train), ("test", layout.test)):
        pieces = []
        for name in names:
            obj = _load_scanned(raw[name], where[name])
            raw[name] = b""  # drop the pickle bytes early: the real train split is ~155 MB
            pieces.append(_parse_split(obj, len(class_names), where[name], layout))
            del obj
        splits[split] = pieces[0] if len(pieces) == 1 else (np.concatenate([x for x, _ in pieces]),
                                                            np.concatenate([y for _, y in pieces]))
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return Dataset(
        train_images_array=train_x,
        train_labels_array=train_y,
        test_images_array=test_x,
        test_labels_array=test_y,
        class_names=class_names,
        source=source,
        archive_md5=archive_md5,
        fingerprint=_fingerprint(train_x, train_y, test_x, test_y, class_names),
    )


# ---------------------------------------------------------------------------------------------
# Reading an archive or a folder
# ---------------------------------------------------------------------------------------------


def _read_archive_members(archive: Path) -> tuple[CifarLayout, dict[str, bytes]]:
    """The bytes of exactly cifar-100-python/{train,test,meta} (or CIFAR-10's cifar-10-batches-py/{data_batch_1..5,
    test_batch,batches.meta}), in one streaming pass; and which of the two layouts the archive has.

    Nothing is ever written to disk, so members named ``../../x``, ``/abs/path`` or anything else are
    simply never looked at; the three wanted names must be regular files (a symlink or hard link
    named ``cifar-100-python/train`` is refused, not followed).
    """
    wanted = {f"{layout.folder}/{name}": (layout, name) for layout in LAYOUTS for name in layout.files}
    found: dict[str, bytes] = {}
    try:
        # gzip.open + "r|": one sequential pass, so the gzip stream is decoded once
        with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                layout, key = wanted.get(name, (None, None))
                if key is None:
                    continue  # file.txt~ in the real archive, or anything odd: ignored, never extracted
                key = name
                if key in found:
                    raise DataError(f"{archive}: member {name} appears twice, so which one is meant is ambiguous; "
                                    f"the archive may be tampered with, {_FETCH_HINT}")
                if not member.isfile():
                    kind = "symlink" if member.issym() else "hard link" if member.islnk() else "non-regular file"
                    raise DataError(f"{archive}: member {name} is a {kind}, not a regular file: the archive may be "
                                    f"malicious; {_FETCH_HINT}")
                kind = "meta" if key.endswith("meta") else "split"
                _check_member_size(kind, member.size, f"{archive}: member {name}")
                found[key] = _read_member(tar.extractfile(member), member.size, f"{archive} member {key}", kind)
            # tar stops at its end-of-archive marker; reading on to EOF makes gzip check its CRC and
            # length, so corruption is caught even when the caller skipped the MD5 check.
            while gz.read(1 << 20):
                pass
    except DataError:
        raise
    # gzip.BadGzipFile and truncated-stream errors are OSError/EOFError; a damaged tar is TarError.
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: not a readable gzip tar archive ({type(e).__name__}: {_one_line(e)[:200]}); "
                        f"{_FETCH_HINT}") from e
    for layout in LAYOUTS:
        if all(f"{layout.folder}/{name}" in found for name in layout.files):
            return layout, {name: found[f"{layout.folder}/{name}"] for name in layout.files}
    missing = [f"{FOLDER_NAME}/{name}" for name in SPLIT_FILES if f"{FOLDER_NAME}/{name}" not in found]
    raise DataError(f"{archive}: archive lacks {', '.join(missing)}, so it is not CIFAR-100 (python version) nor "
                    f"CIFAR-10 (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta); {_FETCH_HINT}")


def _read_folder_files(folder: Path, layout: CifarLayout = CIFAR100_LAYOUT) -> dict[str, bytes]:
    missing = [name for name in layout.files if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: the extracted CIFAR folder lacks {', '.join(missing)}; re-extract "
                        f"{layout.official_archive} there or {_FETCH_HINT}")
    found = {}
    for name in layout.files:
        path = folder / name
        kind = "meta" if name == layout.meta else "split"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                _check_member_size(kind, size, str(path))
                found[name] = _read_member(f, size, str(path), kind)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}; check the file's permissions") from e
    return found


def _check_member_size(kind: str, size: int, what: str) -> None:
    limit = _MAX_META_BYTES if kind == "meta" else _MAX_MEMBER_BYTES
    if size > limit:
        raise DataError(f"{what} claims {size} bytes, far more than CIFAR-100's {kind} holds (at most {limit}); "
                        f"{_FETCH_HINT}")


def _read_member(stream, size: int, where: str, kind: str) -> bytes:
    """The bytes of one pickle member, scanned as they are read (``_scan_pickle``). Errors of the stream
    itself (a damaged gzip or tar, an unreadable file) pass through for the caller to name the container."""
    return _guarded(lambda: _scan_pickle(stream, size, where, kind), where,
                    passthrough=(OSError, EOFError, zlib.error, tarfile.TarError))


def load_cifar100(path, expected_md5: str | None = None, *, check_md5: bool = True) -> Dataset:
    """Read CIFAR-100 from its .tar.gz archive or its extracted folder (or the folder containing either).

    For an archive the MD5 is always computed (it lands in ``Dataset.archive_md5``) and, with
    ``check_md5``, compared with ``expected_md5``, else the sidecar ``<archive>.md5``, else the
    official CIFAR100_MD5. A folder has no MD5 to check; its fingerprint still identifies the content.
    """
    p = _cifar_source(path)
    source = os.path.abspath(p)

    if p.is_dir():
        layout = _folder_layout(p) or CIFAR100_LAYOUT
        raw = _read_folder_files(p, layout)
        where = {name: str(p / name) for name in layout.files}
        return _build(raw, where, source, None, layout)

    actual = _md5_file(p)
    if check_md5:
        expected, origin = _expected_archive_md5(p, expected_md5, actual)
        if actual != expected:
            raise DataError(f"{p}: MD5 mismatch: file has {actual}, expected {expected} ({origin}); the archive is "
                            f"corrupt or tampered with, {_FETCH_HINT} (or delete it and any .md5 beside it)")
    layout, raw = _read_archive_members(p)
    where = {name: f"{p} member {layout.folder}/{name}" for name in layout.files}
    return _build(raw, where, source, actual, layout)


def _cifar_source(path) -> Path:
    """The archive or extracted folder ``load_cifar100(path)`` reads: ``path`` itself, or the one in it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"CIFAR-100 not found at {p}: run `kdclaims data fetch --data-dir DIR` "
                        f"or place {ARCHIVE_NAME} there")
    if p.is_dir():
        found = find_cifar100(p)
        if found is None:
            for candidate in (p / CIFAR10_ARCHIVE_NAME, p / CIFAR10_LAYOUT.folder, p):
                if candidate.is_file() or _is_extracted_folder(candidate, CIFAR10_LAYOUT):
                    found = candidate
                    break
        if found is None:
            if (p / FOLDER_NAME).is_dir():
                _read_folder_files(p / FOLDER_NAME)  # raises, naming what is missing
            if any((p / name).exists() for name in SPLIT_FILES):
                _read_folder_files(p)  # likewise
            raise DataError(f"CIFAR-100 not found in {p}: neither {ARCHIVE_NAME} nor a {FOLDER_NAME}/ folder; "
                            f"run `kdclaims data fetch --data-dir {p}` or place {ARCHIVE_NAME} there")
        p = found
    return p


def _expected_archive_md5(archive: Path, expected_md5: str | None, actual: str) -> tuple[str, str]:
    """The MD5 ``archive`` must have, and where that comes from: ``expected_md5``, else the sidecar
    ``<archive>.md5``, else the official MD5 of its name; an archive of your own, under a name of its own,
    has nothing to be checked against (``actual``: its MD5 is recorded)."""
    if expected_md5 is not None:
        return _normalize_md5(expected_md5, "expected MD5"), "as given"
    if (sidecar := _read_sidecar(archive)) is not None:
        return sidecar, f"from {_sidecar(archive).name}"
    if archive.name == CIFAR10_ARCHIVE_NAME:
        return CIFAR10_MD5, "the official CIFAR-10 MD5"
    if archive.name == ARCHIVE_NAME:
        return CIFAR100_MD5, "the official CIFAR-100 MD5"
    return actual, ""


def verify(path, expected_md5: str | None = None) -> dict:
    """Load through the full reader (MD5, safe unpickling, validation; or the .npz reader) and return the
    summary, with the per-class image counts of each split and the classes without a single image."""
    dataset = load_npz(path) if str(path).endswith(".npz") else load_cifar100(path, expected_md5)
    summary = dataset.summary()
    for split, counts in class_counts(dataset).items():
        summary[split]["per_class"] = counts["per_class"]
        summary[split]["empty_classes"] = counts["empty"]
    return summary


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


def _unreachable(url: str, data_dir: Path, err: BaseException) -> DataError:
    reason = getattr(err, "reason", None) or err
    return DataError(f"could not reach {url} ({_one_line(reason)[:200]}): place {ARCHIVE_NAME} in {data_dir} by "
                     "hand (e.g. downloaded on another machine), or use the smoke profile (`--profile smoke`), "
                     "which needs no download")


def _ensure_sidecar(archive: Path, md5: str) -> None:
    """Make load_cifar100(archive) with defaults accept what fetch just verified: a sidecar is written
    when ``md5`` is not the official one, and a stale sidecar (e.g. from synthetic data) is replaced."""
    sidecar = _sidecar(archive)
    try:
        current = _read_sidecar(archive)
    except DataError:
        current = "invalid"
    if current == md5 or (current is None and md5 == CIFAR100_MD5):
        return
    try:
        write_bytes_atomically(sidecar, f"{md5}\n".encode())
    except OSError as e:
        raise DataError(f"cannot write {sidecar}: {e.strerror or e}; make {archive.parent} writable") from e


def _download(url: str, out, data_dir: Path, progress: bool) -> str:
    """Stream ``url`` into ``out`` with a progress bar; return the MD5 of what was received."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    try:
        response = urllib.request.urlopen(url, timeout=60)
    # URLError covers DNS failures, refused connections and HTTP errors; ValueError a malformed URL.
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise _unreachable(url, data_dir, e) from e
    h = hashlib.md5()
    with response, Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), disable=not progress) as bar:
        length = response.headers.get("Content-Length")
        task = bar.add_task(ARCHIVE_NAME, total=int(length) if length and length.isdigit() else None)
        while True:
            try:
                chunk = response.read(1 << 20)
            except (http.client.HTTPException, OSError) as e:  # dropped mid-way
                raise _unreachable(url, data_dir, e) from e
            if not chunk:
                break
            h.update(chunk)
            try:
                out.write(chunk)
            except OSError as e:
                raise DataError(f"cannot write the download into {data_dir}: {e.strerror or e}; free disk space "
                                "or choose another --data-dir") from e
            bar.advance(task, len(chunk))
    return h.hexdigest()


def fetch(data_dir, url: str = CIFAR100_URL, md5: str = CIFAR100_MD5, *, progress: bool = True) -> Path:
    """Download the archive into ``data_dir`` and verify its MD5; a valid archive already there is kept.

    The download goes to a temp file in ``data_dir`` and is moved into place with os.replace only
    after its MD5 matched, so an interrupted or corrupt download never leaves a plausible-looking
    ``cifar-100-python.tar.gz`` behind.
    """
    data_dir = Path(data_dir).expanduser()
    expected = _normalize_md5(md5, "md5")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data directory {data_dir}: {e.strerror or e}; choose a writable "
                        "--data-dir") from e
    target = data_dir / ARCHIVE_NAME
    if target.is_file() and _md5_file(target) == expected:
        _ensure_sidecar(target, expected)
        return target

    def download(tmp: str) -> None:
        with open(tmp, "wb") as out:
            actual = _download(url, out, data_dir, progress)
        if actual != expected:
            raise DataError(f"download from {url} has MD5 {actual}, expected {expected}: it is corrupt or not "
                            f"CIFAR-100; retry `kdclaims data fetch`, or place a good {ARCHIVE_NAME} in {data_dir}")

    try:
        write_atomically(target, download, f".{ARCHIVE_NAME}.")
    except OSError as e:
        raise DataError(f"cannot write into {data_dir}: {e.strerror or e}; choose a writable --data-dir") from e
    _ensure_sidecar(target, expected)
    return target


# ---------------------------------------------------------------------------------------------
# Synthetic data in CIFAR-100's exact format
# ---------------------------------------------------------------------------------------------
# Each class is a "texture": a few coloured sinusoidal gratings with class-specific frequency,
# orientation and colour, plus a faint class-specific low-frequency colour layout. Every example
# draws fresh grating phases (i.e. the pattern is translated), a small rotation/scale jitter and
# contrast/brightness jitter, and gets nuisance scaled by ``noise``: random gratings drawn from the
# same distribution as the classes' (so they look like other classes' signal), a smooth random
# field, and pixel noise.
#
# Why this design: the class is identifiable mainly through local, shift-invariant structure, which
# is what convolutions and patch embeddings learn, while random-phase gratings average out of a class
# mean; and the look-alike distractors keep the task from becoming trivial, so different seeds learn
# visibly different functions. Calibrated with noise=0.8 (the default), measured once while writing
# this module:
#   - smoke profile (10 classes x 160/40, models at 16x16, 4-6 epochs on CPU): nearest-class-mean on
#     raw pixels 82% (chance 10%); ResNet-18 (width 8) 80-87% with two seeds agreeing on 71% of test
#     images; VGG (width 8) 55-66%; the small ViT 31-34% (its 6 epochs are the limit: 40% at noise 0.6).
#   - 100 classes x 50/10 (the defaults): nearest-class-mean 46% (chance 1%); a 3-layer CNN 83-88%
#     after 4-6 epochs.
# noise=1.0 is harder (smoke ResNet ~69%, seeds agreeing on ~49%; nearest-class-mean 75% / 35%).

DEFAULT_NOISE = 0.8
_SIZE = 32
_GRATINGS_PER_CLASS = 3
_DISTRACTORS = 3
_PIXEL_SCALE = 32.0  # unit signal -> grey levels around 128, so little is clipped at the default noise
_CHUNK = 2048  # examples generated at a time, bounding memory for large requests
_TAR_MTIME = 1230768000  # 2009-01-01: any fixed value makes the tar reproducible


def _interp_matrix(k: int, n: int = _SIZE) -> np.ndarray:
    """(n, k) linear-interpolation matrix: upsamples k samples to n with aligned end points."""
    t = np.linspace(0.0, k - 1.0, n)
    lo = np.minimum(np.floor(t).astype(int), k - 2)
    frac = t - lo
    m = np.zeros((n, k))
    m[np.arange(n), lo] = 1.0 - frac
    m[np.arange(n), lo + 1] = frac
    return m


def _smooth_fields(rng: np.random.Generator, n: int, grids=((4, 1.0), (8, 0.5))) -> np.ndarray:
    """n random low-frequency colour fields (n, 3, 32, 32), each scaled to unit standard deviation."""
    out = np.zeros((n, 3, _SIZE, _SIZE))
    for k, weight in grids:
        m = _interp_matrix(k)
        out += weight * (m @ rng.standard_normal((n, 3, k, k)) @ m.T)  # bilinear-ish upsampling
    return out / out.std(axis=(1, 2, 3), keepdims=True)


def _random_frequencies(rng: np.random.Generator, shape) -> np.ndarray:
    """Frequency vectors (..., 2) in cycles/pixel: 1.5-6 cycles per image at a uniform orientation."""
    magnitude = rng.uniform(1.5, 6.0, shape)
    angle = rng.uniform(0.0, np.pi, shape)
    return np.stack([magnitude * np.cos(angle), magnitude * np.sin(angle)], axis=-1) / _SIZE


def _random_colours(rng: np.random.Generator, shape) -> np.ndarray:
    colours = rng.standard_normal(tuple(shape) + (3,))
    return colours / np.linalg.norm(colours, axis=-1, keepdims=True)


def _gratings(freq: np.ndarray, colour: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Sum over k of colour[n,k] * cos(2 pi freq[n,k] . (x, y) + phase[n,k]) -> (n, 3, 32, 32), unit power."""
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE]
    arg = 2 * np.pi * (freq[..., 0, None, None] * xx + freq[..., 1, None, None] * yy) + phase[..., None, None]
    n, k = freq.shape[:2]
    mixed = np.swapaxes(colour, 1, 2) @ np.cos(arg).reshape(n, k, _SIZE * _SIZE)  # (n, 3, 1024)
    return mixed.reshape(n, 3, _SIZE, _SIZE) * np.sqrt(2.0 / k)


def _synthetic_images(rng, labels, classes, noise) -> np.ndarray:
    freq, colour, layout = classes
    images = np.empty((len(labels), 3, _SIZE, _SIZE), dtype=np.uint8)
    for start in range(0, len(labels), _CHUNK):
        y = labels[start:start + _CHUNK]
        n = len(y)
        # the class's gratings, rotated by up to ~9 degrees and scaled by up to 10%, at random phases
        rot = rng.uniform(-0.15, 0.15, (n, 1))
        scale = rng.uniform(0.9, 1.1, (n, 1, 1))
        f = freq[y]
        f = np.stack([np.cos(rot) * f[..., 0] - np.sin(rot) * f[..., 1],
                      np.sin(rot) * f[..., 0] + np.cos(rot) * f[..., 1]], axis=-1) * scale
        signal = _gratings(f, colour[y], rng.uniform(0, 2 * np.pi, (n, _GRATINGS_PER_CLASS))) + 0.25 * layout[y]
        contrast = rng.uniform(0.8, 1.2, (n, 1, 1, 1))
        brightness = rng.normal(0.0, 0.25, (n, 3, 1, 1))
        distractors = _gratings(_random_frequencies(rng, (n, _DISTRACTORS)), _random_colours(rng, (n, _DISTRACTORS)),
                                rng.uniform(0, 2 * np.pi, (n, _DISTRACTORS)))
        nuisance = distractors + 0.5 * _smooth_fields(rng, n) + 0.5 * rng.standard_normal(signal.shape)
        x = contrast * signal + brightness + noise * nuisance
        images[start:start + n] = np.clip(np.rint(128.0 + _PIXEL_SCALE * x), 0, 255).astype(np.uint8)
    return images


def _split_pickle(rng, classes, num_classes: int, per_class: int, noise: float, batch_label: bytes,
                  kind: str) -> bytes:
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))  # shuffled, like the real one
    images = _synthetic_images(rng, labels, classes, noise)
    fine = labels.tolist()  # Python ints: numpy scalars would pickle as globals the reader refuses
    return pickle.dumps({
        b"filenames": [f"synthetic_{kind}_{i:06d}_class_{c:03d}.png".encode() for i, c in enumerate(fine)],
        b"batch_label": batch_label,
        b"fine_labels": fine,
        b"coarse_labels": [c // (NUM_FINE // NUM_COARSE) for c in fine],
        b"data": np.ascontiguousarray(images.reshape(len(fine), ROW_LEN)),
    }, protocol=2)


def _tar_info(name: str, size: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if size is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = size, 0o644
    info.mtime, info.uid, info.gid, info.uname, info.gname = _TAR_MTIME, 0, 0, "", ""
    return info


def write_synthetic_cifar100(dest_dir, *, num_classes: int = 100, train_per_class: int = 50,
                             test_per_class: int = 10, seed: int = 0, noise: float = DEFAULT_NOISE) -> Path:
    """Write ``dest_dir/cifar-100-python.tar.gz`` (+ ``.md5`` sidecar) in CIFAR-100's exact python format.

    Labels are 0..num_classes-1, balanced; meta always lists 100 fine and 20 coarse names; coarse = fine // 5.
    Deterministic: the same arguments give a byte-identical archive (fixed tar metadata, gzip mtime 0).
    """
    for name, value, low in (("num_classes", num_classes, 1), ("train_per_class", train_per_class, 1),
                             ("test_per_class", test_per_class, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"synthetic data: {name}={value!r} is invalid; give an integer >= {low}")
    if num_classes > NUM_FINE:
        raise DataError(f"synthetic data: num_classes={num_classes} is invalid; CIFAR-100's format has at most "
                        f"{NUM_FINE} classes")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise DataError(f"synthetic data: noise={noise!r} is invalid; give a finite number >= 0")
    dest = Path(dest_dir).expanduser()
    target = dest / ARCHIVE_NAME
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest}: {e.strerror or e}; choose a writable folder") from e
    # Never clobber the real 160 MB download with synthetic data.
    if target.is_file() and _md5_file(target) == CIFAR100_MD5:
        raise DataError(f"{target} is the real CIFAR-100 archive; refusing to overwrite it with synthetic data: "
                        "choose another folder")

    rng = np.random.default_rng(int(seed))
    # Class parameters first, then train, then test: each draw depends only on the arguments.
    classes = (
        _random_frequencies(rng, (num_classes, _GRATINGS_PER_CLASS)),
        _random_colours(rng, (num_classes, _GRATINGS_PER_CLASS)),
        _smooth_fields(rng, num_classes, grids=((3, 1.0),)),
    )
    members = {
        "meta": pickle.dumps({
            b"fine_label_names": [f"class_{i:03d}".encode() for i in range(NUM_FINE)],
            b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(NUM_COARSE)],
        }, protocol=2),
        "train": _split_pickle(rng, classes, num_classes, int(train_per_class), float(noise),
                               b"training batch 1 of 1", "train"),
        "test": _split_pickle(rng, classes, num_classes, int(test_per_class), float(noise),
                              b"testing batch 1 of 1", "test"),
    }

    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that varies between runs; level 1
    # because noisy pixels hardly compress and the higher levels only cost time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(_tar_info(FOLDER_NAME, None))
            for name in ("meta", "test", "train"):
                tar.addfile(_tar_info(f"{FOLDER_NAME}/{name}", len(members[name])), io.BytesIO(members[name]))
    payload = buf.getvalue()
    try:
        # Sidecar first: a crash in between leaves no archive (so callers regenerate), never an
        # archive whose sidecar is missing or stale.
        write_bytes_atomically(_sidecar(target), f"{hashlib.md5(payload).hexdigest()}\n".encode())
        write_bytes_atomically(target, payload)
    except OSError as e:
        raise DataError(f"cannot write {target}: {e.strerror or e}; choose a writable folder with free space") from e
    return target


# ---------------------------------------------------------------------------------------------
# Any supported format
# ---------------------------------------------------------------------------------------------


def load_dataset(path, summaries_dir=None) -> Dataset:
    """Read the dataset at ``path``: a ``.npz`` (``load_npz``), else CIFAR's python format (``load_cifar100``).
    With ``summaries_dir``, also record its summary there, for ``read_dataset_summary`` to read instead."""
    if summaries_dir is None:
        return _load_dataset(path)
    try:
        file = _summarized_file(path)
        sha256 = _file_digests(file, "sha256")[0] if file is not None else None
    except DataError:  # not there, or unreadable: the load says so, in its own words
        file = sha256 = None
    dataset = _load_dataset(path)
    if file is not None:
        try:
            # The same bytes after the load as before it: the summary is of exactly the bytes it is filed under
            if _file_digests(file, "sha256")[0] == sha256:
                _write_summary(dataset.to_summary(), sha256, Path(summaries_dir))
        except (DataError, OSError):
            pass  # a cache that cannot take the sidecar only means the next run loads the dataset in full again
    return dataset


def _load_dataset(path) -> Dataset:
    if str(path).endswith(".npz"):
        return load_npz(path)
    return load_cifar100(path)


# ---------------------------------------------------------------------------------------------
# The summary sidecar: what a run that trains nothing reads instead of the dataset
# ---------------------------------------------------------------------------------------------
# Loading CIFAR in full (the pickle scan above) is most of what a warm run -- every member cached --
# spends on the dataset, and all it needs is a DatasetSummary. So a full load through
# load_dataset(path, summaries_dir) records the summary in <summaries_dir>/<sha256 of the file>.json,
# and read_dataset_summary serves it back to a later run that finds a file with exactly those bytes:
# * keyed by the SHA-256 of the file's bytes, hashed before and after the full load (a file replaced
#   meanwhile records nothing), so a summary is only ever used for the bytes that were verified in full;
# * an archive's MD5 is still computed on every read and checked as load_cifar100 checks it (against the
#   .md5 beside it, or the official one), and must be the MD5 recorded: ``archive_md5`` is never taken on trust;
# * plain JSON (no code runs to read it), its size bounded and every field's type, shape and range checked,
#   the test split's description recomputed from the labels; a sidecar that does not check out is ignored
#   (the dataset is loaded in full, and the sidecar rewritten). It is as trusted as the cache's member files
#   beside it: a forgery consistent in every field is not detected (the Workbench compares it with the full
#   dataset whenever it loads that one, to train).
# An extracted folder gets no sidecar: it is several files (the official download is the archive), and it
# is loaded in full every time, as before.

SUMMARY_FORMAT = "kdclaims dataset summary"
SUMMARY_SCHEMA = 1
# ~5 million test labels: far beyond any dataset here, far below what would make reading it hurt
_MAX_SUMMARY_BYTES = 64 << 20
_MAX_DIMENSION = 1 << 31  # any count or image dimension: what numpy and torch index without surprises
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUMMARY_KEYS = frozenset({"format", "schema", "sha256", "fingerprint", "archive_md5", "num_classes", "train", "test",
                           "test_labels"})
_SPLIT_KEYS = frozenset({"count", "images_shape", "images_dtype", "labels_dtype", "label_range", "classes_present"})
# what the loaders make (uint8 images, int64 labels): a sidecar saying anything else was not written by them
_SUMMARY_IMAGES_DTYPE, _SUMMARY_LABELS_DTYPE = "uint8", "int64"


def _summarized_file(path) -> Path | None:
    """The one file ``load_dataset(path)`` reads (an .npz, or a CIFAR archive); None for an extracted folder."""
    if str(path).endswith(".npz"):
        p = Path(path).expanduser()
        return p if p.is_file() else None
    p = _cifar_source(path)
    return p if p.is_file() else None


def summary_sidecar_path(summaries_dir, sha256: str) -> Path:
    """Where the summary of the dataset file whose bytes have SHA-256 ``sha256`` is recorded."""
    return Path(summaries_dir) / f"{sha256}.json"


def _write_summary(summary: DatasetSummary, sha256: str, summaries_dir: Path) -> None:
    record = {"format": SUMMARY_FORMAT, "schema": SUMMARY_SCHEMA, "sha256": sha256,
              **{k: v for k, v in summary.as_dict().items() if k != "source"},  # the path is where it is read now
              "test_labels": summary.test_labels_array.tolist()}
    data = json.dumps(record, separators=(",", ":")).encode("utf-8")
    target = summary_sidecar_path(summaries_dir, sha256)
    try:
        if target.read_bytes() == data:
            return  # already recorded: each training run of a warm cache would rewrite it otherwise
    except OSError:
        pass
    summaries_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(target, data, ".summary.")


def read_dataset_summary(path, summaries_dir) -> DatasetSummary | None:
    """The summary of the dataset at ``path`` that a full load recorded in ``summaries_dir`` for a file with
    exactly its bytes (see above); None when there is none to trust -- an extracted folder, no sidecar, or one
    that does not check out: load the dataset in full then (``load_dataset``), which records it again."""
    try:
        file = _summarized_file(path)
        if file is None:
            return None
        md5, sha256 = _file_digests(file, "md5", "sha256")
        with open(summary_sidecar_path(summaries_dir, sha256), "rb") as f:
            raw = f.read(_MAX_SUMMARY_BYTES + 1)
        if len(raw) > _MAX_SUMMARY_BYTES:
            return None
        record = json.loads(raw)
        archive_md5 = None if str(path).endswith(".npz") else md5
        if archive_md5 is not None and md5 != _expected_archive_md5(file, None, md5)[0]:
            return None  # the full load refuses it, and says why
    except (DataError, OSError, ValueError, RecursionError):  # ValueError: not JSON (or not UTF-8)
        return None
    return _summary_from_record(record, sha256, archive_md5, os.path.abspath(file))


def _is_int(value, low: int = 0, high: int = _MAX_DIMENSION) -> bool:
    return type(value) is int and low <= value <= high  # type(): a JSON true is no count


def _split_from_record(record) -> SplitSummary | None:
    if not isinstance(record, dict) or set(record) != _SPLIT_KEYS:
        return None
    shape, label_range = record["images_shape"], record["label_range"]
    if (not _is_int(record["count"], 1) or not isinstance(shape, list) or len(shape) != 4
            or not all(_is_int(s, 1) for s in shape) or shape[0] != record["count"]
            or record["images_dtype"] != _SUMMARY_IMAGES_DTYPE or record["labels_dtype"] != _SUMMARY_LABELS_DTYPE
            or not isinstance(label_range, list) or len(label_range) != 2 or not all(_is_int(v) for v in label_range)
            or not _is_int(record["classes_present"], 1)):
        return None
    return SplitSummary(count=record["count"], images_shape=tuple(shape), images_dtype=record["images_dtype"],
                        labels_dtype=record["labels_dtype"], label_range=tuple(label_range),
                        classes_present=record["classes_present"])


def _summary_from_record(record, sha256: str, archive_md5: str | None, source: str) -> DatasetSummary | None:
    """The summary a sidecar's JSON ``record`` describes, if every field is what a full load of the file with
    ``sha256`` (and ``archive_md5``) would have recorded the way it is shaped; None otherwise."""
    if not isinstance(record, dict) or set(record) != _SUMMARY_KEYS:
        return None
    if (record["format"] != SUMMARY_FORMAT or not _is_int(record["schema"]) or record["schema"] != SUMMARY_SCHEMA
            or record["sha256"] != sha256 or record["archive_md5"] != archive_md5
            or not isinstance(record["fingerprint"], str) or not _SHA256_RE.match(record["fingerprint"])
            or not _is_int(record["num_classes"], 1)):
        return None
    num_classes = record["num_classes"]
    train, test = _split_from_record(record["train"]), _split_from_record(record["test"])
    labels = record["test_labels"]
    if (train is None or test is None or train.images_shape[1:] != test.images_shape[1:]
            or not isinstance(labels, list) or len(labels) != test.count
            or not all(_is_int(label, 0, num_classes - 1) for label in labels)):
        return None
    low, high = train.label_range
    if high >= num_classes or low > high or train.classes_present > min(train.count, high - low + 1):
        return None
    test_labels = np.array(labels, dtype=np.int64)
    test_labels.flags.writeable = False
    if SplitSummary.of(test.images_shape, test.images_dtype, test_labels) != test:
        return None  # the test split's description is the labels': recomputed, not trusted
    return DatasetSummary(fingerprint=record["fingerprint"], source=source, archive_md5=archive_md5,
                          num_classes=num_classes, train=train, test=test, test_labels_array=test_labels)


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# Uncompressed bytes an .npz may unpack to: far above any dataset that trains on one machine, far below
# what a zip bomb (a few KB of zeros claiming terabytes) would make numpy allocate.
_MAX_NPZ_BYTES = 16 << 30


def _npz_images(array, where: str, name: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or 0 in array.shape:
        raise DataError(f"{where}: '{name}' should be uint8 images N x H x W x C (or N x H x W), got dtype "
                        f"{array.dtype} and shape {tuple(array.shape)}")
    if array.ndim == 3:
        array = array[..., None]  # one channel
    if array.shape[1] != array.shape[2]:
        raise DataError(f"{where}: '{name}' holds {array.shape[1]}x{array.shape[2]} images; the models take square "
                        "images: pad or crop them to H = W")
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))  # N, C, H, W as the models take them


def _npz_labels(array, n: int, where: str, name: str) -> np.ndarray:
    if array.ndim != 1 or array.dtype.kind not in "iu" or array.shape[0] != n:
        raise DataError(f"{where}: '{name}' should be {n} integer labels (one per image), got dtype {array.dtype} "
                        f"and shape {tuple(array.shape)}")
    if n and array.min() < 0:
        raise DataError(f"{where}: '{name}' has a negative label {array.min()}; labels are 0 .. classes-1")
    return array.astype(np.int64)


def load_npz(path) -> Dataset:
    """A dataset from a plain ``.npz``: ``x_train`` and ``x_test`` uint8 N x H x W x C (or N x H x W: one
    channel), ``y_train`` and ``y_test`` integer labels 0..K-1, optional ``class_names`` (K texts). Any
    image size (square), channel count and class count. Read with ``allow_pickle=False``, so it runs no code."""
    import zipfile

    p = Path(path).expanduser()
    where = str(p)
    if not p.is_file():
        raise DataError(f"{where}: no such .npz file; give the path of an .npz holding {', '.join(NPZ_ARRAYS)}")
    try:
        with zipfile.ZipFile(p) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > _MAX_NPZ_BYTES:
            raise DataError(f"{where}: unpacks to {size} bytes, more than the {_MAX_NPZ_BYTES} allowed")
        with np.load(p, allow_pickle=False) as npz:
            missing = [name for name in NPZ_ARRAYS if name not in npz.files]
            if missing:
                raise DataError(f"{where}: lacks {', '.join(missing)}; an .npz dataset holds {', '.join(NPZ_ARRAYS)}")
            arrays = {name: npz[name] for name in NPZ_ARRAYS}
            names = npz["class_names"] if "class_names" in npz.files else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:  # not a zip, damaged, or an object array
        raise DataError(f"{where}: not a readable .npz of plain arrays ({type(e).__name__}: {_one_line(e)[:200]})") from e
    train_x = _npz_images(arrays["x_train"], where, "x_train")
    test_x = _npz_images(arrays["x_test"], where, "x_test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{where}: train images are {tuple(train_x.shape[1:])} (C, H, W) but test images "
                        f"{tuple(test_x.shape[1:])}; both splits need one shape")
    train_y = _npz_labels(arrays["y_train"], train_x.shape[0], where, "y_train")
    test_y = _npz_labels(arrays["y_test"], test_x.shape[0], where, "y_test")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < num_classes:
            raise DataError(f"{where}: 'class_names' should list at least {num_classes} texts (labels go up to "
                            f"{num_classes - 1}), got dtype {names.dtype} and shape {tuple(names.shape)}")
        class_names = tuple(str(n) for n in names.tolist())
    else:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    return Dataset(
        train_images_array=train_x, train_labels_array=train_y, test_images_array=test_x, test_labels_array=test_y,
        class_names=class_names, source=os.path.abspath(p), archive_md5=None,
        fingerprint=_fingerprint(train_x, train_y, test_x, test_y, class_names),
    )


def write_digits_npz(target, *, test_fraction: float = 0.3, seed: int = 0) -> Path:
    """scikit-learn's 1797 handwritten digits (8x8, one channel, 10 classes; bundled with scikit-learn) as an
    .npz at ``target``: pixel values 0..16 scaled to 0..255 (x 255/16, rounded), a stratified train/test split
    of ``test_fraction`` drawn with ``seed`` (sklearn's ``train_test_split``). Images stay 8x8: the models
    take that size (ResNet and VGG reduce it to 1x1, the ViT takes 2x2 patches)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=test_fraction,
                                                        random_state=seed, stratify=labels)
    target = Path(target)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as out:
            np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                     class_names=np.array([str(i) for i in range(10)]))

    write_atomically(target, write, ".digits.")
    return target


def class_counts(dataset: Dataset) -> dict:
    """Per-class image counts of each split, and the classes with no image in a split (what ``data verify`` prints)."""
    out = {}
    for split, labels in (("train", dataset.train_labels_array), ("test", dataset.test_labels_array)):
        counts = np.bincount(labels, minlength=dataset.num_classes).tolist()
        out[split] = {"per_class": counts, "empty": [i for i, c in enumerate(counts) if c == 0]}
    return out
