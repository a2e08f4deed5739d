"""Group-sequential design (issue #19): boundaries against published tables, alpha spending checked
by independent integration and simulation, type-I error, power and the stopping rules.

Simulated trials use normal members and Welch's t statistic put on the z scale through its p-value
(the harness's small-sample statistic); every simulation is seeded and vectorised.
"""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from kdclaims.errors import ConfigError
from kdclaims.sequential import (
    ALPHA,
    PAPER_LOOKS,
    crossing_probabilities,
    equivalence_critical_values,
    fixed_shape_boundaries,
    information_fraction,
    next_boundary,
    obf_spending,
    pocock_spending,
    sequential_decisions,
    sequential_test,
    simulate_looks,
    spending_boundaries,
    spending_function,
    z_from_t,
)

EQUAL5 = np.arange(1, 6) / 5
PAPER_FRACTIONS = np.asarray(PAPER_LOOKS) / PAPER_LOOKS[-1]
TABLE_TOL = 0.005  # the tolerance for published boundaries
N_TRIALS = 20_000
MC_TOL = 0.005  # 0.025 +- 0.005 is about 4.5 Monte-Carlo standard errors at 20,000 trials

# gsDesign (Lan-DeMets spending) and Jennison & Turnbull (2000, Tables 2.1, 2.3), K = 5, one-sided 0.025
PUBLISHED = {
    "spending obf": [4.877, 3.357, 2.680, 2.290, 2.031],
    "spending pocock": [2.438, 2.427, 2.410, 2.397, 2.386],
    "classic obf": [4.562, 3.226, 2.634, 2.281, 2.040],
    "classic pocock": [2.413] * 5,
}


# ---------------------------------------------------------------------------------------------
# Boundaries
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_spending_boundaries_match_gsdesign(spending):
    got = spending_boundaries(EQUAL5, spending=spending)
    np.testing.assert_allclose(got, PUBLISHED[f"spending {spending}"], atol=TABLE_TOL)


@pytest.mark.parametrize("shape", ["obf", "pocock"])
def test_classic_fixed_shape_designs_match_jennison_turnbull(shape):
    got = fixed_shape_boundaries(5, shape=shape)
    np.testing.assert_allclose(got, PUBLISHED[f"classic {shape}"], atol=TABLE_TOL)


def test_the_two_obrien_fleming_rows_are_different_designs():
    spending = spending_boundaries(EQUAL5, spending="obf")
    classic = fixed_shape_boundaries(5, shape="obf")
    assert spending[0] - classic[0] > 0.3  # the spending version is more conservative early ...
    assert classic[-1] > spending[-1]  # ... and less so at the final look


def test_obf_spending_uses_the_half_alpha_quantile():
    # alpha(1) must be alpha; the z_{1-alpha} variant would spend 2 * alpha
    assert obf_spending(1.0) == pytest.approx(ALPHA, rel=1e-12)
    assert pocock_spending(1.0) == pytest.approx(ALPHA, rel=1e-12)
    assert obf_spending(0.0) == 0.0 and pocock_spending(0.0) == 0.0
    assert obf_spending(0.2) == pytest.approx(norm.sf(4.877), rel=0.02)  # the first gsDesign boundary


def test_single_look_is_the_fixed_test():
    assert spending_boundaries([1.0])[0] == pytest.approx(norm.isf(ALPHA), abs=1e-9)


def _mvn_cumulative_crossing(boundaries, fractions):
    """1 - P(z_j < b_j for all j <= k), by scipy's multivariate normal (Genz), independently of the
    recursive integration."""
    t = np.asarray(fractions)
    corr = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    out = []
    for k in range(1, t.size + 1):
        mvn = multivariate_normal(mean=np.zeros(k), cov=corr[:k, :k], abseps=1e-7, releps=1e-7, maxpts=200_000 * k,
                                  seed=1983)
        out.append(1.0 - mvn.cdf(np.asarray(boundaries[:k])))
    return np.array(out)


@pytest.mark.parametrize("spending", ["obf", "pocock"])
@pytest.mark.parametrize("fractions", [EQUAL5, PAPER_FRACTIONS], ids=["equal", "paper-looks"])
def test_spent_alpha_equals_the_spending_function_at_each_look(spending, fractions):
    b = spending_boundaries(fractions, spending=spending)
    allowed = spending_function(spending)(fractions, ALPHA)
    by_recursion = np.cumsum(crossing_probabilities(b, fractions))
    np.testing.assert_allclose(by_recursion, allowed, rtol=1e-6, atol=1e-9)
    by_mvn = _mvn_cumulative_crossing(b, fractions)
    np.testing.assert_allclose(by_mvn, allowed, atol=2e-5)


