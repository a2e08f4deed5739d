"""Group-sequential testing of a claim (issue #19): error-spending boundaries and the stopping rules.

A claim compares a treatment population with a baseline population with a one-tailed test at
``alpha`` (0.025). Instead of training all N members per population (385 in the paper) and testing
once, the sequential mode looks at the data K times as members arrive (by default after 25, 50,
100, 200 and 385 members per population) and stops as soon as the answer is clear. This module is
the statistics of that design only -- pure numpy, with scipy's special functions and root finder
imported where used -- so that the runner can drive it look by look. The rules that apply it to
the catalogue's claims and populations (every kind, which populations keep growing) are
:mod:`kdclaims.sequential_run`'s.

The rules, as a clinical-trials statistician would set up a group-sequential design:

Statistic and information. At look k the claim's test gives an estimate of the treatment's
improvement in the H_a direction, ``favour_k = sign * (mean_t - mean_b)`` (sign -1 for "less"),
and its standard error ``se_k``; ``z_k = favour_k / se_k`` and the information is
``I_k = 1 / se_k**2``. Under H0 the z_k are (asymptotically) the canonical joint distribution:
multivariate normal with ``corr(z_j, z_k) = sqrt(I_j / I_k)`` for j <= k. The information fraction
is ``t_k = I_k / I_max`` with ``I_max`` the information planned at the final look;
:func:`information_fraction` estimates it with the variances seen so far, ``t_k =
(s_t^2/N_t + s_b^2/N_b)^-1 ... `` i.e. ``(s_t^2/n_t + s_b^2/n_b)^-1 / (s_t^2/N_t + s_b^2/N_b)^-1``,
which is n_k/N for equal group sizes and handles unequal sizes (cached members beyond a look).
With small groups the statistic may be Welch's t with its degrees of freedom; it is then put on the
z scale through its p-value, ``z = Phi^-1(T_df(t))`` (the "significance level" approach of
Jennison & Turnbull, 2000), and the boundaries below apply unchanged.

Efficacy (H0 rejected). H0 is rejected at the first look with ``z_k > b_k`` (strict, as
:func:`kdclaims.stats.z_test` rejects only when ``p < alpha``). The boundaries come from an
error-spending function alpha(t) (Lan & DeMets, 1983): b_1 spends alpha(t_1), and each later b_k is
solved (brentq, to 1e-6 or better) so that the probability under H0 of crossing first at look k,
given the boundaries already used at looks 1..k-1, is ``alpha(t_k) - (alpha spent so far)``.
Because only the already-used boundaries and the information actually observed enter, unequal and
unplanned look sizes are allowed. Spending functions (:data:`SPENDING_FUNCTIONS`):

* ``"obf"`` -- Lan-DeMets O'Brien-Fleming-type, ``alpha(t) = 2 * (1 - Phi(z_{1-alpha/2} / sqrt t))``
  for the one-sided level alpha. This is gsDesign's ``sfLDOF`` and reproduces its tabulated
  boundaries 4.877, 3.357, 2.680, 2.290, 2.031 (K = 5, one-sided 0.025). Writing ``z_{1-alpha}``
  instead of ``z_{1-alpha/2}`` would not: alpha(1) would then be 2*alpha.
* ``"pocock"`` -- Lan-DeMets Pocock-type, ``alpha(t) = alpha * ln(1 + (e - 1) t)``; gsDesign's
  boundaries 2.438, 2.427, 2.410, 2.397, 2.386.

These are the spending-function approximations to the classic designs; the classic fixed-shape
designs of O'Brien & Fleming (``c * sqrt(K/k)``: 4.562, 3.226, 2.634, 2.281, 2.040) and Pocock
(constant 2.413) are different numbers and come from :func:`fixed_shape_boundaries`, which uses
the same numerical machinery. The harness uses the spending functions.

Final look. The last look of the design is the one that reaches the planned maximum information
(t_k >= 1) or the one the caller declares final (``final=True``, e.g. the members ran out). The
final look spends all alpha that is left, whatever t_K is: alpha(t) is evaluated at
``min(t_k, 1)`` for interim looks and at 1 for the final look, so the whole alpha is always spent
and never more. A look with t_k >= 1 must be the last. The correlations always use the observed
t_k, so information beyond the plan (t_K > 1) is handled exactly. If the alpha already spent is not
below alpha(t_k) (which the rules above prevent unless a caller passes looser boundaries), the look
spends nothing: ``b_k = +inf``.

Equivalence (H0 retained, for claims whose expected outcome is "retain"). The verdict rules count
a retained H0 as reproduced only when the one-sided upper confidence bound of the improvement is
below the stated ``margin``. Sequentially this is the one-sided test of H0': improvement >= margin
against H1': improvement < margin, with statistic ``w_k = (margin - favour_k) / se_k``, which has
the same canonical joint distribution. It gets its own error-spending boundaries ``c_k`` at the
same alpha (by default with the same spending function as efficacy): H0' is rejected -- the
retained H0 is established and the claim stops -- at the first look where
``favour_k + c_k * se_k < margin``. The ``favour_k + c_k * se_k`` are a repeated one-sided
confidence bound (Jennison & Turnbull, 2000, ch. 9): their simultaneous coverage is 1 - alpha
however the trial stops, so the equivalence conclusion has error at most alpha, as the fixed
design's 97.5% bound has. We prefer spending to a Bonferroni split (c_k = z_{1 - alpha/K}) because
it is less conservative and, with O'Brien-Fleming-type spending, keeps c_K close to the fixed
design's 1.96 (2.031 for K = 5 equal looks), so the final look loses little.

Non-binding. The equivalence stop is a futility stop for the efficacy test; the efficacy boundaries
are computed as if it never happened, so the type-I error of the efficacy test is at most alpha
whether or not a futility stop is taken (taking it can only lower the rejection rate). Claims
whose expected outcome is "reject" have no futility stop: they continue to the final look unless
efficacy is crossed. When both are crossed at one look, efficacy wins: H0 was rejected, so a
retained H0 cannot be claimed.

Outcome. The result says ``outcome`` "reject" or "retain" (as the fixed design's) once the design
stops, with the stopping look and the reason ("efficacy", "equivalence", "final"), and for
"retain"-expected claims whether the repeated upper bound is below the margin at that look
(``equivalence_shown``). A last look that is not final and crosses nothing gives outcome None:
continue.

Numerics. Crossing probabilities are computed by the recursive numerical integration of Armitage,
McPherson & Rowe (1969) on the grid of Jennison & Turnbull (2000, ch. 19): Simpson's rule on
6r - 1 points per look (r = 32 by default, errors well below 1e-6). No Python group-sequential
library is mature enough to depend on (the PyPI ones are 0.x single-author packages), and this
integration is exact to the grid and stable for the tiny first-look levels (about 5e-7) that
scipy's Monte-Carlo multivariate normal cannot resolve; the tests cross-check it against
``scipy.stats.multivariate_normal`` and against simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from kdclaims.errors import ConfigError
from kdclaims.stats import _check_alpha  # one check of a one-sided level, shared with the fixed-n tests

__all__ = [
    "ALPHA",
    "PAPER_LOOKS",
    "SPENDING_FUNCTIONS",
    "EXPECTED_OUTCOMES",
    "obf_spending",
    "pocock_spending",
    "spending_function",
    "spending_boundaries",
    "next_boundary",
    "equivalence_critical_values",
    "fixed_shape_boundaries",
    "crossing_probabilities",
    "information_fraction",
    "z_from_t",
    "LookResult",
    "SequentialResult",
    "SequentialDecisions",
    "sequential_test",
    "sequential_decisions",
    "simulate_looks",
]

ALPHA = 0.025  # the paper's one-tailed level (the same value as kdclaims.stats.ALPHA)
PAPER_LOOKS = (25, 50, 100, 200, 385)  # members per population at each look, paper profile
EXPECTED_OUTCOMES = ("reject", "retain")
DIRECTIONS = ("less", "greater")
GRID_R = 32  # Jennison & Turnbull's grid parameter: 6r - 1 points per look
BOUNDARY_TOL = 1e-9  # brentq tolerance on each boundary (the tests ask for 1e-6)
_BRACKET = (-10.0, 40.0)  # every boundary lies inside; crossing probability is 0 above 40


# --------------------------------------------------------------------------------------------
# Spending functions
# --------------------------------------------------------------------------------------------

def obf_spending(t, alpha: float = ALPHA):
    """Lan-DeMets O'Brien-Fleming-type spending, one-sided: ``2 * (1 - Phi(z_{1-alpha/2}/sqrt t))``.

    Accepts a scalar or array of information fractions in [0, 1]; alpha(0) = 0, alpha(1) = alpha.
    """
    from scipy.special import ndtr, ndtri

    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        spent = 2.0 * ndtr(-ndtri(1.0 - alpha / 2.0) / np.sqrt(t))
    return np.where(t > 0, spent, 0.0)[()]


def pocock_spending(t, alpha: float = ALPHA):
    """Lan-DeMets Pocock-type spending: ``alpha * ln(1 + (e - 1) t)``; alpha(0) = 0, alpha(1) = alpha."""
    t = np.asarray(t, dtype=np.float64)
    return (alpha * np.log1p((math.e - 1.0) * t))[()]


SPENDING_FUNCTIONS: dict[str, Callable] = {"obf": obf_spending, "pocock": pocock_spending}


def spending_function(name: str) -> Callable:
    """The spending function called ``name`` ("obf" or "pocock"); a ConfigError otherwise."""
    try:
        return SPENDING_FUNCTIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown spending function {name!r}; valid: 'obf' (Lan-DeMets O'Brien-Fleming-type), "
            f"'pocock' (Lan-DeMets Pocock-type)"
        ) from None


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def _check_fractions(fractions, *, final: bool | None) -> tuple[np.ndarray, bool]:
    """Validate information fractions; return them and whether the last look is final."""
    try:
        t = np.asarray(fractions, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ConfigError(f"information fractions must be numbers, got {fractions!r}") from None
    if t.size == 0:
        raise ConfigError("at least one look is needed (information fractions are empty)")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ConfigError(f"information fractions must be finite and > 0, got {t.tolist()}")
    if np.any(np.diff(t) <= 0):
        raise ConfigError(f"information fractions must increase strictly from look to look, got {t.tolist()}")
    reached = np.flatnonzero(t >= 1.0)
    if reached.size and reached[0] < t.size - 1:
        raise ConfigError(
            f"look {reached[0] + 1} reaches the planned maximum information (t = {t[reached[0]]:.4g}), "
            f"so it must be the last look; got {t.size} looks"
        )
    is_final = bool(t[-1] >= 1.0) if final is None else bool(final)
    if final is False and t[-1] >= 1.0:
        raise ConfigError(f"the last look reaches the planned maximum information (t = {t[-1]:.4g}), so it is final")
    return t, is_final


def _spending_levels(t: np.ndarray, is_final: bool, alpha: float, spending: str) -> np.ndarray:
    """Cumulative alpha allowed at each look: alpha(min(t, 1)), and the whole alpha at a final look."""
    cumulative = np.asarray(spending_function(spending)(np.minimum(t, 1.0), alpha), dtype=np.float64).reshape(t.shape)
    if is_final:
        cumulative[-1] = alpha
    return cumulative


# --------------------------------------------------------------------------------------------
# Numerical integration (Armitage-McPherson-Rowe; grid of Jennison & Turnbull ch. 19)
# --------------------------------------------------------------------------------------------

def _grid(mean: float, upper: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Simpson nodes and weights for z on (-inf, upper) around ``mean`` (J&T 19.2.1)."""
    i = np.arange(1, 6 * r)
    x = np.empty(i.size)
    low, mid, high = i < r, (i >= r) & (i <= 5 * r), i > 5 * r
    x[low] = -3.0 - 4.0 * np.log(r / i[low])
    x[mid] = -3.0 + 3.0 * (i[mid] - r) / (2.0 * r)
    x[high] = 3.0 + 4.0 * np.log(r / (6.0 * r - i[high]))
    x += mean
    if upper < x[-1]:
        keep = x < upper
        if keep.sum() < 1:  # the continuation region is (numerically) empty
            return np.empty(0), np.empty(0)
        x = np.append(x[keep], upper)
    odd = x
    nodes = np.empty(2 * odd.size - 1)
    nodes[0::2] = odd
    nodes[1::2] = 0.5 * (odd[:-1] + odd[1:])
    weights = np.zeros(nodes.size)
    h = np.diff(odd)  # Simpson on each panel [odd_j, odd_{j+1}] with its midpoint
    weights[0:-1:2] += h / 6.0
    weights[1::2] += 4.0 * h / 6.0
    weights[2::2] += h / 6.0
    return nodes, weights


