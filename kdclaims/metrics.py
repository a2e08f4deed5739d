"""Functional-similarity metrics: one obvious place for each.

Every metric takes student logits of shape ``(..., N, C)`` -- any number of leading dims, e.g. one
student ``(N, C)``, a population ``(S, N, C)`` or several populations ``(A, S, N, C)`` -- and returns
the MEAN over the ``N`` test examples for each leading index, as a float64 tensor of shape ``(...)``
(a 0-d tensor for a single ``(N, C)`` student).

* Similarity metrics compare with the teacher's logits, shape ``(N, C)`` (the same for every
  student): :func:`activation_distance`, :func:`js_divergence`, :func:`prediction_dissimilarity`,
  :func:`logits_cosine_similarity`.
* Task metrics compare with the labels, shape ``(N,)``: :func:`test_accuracy`, :func:`test_loss`.

Implementation notes

* Inputs are upcast to float64 internally (float32 -> float64 is exact, so argmax-based metrics are
  unaffected).
* The leading dims are flattened and processed ``chunk_size`` members at a time, converting only one
  chunk to float64 at once, so a ``(385, 10000, 100)`` float32 population never needs 3 GB. Each
  member is computed independently, so results do not depend on the chunking (up to float64
  rounding in torch's reductions, i.e. ~1e-16 relative).
* Results stay on the student's device; the teacher/labels are moved there.
* Non-finite logits (a diverged student) give NaN for that member -- deliberately not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

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


def _as_tensor(x, what: str) -> torch.Tensor:
    import torch  # here, not at the top: collecting claims imports this module
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # noqa: BLE001 - re-raised as a one-line user error
        raise ConfigError(f"{what} must be a tensor or array-like, got {type(x).__name__}") from exc


def _check_logits(student, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_tensor(student, "student logits")
    t = _as_tensor(teacher, "teacher logits")
    if not (s.is_floating_point() and t.is_floating_point()):
        raise ConfigError(
            f"logits must be floating point, got student {s.dtype} and teacher {t.dtype}"
        )
    if t.dim() != 2:
        raise ConfigError(f"teacher logits must have shape (N, C), got {tuple(t.shape)}")
    if s.dim() < 2 or tuple(s.shape[-2:]) != tuple(t.shape):
        raise ConfigError(
            f"student logits must have shape (..., N, C) = (..., {t.shape[0]}, {t.shape[1]}) to "
            f"match the teacher, got {tuple(s.shape)}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ConfigError(f"logits need at least one example and one class, got {tuple(t.shape)}")
    return s, t.to(device=s.device)


def _check_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # here, not at the top: collecting claims imports this module
    s = _as_tensor(logits, "logits")
    y = _as_tensor(labels, "labels")
    if not s.is_floating_point():
        raise ConfigError(f"logits must be floating point, got {s.dtype}")
    if s.dim() < 2 or s.shape[-2] == 0 or s.shape[-1] == 0:
        raise ConfigError(f"logits must have shape (..., N, C) with N, C >= 1, got {tuple(s.shape)}")
    n, c = s.shape[-2], s.shape[-1]
    if y.dim() != 1 or y.shape[0] != n:
        raise ConfigError(f"labels must have shape (N,) = ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"labels must be integer class indices, got {y.dtype}")
    y = y.to(device=s.device, dtype=torch.long)
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ConfigError(
            f"labels must lie in [0, {c - 1}] for {c} classes, got range "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return s, y


def _chunked(
    x: torch.Tensor,
    per_member: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int | None,
) -> torch.Tensor:
    """Apply ``per_member`` (float64 ``(k, N, C)`` -> ``(k,)``) over the leading dims of ``x``."""
    import torch  # here, not at the top: collecting claims imports this module
    lead = tuple(x.shape[:-2])
    n, c = x.shape[-2], x.shape[-1]
    flat = x.reshape(-1, n, c)  # a view when x is contiguous; no float64 copy yet
    members = flat.shape[0]
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // max(1, n * c))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    out = torch.empty(members, dtype=torch.float64, device=x.device)
    for start in range(0, members, chunk_size):
        block = flat[start : start + chunk_size].to(torch.float64)
        out[start : start + block.shape[0]] = per_member(block)
    return out.reshape(lead)


# --------------------------------------------------------------------------------------------
# similarity metrics (student vs teacher)


def activation_distance(student, teacher, *, chunk_size: int | None = None) -> torch.Tensor:
    """Mean over examples of ``||softmax(student) - softmax(teacher)||_2``; in ``[0, sqrt(2)]``.

    Lower is more similar. ``chunk_size`` is the number of leading members processed at once.
    """
    import torch  # here, not at the top: collecting claims imports this module
    s, t = _check_logits(student, teacher)
    pt = torch.softmax(t.to(torch.float64), dim=-1)

    def per_member(block: torch.Tensor) -> torch.Tensor:
        d = torch.linalg.vector_norm(torch.softmax(block, dim=-1) - pt, dim=-1)
        return d.mean(dim=-1).clamp(0.0, SQRT2)

    return _chunked(s, per_member, chunk_size)


def js_divergence(student, teacher, *, chunk_size: int | None = None) -> torch.Tensor:
    """Mean over examples of the Jensen-Shannon divergence of the softmaxes (natural log).

    ``JS(p, q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``; in ``[0, ln 2]``.
    Computed in log space (``log_softmax``, ``log m = logaddexp(log p, log q) - ln 2``) so it is
    finite for any finite logits (1e4 scale included); tiny negative rounding is clamped to 0 and
    rounding above ln 2 to ln 2. Lower is more similar.
    """
    import torch  # here, not at the top: collecting claims imports this module
    s, t = _check_logits(student, teacher)
    lt = torch.log_softmax(t.to(torch.float64), dim=-1)
    pt = lt.exp()

    def per_member(block: torch.Tensor) -> torch.Tensor:
        ls = torch.log_softmax(block, dim=-1)
        lm = torch.logaddexp(ls, lt) - LN2
        # log_softmax of finite logits is finite, so p * (log p - log m) is 0 (not NaN) where p
        # underflows to 0.
        kl_s = (ls.exp() * (ls - lm)).sum(dim=-1)
        kl_t = (pt * (lt - lm)).sum(dim=-1)
        js = (0.5 * (kl_s + kl_t)).clamp(0.0, LN2)
        return js.mean(dim=-1).clamp(0.0, LN2)

    return _chunked(s, per_member, chunk_size)


def prediction_dissimilarity(student, teacher, *, chunk_size: int | None = None) -> torch.Tensor:
    """Fraction of examples whose argmax differs from the teacher's; in ``[0, 1]``.

    Ties resolve to the first maximal index (``torch.argmax``). Lower is more similar.
    """
    import torch  # here, not at the top: collecting claims imports this module
    s, t = _check_logits(student, teacher)
    at = t.argmax(dim=-1)

    def per_member(block: torch.Tensor) -> torch.Tensor:
        return (block.argmax(dim=-1) != at).to(torch.float64).mean(dim=-1)

    return _chunked(s, per_member, chunk_size)


def _unit_scale(x: torch.Tensor) -> torch.Tensor:
    """Divide each logit vector by its max |entry| (zero vectors unchanged): avoids overflow."""
    import torch  # here, not at the top: collecting claims imports this module
    scale = x.abs().amax(dim=-1, keepdim=True)
    return x / torch.where(scale > 0, scale, torch.ones_like(scale))


def logits_cosine_similarity(student, teacher, *, chunk_size: int | None = None) -> torch.Tensor:
    """Mean over examples of the cosine between raw logit vectors; in ``[-1, 1]``.

    Zero vectors: the cosine of any vector with a zero vector is defined as 0 (no direction, so
    neither similar nor opposite). Each vector is first divided by its largest absolute entry, so
    the result is invariant to positive scaling and cannot overflow. Higher is more similar.
    """
    import torch  # here, not at the top: collecting claims imports this module
    s, t = _check_logits(student, teacher)
    tu = _unit_scale(t.to(torch.float64))
    nt = torch.linalg.vector_norm(tu, dim=-1)

    def per_member(block: torch.Tensor) -> torch.Tensor:
        su = _unit_scale(block)
        ns = torch.linalg.vector_norm(su, dim=-1)
        denom = ns * nt
        dot = (su * tu).sum(dim=-1)
        cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
        return cos.clamp(-1.0, 1.0).mean(dim=-1).clamp(-1.0, 1.0)

    return _chunked(s, per_member, chunk_size)


# --------------------------------------------------------------------------------------------
# task metrics (vs labels)


def test_accuracy(logits, labels, *, chunk_size: int | None = None) -> torch.Tensor:
    """Fraction of examples whose argmax equals the label; in ``[0, 1]``. Higher is better."""
    import torch  # here, not at the top: collecting claims imports this module
    s, y = _check_labels(logits, labels)

    def per_member(block: torch.Tensor) -> torch.Tensor:
        return (block.argmax(dim=-1) == y).to(torch.float64).mean(dim=-1)

    return _chunked(s, per_member, chunk_size)


def test_loss(logits, labels, *, chunk_size: int | None = None) -> torch.Tensor:
    """Mean cross-entropy ``logsumexp(x) - x[label]`` (natural log); ``>= 0``. Lower is better."""
    import torch  # here, not at the top: collecting claims imports this module
    s, y = _check_labels(logits, labels)

    def per_member(block: torch.Tensor) -> torch.Tensor:
        picked = block.gather(-1, y.view(1, -1, 1).expand(block.shape[0], -1, 1)).squeeze(-1)
        ce = (torch.logsumexp(block, dim=-1) - picked).clamp_min(0.0)
        return ce.mean(dim=-1)

    return _chunked(s, per_member, chunk_size)


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
    fn: Callable[..., torch.Tensor]
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


def evaluate_metric(name: str, logits, teacher_logits=None, labels=None, *, chunk_size: int | None = None) -> torch.Tensor:
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