def test_boundaries_are_solved_to_1e6():
    b = spending_boundaries(PAPER_FRACTIONS, spending="pocock")
    finer = spending_boundaries(PAPER_FRACTIONS, spending="pocock", r=96)  # a much finer grid
    np.testing.assert_allclose(b, finer, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Boundaries that follow the observed information
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_look_by_look_boundaries_with_equal_increments_reproduce_the_table(spending):
    used = []
    for k in range(1, 6):
        used.append(next_boundary(EQUAL5[:k], used, spending=spending))
    np.testing.assert_allclose(used, PUBLISHED[f"spending {spending}"], atol=TABLE_TOL)
    np.testing.assert_allclose(used, spending_boundaries(EQUAL5, spending=spending), atol=1e-9)


def test_unequal_looks_spend_exactly_the_spending_function_checked_by_simulation():
    # observed fractions that were not planned: an early first look, cached members beyond a look
    fractions = np.array([0.07, 0.31, 0.36, 0.74, 1.0])
    used = []
    for k in range(1, 6):
        used.append(next_boundary(fractions[:k], used, spending="pocock"))
    allowed = pocock_spending(fractions)
    np.testing.assert_allclose(np.cumsum(crossing_probabilities(used, fractions)), allowed, rtol=1e-6)
    # Brownian motion on the information scale: S_k = sum of independent increments, z_k = S_k/sqrt(t_k)
    rng = np.random.default_rng(20190)
    steps = rng.standard_normal((200_000, fractions.size)) * np.sqrt(np.diff(fractions, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(fractions)
    first_cross = np.cumsum(z > np.asarray(used), axis=1) > 0
    simulated = first_cross.mean(axis=0)
    se = np.sqrt(allowed * (1 - allowed) / z.shape[0])
    assert np.all(np.abs(simulated - allowed) < 4 * se + 1e-6)


def test_a_final_look_short_of_the_plan_spends_all_remaining_alpha():
    fractions = [0.25, 0.5, 0.8]  # the members ran out at 80% of the planned information
    b = spending_boundaries(fractions, final=True)
    assert np.sum(crossing_probabilities(b, fractions)) == pytest.approx(ALPHA, rel=1e-6)
    interim = spending_boundaries(fractions)  # not final: spends only alpha(0.8)
    assert np.sum(crossing_probabilities(interim, fractions)) == pytest.approx(obf_spending(0.8), rel=1e-6)
    assert b[-1] < interim[-1]
    np.testing.assert_allclose(b[:-1], interim[:-1])


def test_information_beyond_the_plan_spends_exactly_alpha():
    fractions = [0.3, 0.6, 1.15]  # more members cached than planned at the final look
    b = spending_boundaries(fractions)
    assert np.sum(crossing_probabilities(b, fractions)) == pytest.approx(ALPHA, rel=1e-6)


def test_overspent_alpha_gives_an_infinite_boundary():
    # earlier looks used looser boundaries than the spending function allows at t = 0.5
    assert next_boundary([0.4, 0.5], [1.5], spending="obf") == math.inf


@pytest.mark.parametrize(
    "fractions, previous, message",
    [
        ([0.5, 0.4], [2.0], "increase strictly"),
        ([0.5, 1.0, 1.2], [2.0, 2.0], "must be the last look"),
        ([0.0, 0.5], [2.0], "> 0"),
        ([0.5, 1.0], [], "earlier look"),
    ],
)
def test_bad_looks_are_one_line_config_errors(fractions, previous, message):
    with pytest.raises(ConfigError, match=message):
        next_boundary(fractions, previous)


def test_unknown_spending_function_is_a_config_error():
    with pytest.raises(ConfigError, match="valid: 'obf'"):
        spending_boundaries(EQUAL5, spending="haybittle")


def test_information_fraction_follows_group_sizes_and_variances():
    assert information_fraction(100, 100, planned_treatment=385, planned_baseline=385, sd_treatment=3.0) == pytest.approx(100 / 385)
    # the treatment has more members cached: its larger variance makes that count more
    t_uneven = information_fraction(200, 100, planned_treatment=385, planned_baseline=385, sd_treatment=3.0)
    inverse_var = 1 / (9 / 200 + 1 / 100)
    assert t_uneven == pytest.approx(inverse_var / (1 / (10 / 385)))
    assert 100 / 385 < t_uneven < 200 / 385


def test_z_from_t_keeps_tail_probabilities():
    from scipy.stats import t as student_t

    for t_stat, df in [(2.5, 10.0), (-3.0, 7.5), (9.0, 40.0)]:
        assert norm.sf(z_from_t(t_stat, df)) == pytest.approx(student_t.sf(t_stat, df), rel=1e-9)
    assert z_from_t(1.7, np.inf) == 1.7


# ---------------------------------------------------------------------------------------------
# Type-I error, power and sample size by simulation
# ---------------------------------------------------------------------------------------------

def _welch_trials(seed, effect=0.0, sd_ratio=1.0, n_trials=N_TRIALS):
    return simulate_looks(np.random.default_rng(seed), n_trials, PAPER_LOOKS, effect=effect, sd_treatment=sd_ratio)


@pytest.mark.parametrize("sd_ratio", [1.0, 3.0])
@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_type_one_error_at_the_paper_looks(spending, sd_ratio):
    favour, se, df = _welch_trials(seed=19 + int(sd_ratio), sd_ratio=sd_ratio)
    d = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending=spending)
    assert abs(d.reject.mean() - ALPHA) < MC_TOL
    assert np.all(d.stop_look >= 0)  # the paper design always ends by the final look


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_futility_stops_do_not_inflate_type_one_error(spending):
    favour, se, df = _welch_trials(seed=7, sd_ratio=3.0)
    plain = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending=spending)
    # a wide margin makes equivalence stops frequent; they can only remove rejections
    with_futility = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending=spending,
                                         expected="retain", margin=0.5)
    assert (with_futility.reason == 1).mean() > 0.5
    assert np.all(with_futility.reject <= plain.reject)
    np.testing.assert_array_equal(with_futility.efficacy_boundaries, plain.efficacy_boundaries)
    assert with_futility.reject.mean() <= ALPHA + MC_TOL


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_equivalence_is_falsely_shown_at_most_alpha_when_the_improvement_equals_the_margin(spending):
    margin = 0.3
    favour, se, df = _welch_trials(seed=11, effect=margin)
    d = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending=spending, expected="retain", margin=margin)
    assert d.equivalence_shown.mean() < ALPHA + MC_TOL


