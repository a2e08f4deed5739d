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