class _Recursion:
    """Sub-density of z_k on the continuation region (no crossing up to look k), look by look."""

    def __init__(self, t: np.ndarray, drift: float, r: int):
        self.t, self.drift, self.r = t, float(drift), r
        self.k = 0  # looks already absorbed
        self.nodes = self.weighted = None  # weighted = density * Simpson weight at the nodes

    def _mean(self, k: int) -> float:
        return self.drift * math.sqrt(self.t[k])

    def cross_probability(self, boundary: float) -> float:
        """P(first crossing at the next look | boundaries so far) if its boundary is ``boundary``."""
        from scipy.special import ndtr

        k = self.k
        if boundary == math.inf:
            return 0.0
        if k == 0:
            return float(ndtr(self._mean(0) - boundary))
        if self.nodes.size == 0:
            return 0.0
        t0, t1 = self.t[k - 1], self.t[k]
        dt = t1 - t0
        arg = (self.nodes * math.sqrt(t0) + self.drift * dt - boundary * math.sqrt(t1)) / math.sqrt(dt)
        return float(np.dot(self.weighted, ndtr(arg)))

    def absorb(self, boundary: float) -> None:
        """Fix the next look's boundary and move the sub-density past it."""
        k = self.k
        nodes, weights = _grid(self._mean(k), boundary, self.r)
        if k == 0:
            density = np.exp(-0.5 * (nodes - self._mean(0)) ** 2) / math.sqrt(2 * math.pi)
        elif nodes.size == 0 or self.nodes.size == 0:
            nodes, weights, density = np.empty(0), np.empty(0), np.empty(0)
        else:
            t0, t1 = self.t[k - 1], self.t[k]
            dt = t1 - t0
            diff = (nodes[:, None] * math.sqrt(t1) - self.nodes[None, :] * math.sqrt(t0) - self.drift * dt) / math.sqrt(dt)
            kernel = np.exp(-0.5 * diff**2) * math.sqrt(t1 / dt) / math.sqrt(2 * math.pi)
            density = kernel @ self.weighted
        self.nodes, self.weighted = nodes, density * weights
        self.k += 1