def test_a_large_effect_stops_at_the_first_look():
    # at 25 members per group the OBF-type boundary is 8.72 (t = 0.065, alpha(t) ~ 1e-18): a Welch t
    # with 48 df must exceed about 13.8 to reach that tail, and 6 sd give t of about 21 (5 sd stop
    # at the first look in about 98% of trials). Pocock-type spending stops at 1.5 sd already.
    for spending, effect in (("obf", 6.0), ("pocock", 1.5)):
        favour, se, df = _welch_trials(seed=3, effect=effect, n_trials=5_000)
        d = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending=spending)
        assert d.reject.mean() == 1.0
        assert (d.stop_look == 0).mean() > 0.99


def _expected_members_fraction(decisions):
    return np.asarray(PAPER_LOOKS)[decisions.stop_look].mean() / PAPER_LOOKS[-1]


def test_power_and_expected_members_against_the_fixed_design():
    # effect 0.2 sd: the fixed 385-member test has power about 0.80
    favour, se, df = _welch_trials(seed=5, effect=0.2, n_trials=10_000)
    fixed = z_from_t(favour[:, -1] / se[:, -1], df[:, -1]) > norm.isf(ALPHA)
    obf = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending="obf")
    assert 0.75 < fixed.mean() < 0.86
    assert abs(obf.reject.mean() - fixed.mean()) < 0.02  # OBF-type spending costs little power
    assert (obf.reject == fixed).mean() > 0.97
    assert _expected_members_fraction(obf) < 0.95  # the early looks are small, so savings are modest here
    # effect 0.3 sd (fixed power about 0.98): most trials stop early
    favour, se, df = _welch_trials(seed=6, effect=0.3, n_trials=10_000)
    obf = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending="obf")
    pocock = sequential_decisions(favour, se, PAPER_FRACTIONS, df=df, spending="pocock")
    assert obf.reject.mean() > 0.97
    assert _expected_members_fraction(obf) < 0.8
    assert _expected_members_fraction(pocock) < _expected_members_fraction(obf)  # stops earlier, ...
    assert pocock.reject.mean() < obf.reject.mean()  # ... at a price in power


# ---------------------------------------------------------------------------------------------
# The driver for one claim
# ---------------------------------------------------------------------------------------------

