"""Tests for kdclaims.stats: the paper's z-test, degenerate cases, calibration, power, adjustments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdclaims.errors import ConfigError
from kdclaims.stats import (
    ALPHA,
    Summary,
    ZTestResult,
    benjamini_hochberg,
    holm,
    minimum_detectable_effect,
    power,
    z_test,
)


def phi_sf(z: float) -> float:
    """Upper tail of the standard normal with plain python: P(Z >= z) = erfc(z / sqrt 2) / 2."""
    return 0.5 * math.erfc(z / math.sqrt(2))


Z975 = 1.959963984540054  # z_{0.975}, the one-tailed critical value at alpha = 0.025


def test_alpha_is_the_papers():
    assert ALPHA == 0.025


class TestZTestHandComputed:
    # treatment 0.30 +- 0.04, baseline 0.32 +- 0.03, n = 100 each:
    #   se = sqrt(0.04^2/100 + 0.03^2/100) = sqrt(0.000025) = 0.005; diff = -0.02
    #   direction "less": z = 0.02 / 0.005 = 4, p = P(Z >= 4) ~ 3.167e-5 -> reject
    #   pooled sd = sqrt((99*0.0016 + 99*0.0009) / 198) = sqrt(0.00125); d = 0.02 / sqrt(0.00125)
    #   95% CI = -0.02 -+ 1.96 * 0.005
    T = Summary(0.30, 0.04, 100)
    B = Summary(0.32, 0.03, 100)

    def test_less(self):
        r = z_test(self.T, self.B, "less")
        assert isinstance(r, ZTestResult)
        assert r.direction == "less" and r.alpha == 0.025
        assert r.diff == pytest.approx(-0.02, abs=1e-15)
        assert r.se == pytest.approx(0.005, rel=1e-12)
        assert r.z == pytest.approx(4.0, rel=1e-12)
        assert r.p_value == pytest.approx(phi_sf(4.0), rel=1e-9)
        assert r.p_value == pytest.approx(3.167124183311992e-05, rel=1e-9)
        assert r.reject is True
        assert r.effect_size == pytest.approx(0.02 / math.sqrt(0.00125), rel=1e-12)
        assert r.ci_low == pytest.approx(-0.02 - Z975 * 0.005, rel=1e-12)
        assert r.ci_high == pytest.approx(-0.02 + Z975 * 0.005, rel=1e-12)
        assert r.note is None

    def test_greater_is_the_mirror(self):
        r = z_test(self.T, self.B, "greater")
        assert r.z == pytest.approx(-4.0, rel=1e-12)
        assert r.p_value == pytest.approx(1 - phi_sf(4.0), rel=1e-12)
        assert r.reject is False
        assert r.effect_size == pytest.approx(-0.02 / math.sqrt(0.00125), rel=1e-12)
        assert r.diff == pytest.approx(-0.02, abs=1e-15)  # diff is always mean_t - mean_b
        # swapping the groups and the direction gives the same test
        r2 = z_test(self.B, self.T, "greater")
        assert r2.p_value == pytest.approx(phi_sf(4.0), rel=1e-9)

    def test_to_dict(self):
        d = z_test(self.T, self.B, "less").to_dict()
        assert set(d) == {"direction", "diff", "se", "z", "p_value", "alpha", "reject", "effect_size",
                          "ci_low", "ci_high", "note"}
        assert d["reject"] is True

    def test_reject_is_strict(self):
        # choose means so that z is exactly the critical value: p == alpha -> retain (strict <)
        r = z_test(Summary(Z975 * 0.005, 0.04, 100), Summary(0.0, 0.03, 100), "greater", alpha=phi_sf(Z975))
        assert r.p_value == pytest.approx(r.alpha, rel=1e-12)
        assert r.reject == (r.p_value < r.alpha)

    def test_unequal_n(self):
        r = z_test(Summary(1.0, 2.0, 50), Summary(0.0, 1.0, 200), "greater")
        se = math.sqrt(4 / 50 + 1 / 200)
        assert r.se == pytest.approx(se, rel=1e-12)
        assert r.p_value == pytest.approx(phi_sf(1 / se), rel=1e-9)


class TestDegenerate:
    def test_zero_variance_favouring(self):
        r = z_test(Summary(0.1, 0.0, 385), Summary(0.2, 0.0, 385), "less")
        assert r.z == math.inf and r.p_value == 0.0 and r.reject
        assert r.se == 0.0 and r.effect_size == math.inf
        assert r.ci_low == r.ci_high == pytest.approx(-0.1)
        assert r.note and r.note.startswith("zero variance in both groups")

    def test_zero_variance_against(self):
        r = z_test(Summary(0.3, 0.0, 385), Summary(0.2, 0.0, 385), "less")
        assert r.z == -math.inf and r.p_value == 1.0 and not r.reject
        assert r.effect_size == -math.inf
        assert r.note and "zero variance in both groups" in r.note

    def test_zero_variance_equal(self):
        r = z_test(Summary(0.2, 0.0, 385), Summary(0.2, 0.0, 385), "greater")
        assert r.z == 0.0 and r.p_value == 1.0 and not r.reject
        assert r.effect_size == 0.0
        assert r.note and "zero variance in both groups" in r.note
        for v in r.to_dict().values():
            assert not (isinstance(v, float) and math.isnan(v))

    def test_one_group_zero_variance_is_ordinary(self):
        r = z_test(Summary(0.2, 0.0, 385), Summary(0.25, 0.1, 385), "less")
        assert math.isfinite(r.z) and r.note is None

    @pytest.mark.parametrize("direction", ["lower", "two-sided", None, "LESS"])
    def test_bad_direction(self, direction):
        with pytest.raises(ConfigError) as e:
            z_test(Summary(0, 1, 3), Summary(0, 1, 3), direction)
        assert "'less'" in str(e.value) and "'greater'" in str(e.value) and "\n" not in str(e.value)

    @pytest.mark.parametrize("alpha", [0, -0.1, 0.5, 1.0, float("nan")])
    def test_bad_alpha(self, alpha):
        with pytest.raises(ConfigError):
            z_test(Summary(0, 1, 3), Summary(0, 1, 3), "less", alpha=alpha)


class TestSummary:
    def test_from_values(self):
        s = Summary.from_values([1.0, 2.0, 3.0, 4.0])
        assert s.mean == 2.5 and s.n == 4
        assert s.std == pytest.approx(math.sqrt(5 / 3))  # ddof = 1: sum of squares 5 / (4 - 1)

    def test_from_torch(self):
        torch = pytest.importorskip("torch")
        s = Summary.from_values(torch.tensor([1.0, 3.0], dtype=torch.float64))
        assert (s.mean, s.std, s.n) == (2.0, pytest.approx(math.sqrt(2)), 2)

    @pytest.mark.parametrize("values", [[], [1.0], np.array([3.0])])
    def test_fewer_than_two(self, values):
        with pytest.raises(ConfigError) as e:
            Summary.from_values(values)
        assert "2" in str(e.value) and "std" in str(e.value) and "\n" not in str(e.value)

    def test_nonfinite_is_not_silently_dropped(self):
        with pytest.raises(ConfigError):
            Summary.from_values([1.0, float("nan"), 2.0])
        s = Summary.from_values([1.0, float("nan"), 3.0, float("inf")], drop_nonfinite=True)
        assert (s.mean, s.n) == (2.0, 2)
        with pytest.raises(ConfigError):
            Summary.from_values([1.0, float("nan")], drop_nonfinite=True)

    @pytest.mark.parametrize("args", [(0.0, -1.0, 5), (float("nan"), 1.0, 5), (0.0, 1.0, 1), (0.0, 1.0, 2.5)])
    def test_invalid_direct(self, args):
        with pytest.raises(ConfigError):
            Summary(*args)


# ---------------------------------------------------------------------------------------------
# properties

means = st.floats(-10, 10, allow_nan=False)
stds = st.floats(0, 5, allow_nan=False)
ns = st.integers(2, 1000)


@settings(max_examples=150, deadline=None)
@given(means, stds, ns, means, stds, ns, st.sampled_from(["less", "greater"]))
def test_p_in_unit_interval_never_nan(m1, s1, n1, m2, s2, n2, direction):
    r = z_test(Summary(m1, s1, n1), Summary(m2, s2, n2), direction)
    assert 0.0 <= r.p_value <= 1.0
    assert r.reject == (r.p_value < ALPHA)
    for v in (r.diff, r.se, r.z, r.effect_size, r.ci_low, r.ci_high):
        assert not math.isnan(v)
    assert r.ci_low <= r.diff <= r.ci_high


@settings(max_examples=150, deadline=None)
@given(means, st.floats(0, 5), st.floats(0.01, 5), ns, means, stds, ns, st.sampled_from(["less", "greater"]))
def test_p_monotone_in_treatment_mean(m1, shift, s1, n1, m2, s2, n2, direction):
    # moving the treatment mean further in the H_a direction never increases p
    sign = -1.0 if direction == "less" else 1.0
    base = Summary(m2, s2, n2)
    p_before = z_test(Summary(m1, s1, n1), base, direction).p_value
    p_after = z_test(Summary(m1 + sign * shift, s1, n1), base, direction).p_value
    assert p_after <= p_before


@pytest.mark.parametrize("direction", ["less", "greater"])
def test_false_positive_rate_under_h0(direction):
    # 4000 simulated experiments, n = 385 per group, both groups from the same normal: H0 is true,
    # so the rejection rate should be alpha = 0.025 within 4 binomial standard errors.
    experiments, n = 4000, 385
    rng = np.random.default_rng(20240601)
    x = rng.normal(0.35, 0.03, size=(experiments, 2, n))
    mean = x.mean(axis=2)
    std = x.std(axis=2, ddof=1)
    rejects = sum(
        z_test(Summary(mean[i, 0], std[i, 0], n), Summary(mean[i, 1], std[i, 1], n), direction).reject
        for i in range(experiments)
    )
    rate = rejects / experiments
    tol = 4 * math.sqrt(0.025 * 0.975 / experiments)
    assert abs(rate - 0.025) <= tol, rate


def test_power_against_simulation():
    # at the minimum detectable effect the simulated rejection rate is ~0.8
    n, sd, experiments = 385, 0.03, 2000
    se = math.sqrt(2 * sd**2 / n)
    mde = minimum_detectable_effect(se)
    rng = np.random.default_rng(7)
    t = rng.normal(0.35 - mde, sd, size=(experiments, n))
    b = rng.normal(0.35, sd, size=(experiments, n))
    rate = np.mean([
        z_test(Summary(t[i].mean(), t[i].std(ddof=1), n), Summary(b[i].mean(), b[i].std(ddof=1), n), "less").reject
        for i in range(experiments)
    ])
    assert abs(rate - 0.8) <= 4 * math.sqrt(0.8 * 0.2 / experiments)


class TestPower:
    @pytest.mark.parametrize("se", [1e-4, 0.005, 2.0])
    def test_alpha_at_zero_effect(self, se):
        assert power(0.0, se) == pytest.approx(ALPHA, rel=1e-12)
        assert power(0.0, se, alpha=0.05) == pytest.approx(0.05, rel=1e-12)

    @pytest.mark.parametrize("se", [1e-4, 0.005, 2.0])
    def test_target_power_at_mde(self, se):
        mde = minimum_detectable_effect(se)
        assert mde == pytest.approx((Z975 + 0.8416212335729143) * se, rel=1e-9)
        assert power(mde, se) == pytest.approx(0.8, rel=1e-9)
        assert power(minimum_detectable_effect(se, target_power=0.9), se) == pytest.approx(0.9, rel=1e-9)

    def test_monotone_and_bounded(self):
        ps = [power(d, 0.01) for d in np.linspace(-0.05, 0.05, 41)]
        assert all(0 <= p <= 1 for p in ps)
        assert ps == sorted(ps)

    def test_zero_se(self):
        assert power(0.1, 0.0) == 1.0 and power(0.0, 0.0) == 0.0 and power(-0.1, 0.0) == 0.0

    def test_bad_inputs(self):
        with pytest.raises(ConfigError):
            power(0.1, -1.0)
        with pytest.raises(ConfigError):
            minimum_detectable_effect(0.1, target_power=1.0)


class TestAdjustments:
    # p = [0.01, 0.04, 0.03, 0.005], m = 4; sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1)
    P = [0.01, 0.04, 0.03, 0.005]

    def test_holm(self):
        # 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 = 0.04 -> running max 0.02 0.03 0.06 0.06
        assert holm(self.P) == pytest.approx([0.03, 0.06, 0.06, 0.02])

    def test_bh(self):
        # 0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04 -> running min from the top
        assert benjamini_hochberg(self.P) == pytest.approx([0.02, 0.04, 0.04, 0.02])

    def test_capping_and_monotonicity(self):
        p = [0.5, 0.02, 0.9]
        # Holm: 3*0.02 = 0.06, 2*0.5 = 1.0, 1*0.9 = 0.9 -> running max 0.06, 1.0, 1.0
        assert holm(p) == pytest.approx([1.0, 0.06, 1.0])
        # BH: 0.02*3/1 = 0.06, 0.5*3/2 = 0.75, 0.9*3/3 = 0.9
        assert benjamini_hochberg(p) == pytest.approx([0.75, 0.06, 0.9])

    def test_edge_cases(self):
        assert holm([]) == [] and benjamini_hochberg([]) == []
        assert holm([0.03]) == [0.03] and benjamini_hochberg([0.03]) == [0.03]
        with pytest.raises(ConfigError):
            holm([0.1, 1.5])
        with pytest.raises(ConfigError):
            benjamini_hochberg([float("nan")])

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
    def test_adjusted_dominate_raw_and_bh_below_holm(self, p):
        h, b = holm(p), benjamini_hochberg(p)
        for raw, hh, bb in zip(p, h, b):
            assert raw <= bb + 1e-15 and bb <= hh + 1e-15 and hh <= 1.0