def _solve_boundary(recursion: _Recursion, target: float) -> float:
    """The boundary whose first-crossing probability at the next look is ``target``."""
    from scipy.optimize import brentq
    from scipy.special import ndtri

    if target <= 0.0:
        return math.inf
    if recursion.k == 0:  # closed form: N(mean, 1) tail
        return float(recursion._mean(0) - ndtri(target))
    lo, hi = _BRACKET
    f_lo = recursion.cross_probability(lo) - target
    if f_lo <= 0:  # target above what is left: everything not yet stopped must cross
        return lo
    return float(brentq(lambda b: recursion.cross_probability(b) - target, lo, hi, xtol=BOUNDARY_TOL, rtol=4 * np.finfo(float).eps))


def crossing_probabilities(boundaries, fractions, *, drift: float = 0.0, r: int = GRID_R) -> np.ndarray:
    """P(first crossing at look k) for each k, for boundaries ``b_k`` on the z scale at information
    fractions ``t_k`` (only their ratios matter), when ``E z_k = drift * sqrt(t_k)`` -- drift 0 is
    H0; ``drift`` is the expected z at t = 1. Their cumulative sum under H0 is the alpha spent; under
    an alternative it is the power. ``+inf`` boundaries are allowed (no rejection at that look).
    """
    b = np.asarray(boundaries, dtype=np.float64).ravel()
    t = np.asarray(fractions, dtype=np.float64).ravel()
    if b.shape != t.shape:
        raise ConfigError(f"need one boundary per look: {b.size} boundaries for {t.size} looks")
    if t.size == 0 or np.any(t <= 0) or np.any(np.diff(t) <= 0) or np.any(np.isnan(b)):
        raise ConfigError(f"information fractions must be > 0 and increase strictly, and boundaries not NaN; got {t.tolist()}")
    recursion = _Recursion(t, drift, r)
    out = np.empty(t.size)
    for k, bk in enumerate(b):
        out[k] = recursion.cross_probability(float(bk))
        recursion.absorb(float(bk))
    return out