def test_sequential_test_of_a_reject_claim_stops_at_the_crossing_look():
    # "less": lower distance is better; the treatment's distance is lower by 0.2 with shrinking se
    se = np.array([0.28, 0.2, 0.14, 0.1, 0.072])
    result = sequential_test(-0.35 * np.ones(5), se, direction="less", expected="reject", fractions=PAPER_FRACTIONS)
    z = 0.35 / se
    b = spending_boundaries(PAPER_FRACTIONS)
    first = int(np.argmax(z > b))
    assert result.outcome == "reject" and result.reason == "efficacy" and result.stopped_at == first + 1
    assert [look.action for look in result.looks][: first + 1] == ["continue"] * first + ["efficacy"]
    assert result.looks[first].z == pytest.approx(z[first])
    assert result.looks[-1].alpha_spent == pytest.approx(ALPHA)
    assert result.equivalence_shown is None


def test_sequential_test_of_a_retain_claim_stops_when_the_upper_bound_falls_below_the_margin():
    se = np.array([0.3, 0.2, 0.1, 0.07, 0.05])
    diff = np.array([0.05, -0.02, 0.01, 0.0, 0.01])  # "greater": improvement = diff
    result = sequential_test(diff, se, direction="greater", expected="retain", margin=0.5, fractions=PAPER_FRACTIONS)
    c = equivalence_critical_values(PAPER_FRACTIONS)
    upper = diff + c * se
    first = int(np.argmax(upper < 0.5))
    assert result.outcome == "retain" and result.reason == "equivalence" and result.equivalence_shown
    assert result.stopped_at == first + 1
    assert result.looks[first].upper_bound == pytest.approx(upper[first])
    assert all(look.action == "after stop" for look in result.looks[first + 1:])


def test_a_retain_claim_that_never_shows_equivalence_ends_retained_without_it():
    se = np.array([0.3, 0.2, 0.1, 0.07, 0.05])
    result = sequential_test(0.05 * np.ones(5), se, direction="greater", expected="retain", margin=0.1,
                             fractions=PAPER_FRACTIONS)
    assert result.outcome == "retain" and result.reason == "final" and result.stopped_at == 5
    assert result.equivalence_shown is False  # 0.05 + 2.03 * 0.05 > 0.1


def test_an_interim_look_that_crosses_nothing_says_continue():
    result = sequential_test([0.01, 0.02], [0.3, 0.2], direction="greater", expected="reject",
                             fractions=PAPER_FRACTIONS[:2])
    assert result.outcome is None and result.stopped_at is None
    assert [look.action for look in result.looks] == ["continue", "continue"]


def test_information_fractions_from_standard_errors():
    se = np.array([0.4, 0.2, 0.1])
    result = sequential_test([0.0, 0.0, 0.0], se, direction="greater", expected="reject",
                             max_information=1 / 0.1**2)
    np.testing.assert_allclose([look.information_fraction for look in result.looks], [1 / 16, 1 / 4, 1.0])
    assert result.reason == "final" and result.outcome == "retain"


def test_welch_degrees_of_freedom_widen_the_upper_bound():
    se = np.array([0.3, 0.2])
    normal = sequential_test([0.0, 0.0], se, direction="greater", expected="retain", margin=5.0, fractions=[0.5, 1.0])
    welch = sequential_test([0.0, 0.0], se, direction="greater", expected="retain", margin=5.0, fractions=[0.5, 1.0],
                            df=[8.0, 18.0])
    assert welch.looks[0].upper_bound > normal.looks[0].upper_bound
    assert normal.looks[0].upper_bound == pytest.approx(normal.looks[0].equivalence_critical * 0.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(expected="retain"), "needs a margin"),
        (dict(expected="holds"), "expected outcome"),
        (dict(expected="reject", direction="up"), "unknown direction"),
        (dict(expected="retain", margin=-1.0), "margin must be"),
    ],
)
def test_driver_input_errors(kwargs, message):
    kwargs.setdefault("direction", "less")
    with pytest.raises(ConfigError, match=message):
        sequential_test([0.1, 0.2], [0.3, 0.2], fractions=[0.5, 1.0], **kwargs)


def test_zero_standard_error_reads_like_the_fixed_test():
    # both groups without variance (kdclaims.stats: a difference favouring H_a gives z = +inf)
    result = sequential_test([0.0, -0.1], [0.0, 0.0], direction="less", expected="reject", fractions=[0.5, 1.0])
    assert result.looks[0].z == 0.0 and result.looks[1].z == math.inf
    assert result.outcome == "reject" and result.stopped_at == 2
