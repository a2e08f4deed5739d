"""The paper's test -- a one-tailed two-sample z-test -- plus what makes a verdict honest.

The paper compares a treatment population (KD students) with a baseline population (independent or
noise-KD students) on one metric with a one-tailed two-sample z-test at significance 0.025:
H0 "the treatment is not more similar to the teacher than the baseline", standard error
``sqrt(s_t^2/n_t + s_b^2/n_b)``, n = 385 per group. Besides the p-value this module reports the
effect size, a confidence interval for the difference, the test's power and minimum detectable
effect, and multiple-comparison adjustments (Holm, Benjamini-Hochberg), so that a verdict says how
much it can be trusted. Degenerate inputs (zero variance) give defined values and a ``note``,
never NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

# scipy.special, not scipy.stats: the same functions (scipy.stats' norm.sf/isf/ppf are ndtr/ndtri
# underneath) without scipy.stats' ~2 s import.
from scipy.special import chdtri, nctdtr, nctdtrinc, ndtr, ndtri, stdtr, stdtrit

from kdclaims.errors import ConfigError

__all__ = [
    "ALPHA",
    "DIRECTIONS",
    "Summary",
    "ZTestResult",
    "z_test",
    "power",
    "minimum_detectable_effect",
    "holm",
    "benjamini_hochberg",
]

ALPHA = 0.025  # the paper's one-tailed significance level
DIRECTIONS = ("less", "greater")


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"alpha must be a number in (0, 0.5), got {alpha!r}") from None
    if not (0.0 < a < 0.5):
        raise ConfigError(f"alpha must be in (0, 0.5) for a one-tailed test, got {alpha!r}")
    return a


def _check_direction(direction) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(
            f"unknown direction {direction!r}; valid directions: 'less' (H_a: treatment mean < "
            f"baseline mean), 'greater' (H_a: treatment mean > baseline mean)"
        )
    return direction


@dataclass(frozen=True)
class Summary:
    """Sufficient statistics of one population on one metric: mean, sample std (ddof=1), size."""

    mean: float
    std: float
    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise ConfigError(
                f"Summary.n must be an integer >= 2 (a sample std needs 2 members), got {self.n!r}"
            )
        if not math.isfinite(self.mean):
            raise ConfigError(f"Summary.mean must be finite, got {self.mean!r}")
        if not (math.isfinite(self.std) and self.std >= 0):
            raise ConfigError(f"Summary.std must be finite and >= 0, got {self.std!r}")
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "std", float(self.std))
        object.__setattr__(self, "n", int(self.n))

    @classmethod
    def from_values(cls, values, *, drop_nonfinite: bool = False) -> "Summary":
        """Summarise per-member metric values (any array-like, e.g. a torch tensor).

        Non-finite values (a diverged student) raise ConfigError unless ``drop_nonfinite=True``,
        which drops them -- never silently. At least 2 finite values are needed.
        """
        if hasattr(values, "detach"):  # torch tensor
            values = values.detach().cpu().numpy()
        arr = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(arr)
        n_bad = int(arr.size - finite.sum())
        if n_bad and not drop_nonfinite:
            raise ConfigError(
                f"{n_bad} of {arr.size} values are not finite (NaN/inf, e.g. a diverged member); "
                f"pass drop_nonfinite=True to summarise the finite ones"
            )
        arr = arr[finite]
        if arr.size < 2:
            raise ConfigError(
                f"need at least 2 finite values to summarise a population (a sample std needs 2 "
                f"members), got {arr.size}"
            )
        return cls(mean=float(arr.mean()), std=float(arr.std(ddof=1)), n=int(arr.size))


@dataclass(frozen=True)
class ZTestResult:
    """One one-tailed two-sample z-test, treatment vs baseline."""

    direction: str  # "less": H_a mean_t < mean_b ; "greater": H_a mean_t > mean_b
    diff: float  # mean_t - mean_b
    se: float  # sqrt(s_t^2/n_t + s_b^2/n_b)
    z: float  # signed so that large positive z favours H_a
    p_value: float  # one-tailed, in [0, 1]
    alpha: float
    reject: bool  # p_value < alpha (strict: p == alpha retains H0)
    effect_size: float  # Cohen's d in the H_a direction (pooled sd); +-inf if pooled sd is 0 and diff != 0
    ci_low: float  # two-sided (1 - 2*alpha) normal CI for diff (95% at alpha = 0.025)
    ci_high: float
    note: str | None  # explanation for degenerate cases

    def to_dict(self) -> dict:
        """Plain-python dict of the fields (infinite z/effect size stay float('inf'))."""
        return asdict(self)


def z_test(treatment: Summary, baseline: Summary, direction: str, alpha: float = ALPHA) -> ZTestResult:
    """One-tailed two-sample z-test of treatment vs baseline (the paper's test).

    ``direction="less"``: H_a is mean_t < mean_b (e.g. lower distance = more similar);
    ``direction="greater"``: H_a is mean_t > mean_b. ``z = sign * diff / se`` with sign -1 for
    "less", so a large positive z always favours H_a and ``p = P(Z >= z)``.

    Zero variance in both groups (se == 0): a difference favouring H_a gives z = +inf, p = 0; one
    against H_a gives z = -inf, p = 1; no difference gives z = 0, p = 1 (no evidence at all); each
    with a ``note``.
    """
    direction = _check_direction(direction)
    alpha = _check_alpha(alpha)
    for what, s in (("treatment", treatment), ("baseline", baseline)):
        if not isinstance(s, Summary):
            raise ConfigError(f"{what} must be a Summary, got {type(s).__name__}")
    sign = -1.0 if direction == "less" else 1.0
    diff = treatment.mean - baseline.mean
    favour = sign * diff  # > 0: the observed difference points towards H_a
    se = math.sqrt(treatment.std**2 / treatment.n + baseline.std**2 / baseline.n)
    note = None
    if se > 0:
        z = favour / se
        p = float(ndtr(-z))  # = norm.sf(z)
    else:
        if favour > 0:
            z, p = math.inf, 0.0
            note = "zero variance in both groups: the difference favours H_a exactly, so z = +inf, p = 0"
        elif favour < 0:
            z, p = -math.inf, 1.0
            note = "zero variance in both groups: the difference goes against H_a exactly, so z = -inf, p = 1"
        else:
            z, p = 0.0, 1.0
            note = "zero variance in both groups and identical means: no evidence for H_a, so z = 0, p = 1"
    p = min(1.0, max(0.0, p))

    nt, nb = treatment.n, baseline.n
    pooled = math.sqrt(((nt - 1) * treatment.std**2 + (nb - 1) * baseline.std**2) / (nt + nb - 2))
    if pooled > 0:
        d = favour / pooled
    elif favour == 0:
        d = 0.0
    else:
        d = math.copysign(math.inf, favour)

    half = float(-ndtri(alpha)) * se  # = norm.isf(alpha) * se
    return ZTestResult(
        direction=direction,
        diff=float(diff),
        se=float(se),
        z=float(z),
        p_value=p,
        alpha=alpha,
        reject=bool(p < alpha),  # strict <
        effect_size=float(d),
        ci_low=float(diff - half),
        ci_high=float(diff + half),
        note=note,
    )


def power(true_diff_in_favour: float, se: float, alpha: float = ALPHA) -> float:
    """P(reject) of the one-tailed z-test when the true mean difference, measured in the H_a
    direction (positive = treatment truly better), is ``true_diff_in_favour`` and the standard error
    is ``se``: ``P(Z > z_{1-alpha} - delta/se)``. Equals alpha at delta = 0.

    se == 0: 1 if delta > 0, else 0 (matching :func:`z_test`'s degenerate cases).
    """
    alpha = _check_alpha(alpha)
    delta = float(true_diff_in_favour)
    se = float(se)
    if not math.isfinite(delta):
        raise ConfigError(f"true_diff_in_favour must be finite, got {true_diff_in_favour!r}")
    if not (math.isfinite(se) and se >= 0):
        raise ConfigError(f"se must be finite and >= 0, got {se!r}")
    if se == 0:
        return 1.0 if delta > 0 else 0.0
    return float(ndtr(ndtri(alpha) + delta / se))  # = norm.sf(norm.isf(alpha) - delta / se), bit for bit


def minimum_detectable_effect(se: float, alpha: float = ALPHA, target_power: float = 0.8) -> float:
    """Smallest true difference (in the H_a direction) detected with probability ``target_power``:
    ``(z_{1-alpha} + z_{target_power}) * se``."""
    alpha = _check_alpha(alpha)
    se = float(se)
    if not (math.isfinite(se) and se >= 0):
        raise ConfigError(f"se must be finite and >= 0, got {se!r}")
    if not (0.0 < float(target_power) < 1.0):
        raise ConfigError(f"target_power must be in (0, 1), got {target_power!r}")
    return float((-ndtri(alpha) + ndtri(target_power)) * se)  # = (norm.isf(alpha) + norm.ppf(power)) * se


def _check_pvalues(p_values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(p_values), dtype=np.float64)
    if arr.ndim != 1:
        raise ConfigError("p_values must be a flat sequence of numbers")
    if arr.size and not np.all((arr >= 0) & (arr <= 1)):  # also rejects NaN
        raise ConfigError(f"p-values must lie in [0, 1], got {arr[~((arr >= 0) & (arr <= 1))][0]!r}")
    return arr


def holm(p_values) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error), in the input order."""
    p = _check_pvalues(p_values)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return [float(x) for x in out]


def benjamini_hochberg(p_values) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in the input order."""
    p = _check_pvalues(p_values)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adj_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj_sorted
    return [float(x) for x in out]