# --------------------------------------------------------------------------------------------
# Boundaries
# --------------------------------------------------------------------------------------------

def spending_boundaries(fractions, *, alpha: float = ALPHA, spending: str = "obf", final: bool | None = None,
                        r: int = GRID_R) -> np.ndarray:
    """Efficacy boundaries (z scale) of the error-spending design at information fractions ``t_k``.

    ``final``: whether the last look is the final one and spends all remaining alpha; by default it
    is final exactly when it reaches the planned maximum information (t >= 1). Each boundary solves
    ``P_H0(first crossing at look k) = alpha(t_k) - alpha(t_{k-1})`` given the earlier ones. This is
    also what :func:`next_boundary` gives look by look when the earlier boundaries are these.
    """
    alpha = _check_alpha(alpha)
    t, is_final = _check_fractions(fractions, final=final)
    cumulative = _spending_levels(t, is_final, alpha, spending)
    recursion = _Recursion(t, 0.0, r)
    spent = 0.0
    out = np.empty(t.size)
    for k in range(t.size):
        out[k] = _solve_boundary(recursion, cumulative[k] - spent)
        spent += recursion.cross_probability(out[k])
        recursion.absorb(out[k])
    return out


def next_boundary(fractions, previous_boundaries, *, alpha: float = ALPHA, spending: str = "obf",
                  final: bool | None = None, r: int = GRID_R) -> float:
    """The efficacy boundary for the current look, following the information actually observed.

    ``fractions``: the information fractions of every look so far, the current one last (e.g.
    from :func:`information_fraction`); ``previous_boundaries``: the boundaries actually used at the
    earlier looks (one fewer). The earlier boundaries are fixed as used; the current one spends
    ``alpha(t_k)`` minus the alpha those boundaries actually spent at the observed fractions (so a
    look that came early, late, or with more members than planned is handled, as the spending
    approach allows). ``final`` as in :func:`spending_boundaries`.
    """
    alpha = _check_alpha(alpha)
    t, is_final = _check_fractions(fractions, final=final)
    previous = np.asarray(previous_boundaries, dtype=np.float64).ravel()
    if previous.size != t.size - 1:
        raise ConfigError(
            f"need the boundaries used at the {t.size - 1} earlier look(s), got {previous.size}"
        )
    cumulative = _spending_levels(t, is_final, alpha, spending)
    recursion = _Recursion(t, 0.0, r)
    spent = 0.0
    for bk in previous:
        spent += recursion.cross_probability(float(bk))
        recursion.absorb(float(bk))
    return _solve_boundary(recursion, cumulative[-1] - spent)


