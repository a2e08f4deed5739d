"""Numpy arrays from torch tensors or anything array-like, without importing torch.

A warm run (every member cached) reads logits and labels as numpy and never loads torch (seconds per
process); training still hands over torch tensors. These two functions are where the two meet.
"""

from __future__ import annotations

import numpy as np


def is_torch(x) -> bool:
    """Whether ``x`` is a torch tensor, asked without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def as_numpy(x) -> np.ndarray:
    """``x`` as a numpy array: a CPU torch tensor's own memory (no copy), a GPU one copied to the host;
    half-precision tensors upcast to float32 (exact; bfloat16 has no numpy dtype)."""
    if is_torch(x):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ARRAY_HEAP_BYTES = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_heap_kept: bool | None = None


def keep_freed_arrays_on_the_heap() -> bool:
    """Let glibc's malloc serve numpy's temporaries up to 32 MB from its heap and keep freed ones there.

    The metrics work on (members x examples x classes) float64 blocks of a few hundred KB to a few MB, and make
    several temporaries per block. glibc serves any allocation above its mmap threshold (128 KB at start) with a
    fresh ``mmap`` and returns it on free, so every temporary costs page faults again: measured on the warm smoke
    run, 224k page faults and ~0.4 s of system time, against 24k with the threshold set here. glibc raises the
    threshold by itself after the first large free (up to this same 32 MB), so whether a run paid this depended on
    what it happened to allocate first (unpickling a dataset did it). Set once per process; a no-op (False) where
    the C library is not glibc."""
    global _heap_kept
    if _heap_kept is None:
        _heap_kept = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version"):
                _heap_kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, _ARRAY_HEAP_BYTES)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 2 * _ARRAY_HEAP_BYTES))  # glibc's own ratio: trim at 2x
        except (OSError, AttributeError):
            _heap_kept = False
    return _heap_kept
