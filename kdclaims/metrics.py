"""Functional-similarity metrics: one obvious place for each.

Every metric takes student logits of shape ``(..., N, C)`` -- any number of leading dims, e.g. one
student ``(N, C)``, a population ``(S, N, C)`` or several populations ``(A, S, N, C)`` -- and returns
the MEAN over the ``N`` test examples for each leading index, as float64 of shape ``(...)`` (0-d for
a single ``(N, C)`` student).

* Similarity metrics compare with the teacher's logits, shape ``(N, C)`` (the same for every
  student): :func:`activation_distance`, :func:`js_divergence`, :func:`prediction_dissimilarity`,
  :func:`logits_cosine_similarity`.
* Task metrics compare with the labels, shape ``(N,)``: :func:`test_accuracy`, :func:`test_loss`.

Implementation notes

* One implementation, in numpy: a warm run (every member cached) evaluates claims without importing
  torch, which costs seconds per process. Torch tensors are accepted too (training measures its members
  with these same functions): given a torch student, the result is a float64 torch tensor on the
  student's device; given anything else, a float64 numpy array. No metric needs autograd.
* Inputs are upcast to float64 internally (float32 -> float64 is exact, so argmax-based metrics are
  unaffected).
* The leading dims are flattened and processed ``chunk_size`` members at a time, converting only one
  chunk to float64 at once, so a ``(385, 10000, 100)`` float32 population never needs 3 GB. Each
  member is computed independently, so results do not depend on the chunking (up to float64
  rounding in the reductions, i.e. ~1e-16 relative).
* Non-finite logits (a diverged student) give NaN for that member -- deliberately not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kdclaims.arrays import as_numpy, is_torch
from kdclaims.errors import ConfigError
from kdclaims.registry import Registry

__all__ = [
    "Metric",
    "METRICS",
    "SIMILARITY_METRICS",
    "DEFAULT_CHUNK_ELEMENTS",
    "activation_distance",
    "js_divergence",
    "prediction_dissimilarity",
    "logits_cosine_similarity",
    "test_accuracy",
    "test_loss",
    "get_metric",
    "evaluate_metric",
    "more_similar_direction",
]

LN2 = math.log(2.0)
SQRT2 = math.sqrt(2.0)

#: Default budget for one chunk: members are grouped so that one chunk holds at most this many
#: float64 logits (2**22 elements = 32 MiB per temporary), and always at least one member.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# input handling and chunking


def _as_array(x, what: str) -> np.ndarray:
    try:
        array = as_numpy(x)
    except Exception as exc:  # noqa: BLE001 - re-raised as a one-line user error
        raise ConfigError(f"{what} must be a tensor or array-like, got {type(x).__name__}") from exc
    if array.dtype == object:
        raise ConfigError(f"{what} must be a tensor or array-like of numbers, got {type(x).__name__}")
    return array


def _like(result: np.ndarray, student):
    """The result in the student's kind: a float64 torch tensor on its device for a torch student."""
    if not is_torch(student):
        return result
    import torch  # already loaded: the student is a torch tensor

    return torch.from_numpy(result).to(student.device)  # result: a fresh, contiguous float64 array


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def _check_logits(student, teacher) -> tuple[np.ndarray, np.ndarray]:
    s = _as_array(student, "student logits")
    t = _as_array(teacher, "teacher logits")
    if not (_is_float(s) and _is_float(t)):
        raise ConfigError(
            f"logits must be floating point, got student {_dtype_name(student, s)} and teacher "
            f"{_dtype_name(teacher, t)}"
        )
    if t.ndim != 2:
        raise ConfigError(f"teacher logits must have shape (N, C), got {tuple(t.shape)}")
    if s.ndim < 2 or tuple(s.shape[-2:]) != tuple(t.shape):
        raise ConfigError(
            f"student logits must have shape (..., N, C) = (..., {t.shape[0]}, {t.shape[1]}) to "
            f"match the teacher, got {tuple(s.shape)}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ConfigError(f"logits need at least one example and one class, got {tuple(t.shape)}")
    return s, t


def _check_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    s = _as_array(logits, "logits")
    y = _as_array(labels, "labels")
    if not _is_float(s):
        raise ConfigError(f"logits must be floating point, got {_dtype_name(logits, s)}")
    if s.ndim < 2 or s.shape[-2] == 0 or s.shape[-1] == 0:
        raise ConfigError(f"logits must have shape (..., N, C) with N, C >= 1, got {tuple(s.shape)}")
    n, c = s.shape[-2], s.shape[-1]
    if y.ndim != 1 or y.shape[0] != n:
        raise ConfigError(f"labels must have shape (N,) = ({n},), got {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ConfigError(f"labels must be integer class indices, got {_dtype_name(labels, y)}")
    y = y.astype(np.int64, copy=False)
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ConfigError(
            f"labels must lie in [0, {c - 1}] for {c} classes, got range "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return s, y


def _dtype_name(original, array: np.ndarray) -> str:
    return str(original.dtype) if is_torch(original) else str(array.dtype)


def _chunked(x: np.ndarray, per_member: Callable[[np.ndarray], np.ndarray], chunk_size: int | None) -> np.ndarray:
    """Apply ``per_member`` (float64 ``(k, N, C)`` -> ``(k,)``) over the leading dims of ``x``."""
    lead = tuple(x.shape[:-2])
    n, c = x.shape[-2], x.shape[-1]
    flat = x.reshape(-1, n, c)  # a view when x is contiguous; no float64 copy yet
    members = flat.shape[0]
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // max(1, n * c))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    out = np.empty(members, dtype=np.float64)
    # Non-finite logits are meant to give NaN (see the module docstring), not numpy's warnings about it.
    with np.errstate(all="ignore"):
        for start in range(0, members, chunk_size):
            block = flat[start : start + chunk_size].astype(np.float64)
            out[start : start + block.shape[0]] = per_member(block)
    return out.reshape(lead)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis, shifted by the row maximum (as torch does) so it cannot overflow."""
    shifted = x - _finite_max(x)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - _finite_max(x))
    return e / e.sum(axis=-1, keepdims=True)


def _finite_max(x: np.ndarray) -> np.ndarray:
    """The row maximum to shift by, 0 where it is infinite (so +inf logits give inf or NaN, as in torch)."""
    top = x.max(axis=-1, keepdims=True)
    return np.where(np.isfinite(top), top, 0.0)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = _finite_max(x)
    return np.log(np.exp(x - top).sum(axis=-1)) + top[..., 0]


# --------------------------------------------------------------------------------------------
# similarity metrics (student vs teacher)


def activation_distance(student, teacher, *, chunk_size: int | None = None):
    """Mean over examples of ``||softmax(student) - softmax(teacher)||_2``; in ``[0, sqrt(2)]``.

    Lower is more similar. ``chunk_size`` is the number of leading members processed at once.
    """
    s, t = _check_logits(student, teacher)
    pt = _softmax(t.astype(np.float64))

    def per_member(block: np.ndarray) -> np.ndarray:
        d = np.sqrt(np.square(_softmax(block) - pt).sum(axis=-1))
        return np.clip(d.mean(axis=-1), 0.0, SQRT2)

    return _like(_chunked(s, per_member, chunk_size), student)


def js_divergence(student, teacher, *, chunk_size: int | None = None):
    """Mean over examples of the Jensen-Shannon divergence of the softmaxes (natural log).

    ``JS(p, q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``; in ``[0, ln 2]``.
    Computed in log space (``log_softmax``, ``log m = logaddexp(log p, log q) - ln 2``) so it is
    finite for any finite logits (1e4 scale included); tiny negative rounding is clamped to 0 and
    rounding above ln 2 to ln 2. Lower is more similar.
    """
    s, t = _check_logits(student, teacher)
    with np.errstate(all="ignore"):
        lt = _log_softmax(t.astype(np.float64))
        pt = np.exp(lt)

    def per_member(block: np.ndarray) -> np.ndarray:
        ls = _log_softmax(block)
        lm = np.logaddexp(ls, lt) - LN2
        # log_softmax of finite logits is finite, so p * (log p - log m) is 0 (not NaN) where p
        # underflows to 0.
        kl_s = (np.exp(ls) * (ls - lm)).sum(axis=-1)
        kl_t = (pt * (lt - lm)).sum(axis=-1)
        js = np.clip(0.5 * (kl_s + kl_t), 0.0, LN2)
        return np.clip(js.mean(axis=-1), 0.0, LN2)

    return _like(_chunked(s, per_member, chunk_size), student)


def prediction_dissimilarity(student, teacher, *, chunk_size: int | None = None):
    """Fraction of examples whose argmax differs from the teacher's; in ``[0, 1]``.

    Ties resolve to the first maximal index (numpy's and torch's ``argmax``). Lower is more similar.
    """
    s, t = _check_logits(student, teacher)
    at = t.argmax(axis=-1)

    def per_member(block: np.ndarray) -> np.ndarray:
        return (block.argmax(axis=-1) != at).mean(axis=-1, dtype=np.float64)

    return _like(_chunked(s, per_member, chunk_size), student)


def _unit_scale(x: np.ndarray) -> np.ndarray:
    """Divide each logit vector by its max |entry| (zero vectors unchanged): avoids overflow."""
    scale = np.abs(x).max(axis=-1, keepdims=True)
    return x / np.where(scale > 0, scale, 1.0)


def logits_cosine_similarity(student, teacher, *, chunk_size: int | None = None):
    """Mean over examples of the cosine between raw logit vectors; in ``[-1, 1]``.

    Zero vectors: the cosine of any vector with a zero vector is defined as 0 (no direction, so
    neither similar nor opposite). Each vector is first divided by its largest absolute entry, so
    the result is invariant to positive scaling and cannot overflow. Higher is more similar.
    """
    s, t = _check_logits(student, teacher)
    with np.errstate(all="ignore"):
        tu = _unit_scale(t.astype(np.float64))
        nt = np.sqrt(np.square(tu).sum(axis=-1))

    def per_member(block: np.ndarray) -> np.ndarray:
        su = _unit_scale(block)
        ns = np.sqrt(np.square(su).sum(axis=-1))
        denom = ns * nt
        dot = (su * tu).sum(axis=-1)
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
        return np.clip(np.clip(cos, -1.0, 1.0).mean(axis=-1), -1.0, 1.0)

    return _like(_chunked(s, per_member, chunk_size), student)


# --------------------------------------------------------------------------------------------
# task metrics (vs labels)


def test_accuracy(logits, labels, *, chunk_size: int | None = None):
    """Fraction of examples whose argmax equals the label; in ``[0, 1]``. Higher is better."""
    s, y = _check_labels(logits, labels)

    def per_member(block: np.ndarray) -> np.ndarray:
        return (block.argmax(axis=-1) == y).mean(axis=-1, dtype=np.float64)

    return _like(_chunked(s, per_member, chunk_size), logits)


def test_loss(logits, labels, *, chunk_size: int | None = None):
    """Mean cross-entropy ``logsumexp(x) - x[label]`` (natural log); ``>= 0``. Lower is better."""
    s, y = _check_labels(logits, labels)

    def per_member(block: np.ndarray) -> np.ndarray:
        picked = np.take_along_axis(block, y.reshape(1, -1, 1), axis=-1)[..., 0]
        ce = np.maximum(_logsumexp(block) - picked, 0.0)  # NaN stays NaN, like torch's clamp_min
        return ce.mean(axis=-1)

    return _like(_chunked(s, per_member, chunk_size), logits)


# pytest would collect ``test_accuracy``/``test_loss`` as tests if a test module imports them by
# name; this marks them as not-tests.
test_accuracy.__test__ = False  # type: ignore[attr-defined]
test_loss.__test__ = False  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Metric:
    """One metric: its registry name, a display label and how to read it."""

    name: str
    label: str
    fn: Callable[..., object]  # see the module docstring: numpy in, numpy out; torch in, torch out
    higher_is_better: bool
    compares_to_teacher: bool
    bounds: tuple[float, float] | None  # None: unbounded (test loss)


METRICS: Registry[Metric] = Registry("metric")
get_metric = METRICS.get  # the registered Metric called ``name``; a ConfigError naming the valid ones otherwise
for _metric in (
    Metric("activation_distance", "Activation Distance", activation_distance, False, True, (0.0, SQRT2)),
    Metric("js_divergence", "JS Divergence", js_divergence, False, True, (0.0, LN2)),
    Metric("prediction_dissimilarity", "Prediction Dissimilarity", prediction_dissimilarity, False, True, (0.0, 1.0)),
    Metric("logits_cosine_similarity", "Logits Cosine Similarity", logits_cosine_similarity, True, True, (-1.0, 1.0)),
    Metric("test_accuracy", "Test Accuracy", test_accuracy, True, False, (0.0, 1.0)),
    Metric("test_loss", "Test Loss", test_loss, False, False, None),
):
    METRICS.register(_metric.name, _metric)

#: The four functional-similarity metrics of the paper, in the paper's order.
SIMILARITY_METRICS: tuple[str, ...] = (
    "activation_distance",
    "js_divergence",
    "prediction_dissimilarity",
    "logits_cosine_similarity",
)


def evaluate_metric(name: str, logits, teacher_logits=None, labels=None, *, chunk_size: int | None = None):
    """Evaluate metric ``name`` on ``logits`` ``(..., N, C)``: against ``teacher_logits`` ``(N, C)``
    for similarity metrics, against ``labels`` ``(N,)`` for task metrics. Returns shape ``(...)``."""
    metric = get_metric(name)
    if metric.compares_to_teacher:
        if teacher_logits is None:
            raise ConfigError(f"metric {name!r} compares with the teacher: pass teacher_logits")
        return metric.fn(logits, teacher_logits, chunk_size=chunk_size)
    if labels is None:
        raise ConfigError(f"metric {name!r} compares with the labels: pass labels")
    return metric.fn(logits, labels, chunk_size=chunk_size)


def more_similar_direction(name: str) -> str:
    """The z-test alternative meaning "treatment better" on metric ``name``.

    ``"less"`` for lower-is-better metrics (distances, dissimilarity, test loss), ``"greater"`` for
    higher-is-better ones (cosine similarity, test accuracy).
    """
    return "greater" if get_metric(name).higher_is_better else "less"


# --------------------------------------------------------------------------------------------
# reading a metric as a similarity in [0, 1] (the compression threshold of Section 3)

#: The paper asks for "95% or above similarity with the teacher across all similarity metrics" but
#: does not say how a distance becomes a similarity. Our reading: each distance divided by its
#: maximum, subtracted from 1; cosine as it is. ``(scale, offset)``: similarity = offset + scale * value.
SIMILARITY_READINGS: dict[str, tuple[float, float, str]] = {
    "activation_distance": (-1.0 / SQRT2, 1.0, "1 − AD/√2"),
    "js_divergence": (-1.0 / LN2, 1.0, "1 − JS/ln 2"),
    "prediction_dissimilarity": (-1.0, 1.0, "1 − prediction dissimilarity (= agreement)"),
    "logits_cosine_similarity": (1.0, 0.0, "cosine similarity"),
}


def as_similarity(name: str, value):
    """``value`` of similarity metric ``name`` read as a similarity (1 = identical to the teacher)."""
    if name not in SIMILARITY_READINGS:
        raise ConfigError(f"metric {name!r} has no similarity reading; use one of {', '.join(SIMILARITY_READINGS)}")
    scale, offset, _ = SIMILARITY_READINGS[name]
    return offset + scale * value