def equivalence_critical_values(fractions, *, alpha: float = ALPHA, spending: str = "obf",
                                final: bool | None = None, r: int = GRID_R) -> np.ndarray:
    """Per-look critical values ``c_k`` of the repeated one-sided upper confidence bound
    ``favour_k + c_k * se_k`` used by the equivalence (retained-H0) stop.

    The test of H0': improvement >= margin has the statistic ``(margin - favour_k) / se_k``, whose
    joint law at the margin is the canonical one; so ``c_k`` are the error-spending boundaries of
    that test, and coincide numerically with :func:`spending_boundaries` for the same spending
    function. Look by look, use :func:`next_boundary` with the c's used so far.
    """
    return spending_boundaries(fractions, alpha=alpha, spending=spending, final=final, r=r)


def fixed_shape_boundaries(n_looks: int, *, shape: str = "obf", alpha: float = ALPHA, fractions=None,
                           r: int = GRID_R) -> np.ndarray:
    """The classic designs of Jennison & Turnbull (2000, ch. 2): O'Brien-Fleming ``c * sqrt(K/k)``
    -- more generally ``c / sqrt(t_k)`` -- or Pocock's constant ``c``, with ``c`` solved so that the
    total type-I error is ``alpha``. Equally spaced looks unless ``fractions`` are given. Not the
    harness's boundaries (those are :func:`spending_boundaries`); a check of the same machinery.
    """
    from scipy.optimize import brentq

    alpha = _check_alpha(alpha)
    if isinstance(n_looks, bool) or not isinstance(n_looks, (int, np.integer)) or n_looks < 1:
        raise ConfigError(f"n_looks must be an integer >= 1, got {n_looks!r}")
    t = np.arange(1, n_looks + 1) / n_looks if fractions is None else _check_fractions(fractions, final=True)[0]
    if t.size != n_looks:
        raise ConfigError(f"{t.size} information fractions for {n_looks} looks")
    if shape == "obf":
        profile = 1.0 / np.sqrt(t / t[-1])
    elif shape == "pocock":
        profile = np.ones(t.size)
    else:
        raise ConfigError(f"unknown boundary shape {shape!r}; valid: 'obf' (O'Brien-Fleming), 'pocock'")
    c = brentq(lambda c: crossing_probabilities(c * profile, t, r=r).sum() - alpha, 0.5, 10.0, xtol=BOUNDARY_TOL)
    return c * profile


# --------------------------------------------------------------------------------------------
# Statistics at a look
# --------------------------------------------------------------------------------------------

