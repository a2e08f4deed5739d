"""The arithmetic precisions a profile may train at: a recorded setting, part of every member's key.

Names only (no torch): profiles are checked against them when they are made. What each one does to a
training step is in ``kdclaims.training`` (``matmul_precision``, ``forward_precision``).
"""

from __future__ import annotations

from kdclaims.errors import ConfigError

PRECISIONS = {
    "fp32": "full fp32 arithmetic (TF32 matmuls off on CUDA)",
    "tf32": "fp32 storage, TF32 matmuls and convolutions on CUDA (the same as fp32 on the CPU)",
    "bf16": "bf16 autocast for the forward pass, BatchNorm, loss, weights and optimiser in fp32",
}


def check_precision(precision: str, where: str = "") -> str:
    """``precision`` if it is one of PRECISIONS; else a ConfigError (``where``: " for profile 'x'")."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}{where}: use one of {', '.join(PRECISIONS)}")
    return precision