def information_fraction(n_treatment, n_baseline, *, planned_treatment: int, planned_baseline: int,
                         sd_treatment=1.0, sd_baseline=1.0):
    """Information fraction ``I_k / I_max`` of a two-sample comparison with group sizes ``n`` of
    the planned ``planned_*`` members, both informations taken with the current standard deviation
    estimates: ``(s_t^2/N_t + s_b^2/N_b) / (s_t^2/n_t + s_b^2/n_b)``. Equal sizes give n/N whatever
    the sds; unequal sizes (one population has more members cached) are weighted by the variances.
    Works elementwise on arrays.
    """
    n_t = np.asarray(n_treatment, dtype=np.float64)
    n_b = np.asarray(n_baseline, dtype=np.float64)
    if np.any(n_t < 1) or np.any(n_b < 1) or planned_treatment < 1 or planned_baseline < 1:
        raise ConfigError("group sizes must be >= 1")
    v_t = np.asarray(sd_treatment, dtype=np.float64) ** 2
    v_b = np.asarray(sd_baseline, dtype=np.float64) ** 2
    if np.any(v_t + v_b <= 0):  # no variance at all: information is proportional to the sizes
        v_t = v_b = np.ones(np.broadcast(v_t, v_b).shape)
    return ((v_t / planned_treatment + v_b / planned_baseline) / (v_t / n_t + v_b / n_b))[()]


def z_from_t(t_statistic, df):
    """A t statistic put on the z scale through its p-value: ``Phi^-1(T_df(t))`` (both tails kept
    accurate). Infinite df gives t back; elementwise on arrays."""
    from scipy.special import ndtri, stdtr

    t = np.asarray(t_statistic, dtype=np.float64)
    df = np.asarray(df, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        z = np.where(t > 0, -ndtri(stdtr(df, -t)), ndtri(stdtr(df, t)))
    return np.where(np.isinf(df), t, z)[()]


def _ratio(numerator, se):
    """numerator / se with se == 0 read as kdclaims.stats does: +-inf by the sign, 0 for 0/0."""
    numerator, se = np.broadcast_arrays(np.asarray(numerator, dtype=np.float64), np.asarray(se, dtype=np.float64))
    degenerate = np.where(numerator > 0, np.inf, np.where(numerator < 0, -np.inf, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, numerator / se, degenerate)


# --------------------------------------------------------------------------------------------
# The sequential test
# --------------------------------------------------------------------------------------------

_REASONS = ("efficacy", "equivalence", "final")


@dataclass(frozen=True)
class SequentialDecisions:
    """Decisions of many sequential trials at once (arrays over trials).

    ``stop_look``: 0-based index of the look where the trial stopped, -1 if it has not stopped;
    ``reject``: H0 rejected (efficacy crossed); ``reason``: 0 efficacy, 1 equivalence, 2 final,
    -1 not stopped; ``equivalence_shown``: the trial stopped with H0 retained and the repeated upper
    bound below the margin -- a reproduced retain claim (always False without a margin); ``efficacy_boundaries`` and
    ``equivalence_critical`` are the per-look values used (shared by all trials); ``alpha_spent``
    the cumulative alpha allowed at each look.
    """

    stop_look: np.ndarray
    reject: np.ndarray
    reason: np.ndarray
    equivalence_shown: np.ndarray
    efficacy_boundaries: np.ndarray
    equivalence_critical: np.ndarray | None
    alpha_spent: np.ndarray


def _check_expected(expected: str, margin) -> float | None:
    if expected not in EXPECTED_OUTCOMES:
        raise ConfigError(f"expected outcome must be 'reject' or 'retain' (H0), got {expected!r}")
    if expected == "retain":
        if margin is None:
            raise ConfigError("a claim that expects a retained H0 needs a margin for the upper confidence bound")
        m = float(margin)
        if not (math.isfinite(m) and m > 0):
            raise ConfigError(f"margin must be finite and > 0, got {margin!r}")
        return m
    return None


def sequential_decisions(favour, se, fractions, *, expected: str = "reject", margin: float | None = None,
                         df=None, alpha: float = ALPHA, spending: str = "obf",
                         equivalence_spending: str | None = None, final: bool | None = None) -> SequentialDecisions:
    """Vectorised sequential test: ``favour`` and ``se`` are arrays (trials x looks) of the
    improvement estimate in the H_a direction and its standard error; ``fractions`` (looks,) the
    information fractions shared by all trials; ``df`` (optional, same shape) Welch degrees of
    freedom when the statistics are t statistics. Rules as in the module docstring.
    """
    alpha = _check_alpha(alpha)
    margin = _check_expected(expected, margin)
    favour = np.atleast_2d(np.asarray(favour, dtype=np.float64))
    se = np.atleast_2d(np.asarray(se, dtype=np.float64))
    t, is_final = _check_fractions(fractions, final=final)
    if favour.shape != se.shape or favour.shape[1] != t.size:
        raise ConfigError(f"favour and se must be (trials, {t.size} looks) arrays, got {favour.shape} and {se.shape}")
    if np.any(~np.isfinite(favour)) or np.any(~(se >= 0)) or np.any(~np.isfinite(se)):
        raise ConfigError("estimates must be finite and standard errors finite and >= 0")
    to_z = (lambda x: x) if df is None else (lambda x: z_from_t(x, np.broadcast_to(df, favour.shape)))

    boundaries = spending_boundaries(t, alpha=alpha, spending=spending, final=is_final)
    crossed = to_z(_ratio(favour, se)) > boundaries  # strict, like p < alpha
    critical = None
    shown = np.zeros(favour.shape, dtype=bool)
    if margin is not None:
        critical = equivalence_critical_values(t, alpha=alpha, spending=equivalence_spending or spending, final=is_final)
        shown = to_z(_ratio(margin - favour, se)) > critical  # favour + c se < margin, on the z scale
    stops = crossed | shown
    if is_final:
        stops[:, -1] = True
    any_stop = stops.any(axis=1)
    stop_look = np.where(any_stop, stops.argmax(axis=1), -1)
    rows = np.arange(favour.shape[0])
    at = np.maximum(stop_look, 0)
    reject = any_stop & crossed[rows, at]
    equivalence = any_stop & ~reject & shown[rows, at]
    reason = np.where(~any_stop, -1, np.where(reject, 0, np.where(equivalence, 1, 2)))
    return SequentialDecisions(
        stop_look=stop_look, reject=reject, reason=reason, equivalence_shown=equivalence,
        efficacy_boundaries=boundaries, equivalence_critical=critical,
        alpha_spent=_spending_levels(t, is_final, alpha, spending),
    )


@dataclass(frozen=True)
class LookResult:
    """One look of :func:`sequential_test`."""

    look: int  # 1-based
    information_fraction: float
    favour: float  # improvement estimate in the H_a direction
    se: float
    z: float  # on the z scale (a t statistic converted through its p-value)
    efficacy_boundary: float
    alpha_spent: float  # cumulative alpha allowed up to this look
    upper_bound: float | None  # repeated one-sided upper confidence bound of the improvement
    equivalence_critical: float | None  # c_k of that bound
    action: str  # "efficacy" | "equivalence" | "final" | "continue"


@dataclass(frozen=True)
class SequentialResult:
    """The sequential test of one claim, look by look, and where it ended."""

    looks: tuple[LookResult, ...]
    outcome: str | None  # "reject" | "retain" (H0); None: not stopped yet, continue
    stopped_at: int | None  # 1-based look, None if not stopped
    reason: str | None  # "efficacy" | "equivalence" | "final" | None
    equivalence_shown: bool | None  # retain-expected claims: the upper bound fell below the margin
    expected: str
    margin: float | None
    spending: str


def sequential_test(differences, standard_errors, *, direction: str, expected: str, fractions=None,
                    max_information: float | None = None, margin: float | None = None, df=None,
                    alpha: float = ALPHA, spending: str = "obf", equivalence_spending: str | None = None,
                    final: bool | None = None) -> SequentialResult:
    """Run the sequential test of one claim on the looks so far.

    ``differences``: mean_t - mean_b at each look; ``standard_errors``: their standard errors;
    ``direction``: "less" or "greater", the H_a direction as in :func:`kdclaims.stats.z_test`;
    ``expected``: the paper's outcome, "reject" or "retain" (the latter needs ``margin``, in the
    metric's units, for the improvement's upper bound). Information fractions: ``fractions``, or
    ``max_information`` with ``t_k = se_k^-2 / max_information``. ``df``: per-look Welch degrees of
    freedom if the statistics are t statistics. The looks after the stopping look are reported but
    decide nothing.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; valid: 'less', 'greater'")
    diff = np.asarray(differences, dtype=np.float64).ravel()
    se = np.asarray(standard_errors, dtype=np.float64).ravel()
    if diff.shape != se.shape:
        raise ConfigError(f"{diff.size} differences for {se.size} standard errors")
    if (fractions is None) == (max_information is None):
        raise ConfigError("give either information fractions or the planned maximum information")
    if fractions is None:
        if not (float(max_information) > 0) or np.any(se <= 0):
            raise ConfigError("max_information and every standard error must be > 0 to derive information fractions")
        fractions = se**-2 / float(max_information)
    favour = diff * (-1.0 if direction == "less" else 1.0)
    dfs = None if df is None else np.asarray(df, dtype=np.float64).reshape(1, -1)
    d = sequential_decisions(favour[None, :], se[None, :], fractions, expected=expected, margin=margin, df=dfs,
                             alpha=alpha, spending=spending, equivalence_spending=equivalence_spending, final=final)
    t = np.asarray(fractions, dtype=np.float64).ravel()
    z = _ratio(favour, se) if dfs is None else z_from_t(_ratio(favour, se), dfs[0])
    stop = int(d.stop_look[0])
    reason = _REASONS[int(d.reason[0])] if stop >= 0 else None
    critical = d.equivalence_critical
    upper = None
    if critical is not None:
        if dfs is None:
            q = critical
        else:
            from scipy.special import ndtr, stdtrit
            q = stdtrit(dfs[0], ndtr(critical))  # the t quantile with the same tail probability
        upper = favour + q * se
    looks = []
    for k in range(t.size):
        action = "continue" if stop < 0 or k < stop else (reason if k == stop else "after stop")
        looks.append(LookResult(
            look=k + 1, information_fraction=float(t[k]), favour=float(favour[k]), se=float(se[k]), z=float(z[k]),
            efficacy_boundary=float(d.efficacy_boundaries[k]), alpha_spent=float(d.alpha_spent[k]),
            upper_bound=None if upper is None else float(upper[k]),
            equivalence_critical=None if critical is None else float(critical[k]), action=action,
        ))
    return SequentialResult(
        looks=tuple(looks),
        outcome=None if stop < 0 else ("reject" if d.reject[0] else "retain"),
        stopped_at=None if stop < 0 else stop + 1,
        reason=reason,
        equivalence_shown=None if expected != "retain" or stop < 0 else bool(d.equivalence_shown[0]),
        expected=expected, margin=None if margin is None else float(margin), spending=spending,
    )


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------

def simulate_looks(rng: np.random.Generator, n_trials: int, looks: Sequence[int] = PAPER_LOOKS, *,
                   effect: float = 0.0, sd_treatment: float = 1.0, sd_baseline: float = 1.0,
                   chunk: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate two-sample trials with normal members observed at cumulative sizes ``looks`` (per
    population, equal in both). The treatment's true improvement in the H_a direction is
    ``effect`` (metric units). Returns arrays (trials x looks) of the improvement estimate, its
    Welch standard error ``sqrt(s_t^2/n + s_b^2/n)`` and the Welch-Satterthwaite degrees of freedom,
    ready for :func:`sequential_decisions`. Members are shared across looks, as in a real trial.
    """
    sizes = np.asarray(looks, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or sizes[0] < 2 or np.any(np.diff(sizes) <= 0):
        raise ConfigError(f"looks must be increasing group sizes >= 2, got {list(looks)}")
    n_max = int(sizes[-1])
    favour = np.empty((n_trials, sizes.size))
    se = np.empty_like(favour)
    df = np.empty_like(favour)
    for start in range(0, n_trials, chunk):
        m = min(chunk, n_trials - start)
        stats = []
        for mean, sd in ((effect, sd_treatment), (0.0, sd_baseline)):
            x = rng.standard_normal((m, n_max)) * sd + mean
            s1 = np.cumsum(x, axis=1)[:, sizes - 1]
            s2 = np.cumsum(x * x, axis=1)[:, sizes - 1]
            mu = s1 / sizes
            var = np.maximum(s2 - sizes * mu * mu, 0.0) / (sizes - 1)
            stats.append((mu, var / sizes))
        (mu_t, v_t), (mu_b, v_b) = stats
        rows = slice(start, start + m)
        favour[rows] = mu_t - mu_b
        se[rows] = np.sqrt(v_t + v_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            df[rows] = (v_t + v_b) ** 2 / (v_t**2 / (sizes - 1) + v_b**2 / (sizes - 1))
    return favour, se, df
