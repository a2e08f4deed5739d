"""The sequential run (issue #19): claims decided look by look on synthetic evidence, populations that
stop growing, cached members beyond a look, the engine's type-I error, and plan --sequential.

Synthetic evidence draws members from normal distributions (seeded) with the paper's stds, so each
comparison's margin (which the paper's design fixes) is the shipped one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdclaims.claims import parse_claim
from kdclaims.errors import ConfigError
from kdclaims.paper import paper_summary
from kdclaims.sequential import PAPER_LOOKS, spending_boundaries
from kdclaims.sequential_run import STOP_REASONS, Design, SequentialRun, ValuesEvidence, check_evidence

DESIGN = Design(PAPER_LOOKS)
N = PAPER_LOOKS[-1]


def comparison(claim_id: str, outcome: str = "reject", treatment=None, baseline=None, metric="test_accuracy",
               direction="greater"):
    return parse_claim({
        "id": claim_id, "sentence": "s", "source": "Table 1", "arch": "resnet18", "kind": "comparison",
        "metric": metric, "treatment": treatment or {"setup": "uniform_kd", "alpha": 0.5},
        "baseline": baseline or {"setup": "independent"}, "direction": direction, "paper": {"outcome": outcome},
    }, "test")


def draw(rng, claim, effect: float, sd_scale: float = 1.0, n: int = N) -> dict:
    """Members of the claim's two populations: baseline at the paper's baseline mean, the treatment
    ``effect`` better in the claim's direction, both with the paper's stds times ``sd_scale``."""
    t_spec, b_spec = claim.populations()
    metric = claim.params["metric"]
    sign = 1.0 if claim.params["direction"] == "greater" else -1.0
    b = paper_summary(b_spec.arch, metric, b_spec.setup, b_spec.alpha)
    t = paper_summary(t_spec.arch, metric, t_spec.setup, t_spec.alpha)
    return {
        t_spec.name: {metric: b.mean + sign * effect + t.std * sd_scale * rng.standard_normal(n)},
        b_spec.name: {metric: b.mean + b.std * sd_scale * rng.standard_normal(n)},
    }


def run_to_end(run: SequentialRun, values: dict, extra: dict | None = None) -> list[list[str]]:
    """Drive ``run`` look by look, each population showing the look's target (or ``extra``'s count if larger)."""
    decided = []
    while not run.done:
        growing = {p.name for p in run.populations_to_grow()}
        members = {name: max(limit, (extra or {}).get(name, 0)) if name in growing else limit
                   for name, limit in run.evidence_members().items()}
        decided.append(run.observe(ValuesEvidence(values, members)))
    return decided


def margin_of(claim) -> float:
    from kdclaims.kinds.comparison import claim_margin, paper_numbers

    return claim_margin(paper_numbers(claim))["value"]


def test_large_effect_stops_at_the_first_look_on_efficacy():
    claim = comparison("big")
    values = draw(np.random.default_rng(1), claim, effect=2.0)  # tens of standard errors at n = 25
    run = SequentialRun([claim], DESIGN)
    decided = run_to_end(run, values)
    assert decided == [["big"]]
    result = run.results["big"]
    seq = result.details["sequential"]
    assert (seq["reason"], seq["stop_look"]) == ("efficacy", 1)
    assert result.verdict == "reproduced" and result.observed_outcome == "reject"
    look = seq["looks"][0]
    first = spending_boundaries([k / N for k in PAPER_LOOKS], final=True)[0]  # t = 25/385: about 8.7
    assert look["z"] > look["efficacy_boundary"] == pytest.approx(first, abs=1e-6)
    assert look["n"] == {p.name: 25 for p in claim.populations()}
    assert run.members_used == {p.name: 25 for p in claim.populations()}
    assert "sequential, stopped at look 1 on efficacy" in result.reason


def test_design_checks_and_profile():
    from kdclaims.profiles import get_profile

    with pytest.raises(ConfigError):
        Design((25, 25, 50))
    with pytest.raises(ConfigError):
        Design((25, 50), spending="linear")
    design = Design.from_profile(get_profile("paper"))
    assert design.looks == PAPER_LOOKS and design.spending == "obf"
    info = design.as_dict()
    assert info["looks"] == list(PAPER_LOOKS) and set(info["rules"]) >= {"comparison", "ranking", "trend", "bound",
                                                                          "threshold"}
    with pytest.raises(ConfigError, match="--evidence paper"):
        check_evidence("paper")


def test_retained_h0_with_a_tiny_effect_stops_on_equivalence():
    claim = comparison("same", outcome="retain")
    # the margin is the paper's design's (its stds at n = 385); members 5x less noisy bound the effect early
    values = draw(np.random.default_rng(2), claim, effect=0.0, sd_scale=0.2)
    run = SequentialRun([claim], DESIGN)
    run_to_end(run, values)
    result = run.results["same"]
    seq = result.details["sequential"]
    assert seq["reason"] == "equivalence" and seq["stop_look"] < len(PAPER_LOOKS)
    assert result.verdict == "reproduced" and result.observed_outcome == "retain"
    last = seq["looks"][-1]
    assert last["upper_bound"] < last["margin"] == pytest.approx(margin_of(claim))
    # the look before did not show it (otherwise the claim would have stopped there)
    assert all(look["action"] == "continue" for look in seq["looks"][:-1])


def test_reject_expected_claim_has_no_futility_stop_and_a_claim_near_the_boundary_reaches_the_final_look():
    claim = comparison("near")
    t_spec, b_spec = claim.populations()
    rng = np.random.default_rng(3)
    values = draw(rng, claim, effect=0.0)
    # shift the treatment so the final look's Welch t is 2.2: past the fixed 1.96 and the final boundary (about
    # 2.0), while the interim looks, with the same mean shift on fewer members, stay below their boundaries
    metric = "test_accuracy"
    t_vals, b_vals = values[t_spec.name][metric], values[b_spec.name][metric]
    se = np.sqrt(t_vals.var(ddof=1) / N + b_vals.var(ddof=1) / N)
    t_vals += 2.2 * se - (t_vals.mean() - b_vals.mean())
    run = SequentialRun([claim], DESIGN)
    decided = run_to_end(run, values)
    assert decided == [[], [], [], [], ["near"]]
    seq = run.results["near"].details["sequential"]
    assert (seq["reason"], seq["stop_look"]) == ("efficacy", 5)
    final = seq["looks"][-1]
    assert final["alpha_spent"] == pytest.approx(0.025)
    assert 1.96 < final["efficacy_boundary"] < final["z"] < 2.2
    assert all(look["z"] < look["efficacy_boundary"] for look in seq["looks"][:-1])
    assert run.results["near"].verdict == "reproduced"


def test_populations_stop_growing_only_when_all_their_claims_are_decided():
    big = comparison("big", treatment={"setup": "gaussian_kd", "alpha": 0.5})
    slow = comparison("slow")  # shares the independent baseline with "big"
    rng = np.random.default_rng(4)
    values = {**draw(rng, big, effect=2.0), **draw(rng, slow, effect=0.0)}
    values["resnet18/independent"] = draw(rng, big, effect=2.0)["resnet18/independent"]
    run = SequentialRun([big, slow], DESIGN)
    names = {spec.name for spec in run.populations_to_grow()}
    assert names == {"resnet18/gaussian_kd-a0.5", "resnet18/uniform_kd-a0.5", "resnet18/independent"}
    first = run.observe(ValuesEvidence(values, default_members=run.target_members()))
    assert first == ["big"]
    grow = {spec.name for spec in run.populations_to_grow()}
    assert grow == {"resnet18/uniform_kd-a0.5", "resnet18/independent"}  # the shared baseline keeps growing
    assert run.members_used == {"resnet18/gaussian_kd-a0.5": 25}
    assert run.target_members() == 50
    run_to_end(run, values)
    assert run.done and run.populations_to_grow() == []
    assert run.members_used == {"resnet18/gaussian_kd-a0.5": 25, "resnet18/uniform_kd-a0.5": 385,
                                "resnet18/independent": 385}
    assert run.results["slow"].details["sequential"]["reason"] == "final"
    with pytest.raises(ConfigError, match="already decided"):
        run.observe(ValuesEvidence(values))


def test_cached_members_beyond_a_look_are_used():
    claim = comparison("cached")
    values = draw(np.random.default_rng(5), claim, effect=0.0)
    t_spec, b_spec = claim.populations()
    run = SequentialRun([claim], DESIGN)
    # look 1 asks for 25, but the treatment has 200 in the cache: all are used, and the information fraction
    # follows the sizes observed (variance-weighted; between 25/385 and 200/385)
    run.observe(ValuesEvidence(values, {t_spec.name: 200, b_spec.name: 25}))
    look = run._states["cached"].records[0]
    assert look["n"] == {t_spec.name: 200, b_spec.name: 25}
    assert 25 / N < look["information_fraction"] < 200 / N
    # every member cached: the look has the full information, so it is final and spends all alpha
    run2 = SequentialRun([claim], DESIGN)
    assert run2.observe(ValuesEvidence(values)) == ["cached"]
    seq = run2.results["cached"].details["sequential"]
    assert seq["stop_look"] == 1 and seq["looks"][0]["information_fraction"] == pytest.approx(1.0)
    assert seq["looks"][0]["efficacy_boundary"] == pytest.approx(1.959964, abs=1e-4)  # all of 0.025 at once
    assert run2.members_used == {t_spec.name: N, b_spec.name: N}


def test_members_running_out_ends_the_run_at_the_declared_final_look():
    claim = comparison("short")
    values = draw(np.random.default_rng(6), claim, effect=0.0)
    run = SequentialRun([claim], DESIGN)
    run.observe(ValuesEvidence(values, default_members=25))
    assert run.observe(ValuesEvidence(values, default_members=60), final=True) == ["short"]
    seq = run.results["short"].details["sequential"]
    assert seq["reason"] == "final" and seq["looks"][-1]["alpha_spent"] == pytest.approx(0.025)
    assert seq["looks"][-1]["efficacy_boundary"] < 2.0  # the rest of alpha, spent at t = 60/385


def _engine_rejections(values_t: np.ndarray, values_b: np.ndarray, claim) -> np.ndarray:
    """Run the engine on each trial's members; True where it rejected H0."""
    t_spec, b_spec = claim.populations()
    out = []
    for vt, vb in zip(values_t, values_b):
        run = SequentialRun([claim], DESIGN)
        run_to_end(run, {t_spec.name: {"test_accuracy": vt}, b_spec.name: {"test_accuracy": vb}})
        out.append(run.results[claim.id].observed_outcome == "reject")
    return np.asarray(out)


def test_type_one_error_of_the_engine_rule_under_h0():
    """The engine's comparison rule (Welch's t on the z scale against boundaries spent at n/N) is
    kdclaims.sequential.sequential_decisions with Welch df: checked decision by decision on 200 trials
    run through the engine itself, then its type-I error over 20,000 vectorised trials."""
    from kdclaims.sequential import sequential_decisions, simulate_looks

    claim = comparison("null")
    rng = np.random.default_rng(20)
    looks = np.asarray(PAPER_LOOKS)
    # 1. the engine and the vectorised rule agree trial by trial (a larger effect so both outcomes occur)
    sd = 1.3
    vt = rng.standard_normal((200, N)) * sd + 0.15
    vb = rng.standard_normal((200, N)) * sd
    engine = _engine_rejections(vt, vb, claim)
    mean_t, mean_b = (np.cumsum(v, axis=1)[:, looks - 1] / looks for v in (vt, vb))
    var_t, var_b = (np.stack([v[:, :k].var(axis=1, ddof=1) for k in looks], axis=1) / looks for v in (vt, vb))
    df = (var_t + var_b) ** 2 / (var_t**2 / (looks - 1) + var_b**2 / (looks - 1))
    vectorised = sequential_decisions(mean_t - mean_b, np.sqrt(var_t + var_b), looks / N, df=df).reject
    assert 20 < engine.sum() < 180  # both outcomes occur
    assert np.array_equal(engine, vectorised)
    # 2. its type-I error under H0
    favour, se, df = simulate_looks(np.random.default_rng(21), 20_000, PAPER_LOOKS, effect=0.0, sd_treatment=2.0)
    rate = sequential_decisions(favour, se, looks / N, df=df).reject.mean()
    assert abs(rate - 0.025) < 0.005, rate


def _claim(kind: str, **fields):
    return parse_claim({"id": f"{kind}-claim", "sentence": "s", "source": "Table 1", "arch": "resnet18", "kind": kind,
                        "paper": {"outcome": "holds"}, **fields}, "test")


KD = [{"setup": "kd", "alpha": a} for a in (0.1, 0.5, 0.9)]


def _normal(rng, mean, sd, n=N):
    return mean + sd * rng.standard_normal(n)


def test_ranking_and_trend_stop_early_when_every_component_crosses_the_looks_boundary():
    rng = np.random.default_rng(7)
    ranking = _claim("ranking", metric="test_accuracy", expected_best=[{"setup": "uniform_kd", "alpha": 0.5}],
                     candidates=[{"setup": "independent"}, KD[1], {"setup": "uniform_kd", "alpha": 0.5}])
    trend = _claim("trend", metric="activation_distance", arms=KD)
    values = {
        "resnet18/independent": {"test_accuracy": _normal(rng, 0.70, 0.01)},
        "resnet18/uniform_kd-a0.5": {"test_accuracy": _normal(rng, 0.76, 0.01)},  # 6 sds ahead: z ~ 21 at n = 25
        # kd 0.5 leads only slightly: significant at 385 members, not at the strict interim boundaries
        "resnet18/kd-a0.5": {"test_accuracy": _normal(rng, 0.7005, 0.01),
                             "activation_distance": _normal(rng, 0.30, 0.01)},
        "resnet18/kd-a0.1": {"activation_distance": _normal(rng, 0.40, 0.01)},
        "resnet18/kd-a0.9": {"activation_distance": _normal(rng, 0.20, 0.01)},
    }
    run = SequentialRun([ranking, trend], DESIGN)
    decided = run_to_end(run, values)
    assert decided[0] == ["ranking-claim", "trend-claim"]
    for claim_id in decided[0]:
        result = run.results[claim_id]
        seq = result.details["sequential"]
        assert (result.observed_outcome, result.verdict, seq["reason"]) == ("holds", "reproduced", "efficacy")
        look = seq["looks"][0]
        assert look["statistic"]["z"] > look["efficacy_boundary"] > 8  # the first boundary at t = 25/385
        assert look["nominal_alpha"] < 1e-15
    lead = run.results["ranking-claim"].details["lead"]
    assert (lead["leader"], lead["rival"]) == ("resnet18/uniform_kd-a0.5", "resnet18/kd-a0.5")  # the hardest rival


def test_ranking_not_significant_at_the_interim_boundary_continues():
    rng = np.random.default_rng(8)
    ranking = _claim("ranking", metric="test_accuracy", expected_best=[{"setup": "uniform_kd", "alpha": 0.5}],
                     candidates=[{"setup": "independent"}, {"setup": "uniform_kd", "alpha": 0.5}])
    values = {"resnet18/independent": {"test_accuracy": _normal(rng, 0.70, 0.01)},
              "resnet18/uniform_kd-a0.5": {"test_accuracy": _normal(rng, 0.71, 0.01)}}  # z ~ 3.5 at 25: < 8.7
    run = SequentialRun([ranking], DESIGN)
    assert run.observe(ValuesEvidence(values, default_members=25)) == []
    record = run._states["ranking-claim"].records[0]
    assert record["action"] == "continue" and 2 < record["statistic"]["z"] < record["efficacy_boundary"]
    decided = run_to_end(run, values)
    stop = run.results["ranking-claim"].details["sequential"]["stop_look"]
    assert 1 < stop <= len(PAPER_LOOKS) and decided[stop - 2] == ["ranking-claim"]


def _ranking_of_three(**fields):
    """Uniform-noise KD at alpha 0.5 expected best of three: independent (a rival) and KD at alpha 0.5 (a rival)."""
    return _claim("ranking", metric="test_accuracy", expected_best=[{"setup": "uniform_kd", "alpha": 0.5}],
                  candidates=[{"setup": "independent"}, KD[1], {"setup": "uniform_kd", "alpha": 0.5}], **fields)


LEADER, FAR, TIED = "resnet18/uniform_kd-a0.5", "resnet18/independent", "resnet18/kd-a0.5"


def test_a_ranking_releases_a_rival_once_its_pair_crosses_and_keeps_growing_the_undecided_pair():
    rng = np.random.default_rng(11)
    values = {LEADER: {"test_accuracy": _normal(rng, 0.76, 0.01)},
              FAR: {"test_accuracy": _normal(rng, 0.70, 0.01)},  # 6 sds behind: crosses at look 1
              TIED: {"test_accuracy": _normal(rng, 0.7605, 0.01)}}  # level with the leader: never crosses
    run = SequentialRun([_ranking_of_three()], DESIGN)
    assert run.observe(ValuesEvidence(values, run.evidence_members())) == []
    assert {p.name for p in run.populations_to_grow()} == {LEADER, TIED}  # independent is no longer needed
    assert run.members_used == {FAR: 25}
    assert run.evidence_members() == {LEADER: 50, TIED: 50, FAR: 25}  # read at the limit it stopped at
    decided = run_to_end(run, values)
    result = run.results["ranking-claim"]
    seq = result.details["sequential"]
    pairs = {(p["first"], p["second"]): p for p in seq["pairs"]}
    assert pairs[(LEADER, FAR)]["status"] == "ahead" and pairs[(LEADER, FAR)]["decided_look"] == 1
    assert pairs[(LEADER, TIED)]["status"] in ("futile", "spent")
    assert result.verdict == "inconclusive" and result.observed_outcome is None
    assert seq["reason"] in ("futility", "final") and decided[-1] == ["ranking-claim"]
    assert run.members_used[FAR] == 25 and run.members_used[LEADER] == run.members_used[TIED] > 50
    # every look after the first read independent at its 25 members
    assert all(look["n"].get(FAR, 25) == 25 for look in seq["looks"])


def test_a_ranking_stops_growing_an_undecided_pair_that_no_reachable_outcome_passes_through():
    # expected best: uniform- and gaussian-noise KD at 0.5; rivals: independent and KD at 0.5
    e1, e2, r1, r2 = ("resnet18/uniform_kd-a0.5", "resnet18/gaussian_kd-a0.5", "resnet18/independent",
                      "resnet18/kd-a0.5")
    rng = np.random.default_rng(15)
    values = {e1: {"test_accuracy": _normal(rng, 0.70, 0.01)},  # 6 sds behind independent: cannot lead
              e2: {"test_accuracy": _normal(rng, 0.76, 0.01)},  # 6 sds ahead of KD at 0.5: KD cannot lead
              r1: {"test_accuracy": _normal(rng, 0.7602, 0.01)},  # level with gaussian: undecided
              r2: {"test_accuracy": _normal(rng, 0.70, 0.01)}}  # level with uniform: undecided, but it no longer matters
    noise = [{"setup": "uniform_kd", "alpha": 0.5}, {"setup": "gaussian_kd", "alpha": 0.5}]
    claim = _claim("ranking", metric="test_accuracy", expected_best=noise,
                   candidates=[*noise, {"setup": "independent"}, KD[1]])
    run = SequentialRun([claim], DESIGN)
    assert run.observe(ValuesEvidence(values, run.evidence_members())) == []
    pairs = {(p.first.name, p.second.name): p.status for p in run._states["ranking-claim"].pairs}
    assert pairs == {(e1, r1): "behind", (e1, r2): None, (e2, r1): None, (e2, r2): "ahead"}
    # uniform can no longer hold (it is behind independent) and KD at 0.5 can no longer fail the claim (gaussian
    # is ahead of it): whatever (uniform, KD 0.5) becomes decides nothing, so neither grows for it
    assert {p.name for p in run.populations_to_grow()} == {e2, r1}
    assert run.members_used == {e1: 25, r2: 25}


def test_predictive_probability_is_the_conditional_power_averaged_over_the_drifts_posterior():
    from scipy import integrate
    from statistics import NormalDist

    from kdclaims.sequential_run import _predictive_probability

    c, unit = 1.959963984540054, NormalDist()
    for z, t in ((1.0, 0.6), (-1.8, 25 / 385), (4.6, 50 / 385), (0.3, 0.26)):
        b = z * math.sqrt(t)  # the B-value; the drift's posterior under a flat prior is N(b / t, 1 / t)
        posterior = NormalDist(b / t, 1 / math.sqrt(t))

        def power(drift, sign):  # B(1) ~ N(b + drift (1 - t), 1 - t) given the drift
            return unit.cdf(sign * (b + drift * (1 - t)) / math.sqrt(1 - t) - c / math.sqrt(1 - t))

        expected = [integrate.quad(lambda d: power(d, sign) * posterior.pdf(d), -math.inf, math.inf)[0]
                    for sign in (1, -1)]
        assert _predictive_probability(z, t, 0.025) == pytest.approx(expected, abs=1e-7)
    # wider than the conditional power under the current trend, which takes the early drift at face value
    from kdclaims.sequential_run import _conditional_power
    assert _predictive_probability(-1.0, 0.1, 0.025)[0] > 10 * _conditional_power(-1.0, 0.1, 0.025)[0]
    assert _predictive_probability(c * math.sqrt(0.3), 0.3, 0.025)[0] == pytest.approx(0.5)
    assert _predictive_probability(2.5, 1.0, 0.025) == (1.0, 0.0)


def test_a_ranking_closes_a_way_its_predictive_probability_rules_out_from_the_first_look():
    # expected best: uniform- and gaussian-noise KD at 0.5; rivals: independent and KD at 0.5. At 25 members the
    # pairs are about 7 sds apart, below the first look's boundary (about 8.8): nothing crosses
    e1, e2, r1, r2 = ("resnet18/uniform_kd-a0.5", "resnet18/gaussian_kd-a0.5", "resnet18/independent",
                      "resnet18/kd-a0.5")
    rng = np.random.default_rng(17)
    values = {e1: {"test_accuracy": _normal(rng, 0.74, 0.01)},  # behind both rivals: cannot end ahead of them
              e2: {"test_accuracy": _normal(rng, 0.78, 0.01)},  # ahead of both: neither rival can end ahead of it
              r1: {"test_accuracy": _normal(rng, 0.76, 0.01)},
              r2: {"test_accuracy": _normal(rng, 0.76, 0.01)}}
    noise = [{"setup": "uniform_kd", "alpha": 0.5}, {"setup": "gaussian_kd", "alpha": 0.5}]
    claim = _claim("ranking", metric="test_accuracy", expected_best=noise,
                   candidates=[*noise, {"setup": "independent"}, KD[1]])
    run = SequentialRun([claim], DESIGN)
    assert run.observe(ValuesEvidence(values, run.evidence_members())) == []
    pairs = {(p.first.name, p.second.name): p for p in run._states["ranking-claim"].pairs}
    assert all(p.status is None for p in pairs.values())  # no pair crossed at look 1
    assert pairs[(e1, r1)].closed == ("ahead",) and pairs[(e2, r1)].closed == ("behind",)
    assert pairs[(e1, r1)].last["predictive_probability"][0] < 0.001 and pairs[(e1, r1)].last["closed"] == ["ahead"]
    # uniform's way to "holds" and each rival's way to "fails" are closed: only gaussian's way is open, so
    # uniform stops at 25 (every way through its pairs needs a direction ruled out) and the rest grow
    assert {p.name for p in run.populations_to_grow()} == {e2, r1, r2} and run.members_used == {e1: 25}
    run_to_end(run, values)
    result = run.results["ranking-claim"]
    assert (result.observed_outcome, result.verdict) == ("holds", "reproduced")
    assert run.members_used[e1] == 25 and run.members_used[e2] > 25


def test_a_ranking_holds_when_each_pair_crossed_at_its_own_look():
    rng = np.random.default_rng(12)
    values = {LEADER: {"test_accuracy": _normal(rng, 0.76, 0.01)},
              FAR: {"test_accuracy": _normal(rng, 0.70, 0.01)},
              TIED: {"test_accuracy": _normal(rng, 0.757, 0.01)}}  # 0.3 sd behind: crosses only at a later look
    run = SequentialRun([_ranking_of_three()], DESIGN)
    run_to_end(run, values)
    result = run.results["ranking-claim"]
    pairs = {(p["first"], p["second"]): p for p in result.details["sequential"]["pairs"]}
    assert pairs[(LEADER, FAR)]["decided_look"] == 1 < pairs[(LEADER, TIED)]["decided_look"]
    assert (result.observed_outcome, result.verdict) == ("holds", "reproduced")
    assert result.details["sequential"]["stop_look"] == pairs[(LEADER, TIED)]["decided_look"]
    assert "significantly ahead of every rival (2)" in result.reason


def test_a_ranking_fails_when_a_rival_leads_every_expected_setup():
    rng = np.random.default_rng(13)
    values = {LEADER: {"test_accuracy": _normal(rng, 0.70, 0.01)},
              FAR: {"test_accuracy": _normal(rng, 0.76, 0.01)},  # independent far ahead of the expected best
              TIED: {"test_accuracy": _normal(rng, 0.70, 0.01)}}
    run = SequentialRun([_ranking_of_three()], DESIGN)
    assert run.observe(ValuesEvidence(values, run.evidence_members())) == ["ranking-claim"]
    result = run.results["ranking-claim"]
    assert (result.observed_outcome, result.verdict) == ("fails", "not_reproduced")


def test_a_step_trend_releases_an_established_step_and_fails_on_a_step_significantly_worse():
    rng = np.random.default_rng(14)
    a01, a05, a09 = (f"resnet18/kd-a{a}" for a in (0.1, 0.5, 0.9))
    values = {a01: {"activation_distance": _normal(rng, 0.40, 0.01)},
              a05: {"activation_distance": _normal(rng, 0.30, 0.01)},  # 10 sds better: the first step crosses at once
              a09: {"activation_distance": _normal(rng, 0.3002, 0.01)}}  # level: the second step never crosses
    run = SequentialRun([_claim("trend", metric="activation_distance", arms=KD)], DESIGN)
    assert run.observe(ValuesEvidence(values, run.evidence_members())) == []
    assert {p.name for p in run.populations_to_grow()} == {a05, a09} and run.members_used == {a01: 25}
    worse = {**values, a09: {"activation_distance": _normal(rng, 0.36, 0.01)}}  # 6 sds worse
    run = SequentialRun([_claim("trend", metric="activation_distance", arms=KD)], DESIGN)
    assert run.observe(ValuesEvidence(worse, run.evidence_members())) == ["trend-claim"]
    result = run.results["trend-claim"]
    assert (result.observed_outcome, result.details["sequential"]["reason"]) == ("fails", "efficacy")
    assert "significantly worse at KD (α=0.5) → KD (α=0.9)" in result.reason


def test_pair_futility_needs_half_the_information_and_low_conditional_power_both_ways():
    from kdclaims.sequential_run import FUTILITY_FROM_INFORMATION, FUTILITY_POWER, _conditional_power

    from statistics import NormalDist

    z, t, c = 1.0, 0.6, 1.959963984540054
    # the B-value B(t) = z sqrt(t) with drift z / sqrt(t): B(1) ~ N(B(t) + drift (1 - t), 1 - t)
    end = NormalDist(z * math.sqrt(t) + z / math.sqrt(t) * (1 - t), math.sqrt(1 - t))
    ahead, behind = _conditional_power(z, t, 0.025)
    assert ahead == pytest.approx(1 - end.cdf(c), rel=1e-9) and behind == pytest.approx(end.cdf(-c), rel=1e-9)
    assert _conditional_power(2.5, 0.5, 0.025)[0] > 0.9  # a strong trend: far from futile
    assert (FUTILITY_FROM_INFORMATION, FUTILITY_POWER) == (0.5, 0.10)
    rng = np.random.default_rng(15)
    leader = _normal(rng, 0.76, 0.01)
    values = {LEADER: {"test_accuracy": leader}, FAR: {"test_accuracy": _normal(rng, 0.70, 0.01)},
              TIED: {"test_accuracy": leader.copy()}}  # the very same members: z = 0 at every look
    run = SequentialRun([_ranking_of_three()], DESIGN)
    decided = run_to_end(run, values)
    result = run.results["ranking-claim"]
    seq = result.details["sequential"]
    tied = next(p for p in seq["pairs"] if p["second"] == TIED)
    # at look 3 (100 of 385) its conditional power is already ~1% both ways, but a quarter of the information is
    # too little to trust the trend; look 4 (200 of 385) holds more than half
    assert seq["looks"][2]["pairs"][0]["status"] == "undecided" and max(seq["looks"][2]["pairs"][0]["conditional_power"]) < 0.02
    assert (tied["status"], tied["decided_look"], seq["reason"], seq["stop_look"]) == ("futile", 4, "futility", 4)
    assert len(decided) == 4 and (result.verdict, result.observed_outcome) == ("inconclusive", None)
    assert "no outcome can be reached any more; futile or closed: " in result.reason
    assert run.members_used == {FAR: 25, LEADER: 200, TIED: 200}


def test_type_one_error_of_a_pairwise_ranking_at_its_least_favourable_null():
    """One rival level with the expected best (the claim is false), one far behind: the ranking holds only if
    the level pair crosses, which its own group-sequential test allows with probability at most alpha."""
    rng = np.random.default_rng(16)
    trials, held = 1500, 0
    claim = _ranking_of_three()
    for _ in range(trials):
        values = {LEADER: {"test_accuracy": _normal(rng, 0.76, 0.01)},
                  FAR: {"test_accuracy": _normal(rng, 0.70, 0.01)},
                  TIED: {"test_accuracy": _normal(rng, 0.76, 0.01)}}
        run = SequentialRun([claim], DESIGN)
        run_to_end(run, values)
        held += run.results["ranking-claim"].observed_outcome == "holds"
    rate, se = held / trials, math.sqrt(0.025 * 0.975 / trials)
    assert rate <= 0.025 + 3 * se  # 0.037: a level above alpha would show


def test_threshold_fails_at_once_on_a_member_that_reaches_the_level_and_holds_early_only_pessimistically():
    rng = np.random.default_rng(9)
    metrics = {"activation_distance": (0.35, 0.01), "js_divergence": (0.20, 0.01),
               "prediction_dissimilarity": (0.30, 0.01), "logits_cosine_similarity": (0.70, 0.01)}
    far = {m: _normal(rng, mu, sd) for m, (mu, sd) in metrics.items()}
    reaching = {m: v.copy() for m, v in far.items()}
    for m, v in {"activation_distance": 0.01, "js_divergence": 0.001, "prediction_dissimilarity": 0.01,
                 "logits_cosine_similarity": 0.999}.items():
        reaching[m][3] = v  # member 4 is as similar as the teacher on every metric
    claim = _claim("threshold", arms=[KD[1]])
    run = SequentialRun([claim], DESIGN)
    assert run.observe(ValuesEvidence({"resnet18/kd-a0.5": reaching}, default_members=25)) == ["threshold-claim"]
    failed = run.results["threshold-claim"]
    assert (failed.observed_outcome, failed.details["sequential"]["reason"]) == ("fails", "efficacy")
    run = SequentialRun([claim], DESIGN)
    assert run.observe(ValuesEvidence({"resnet18/kd-a0.5": far}, default_members=25)) == ["threshold-claim"]
    held = run.results["threshold-claim"]
    assert (held.observed_outcome, held.verdict, held.details["sequential"]["reason"]) == \
        ("holds", "reproduced", "equivalence")
    assert held.details["pessimistic_expected_reaching_of_385"] < 1
    # near the level (mean similarity 0.90, sd 0.02): the point estimate says "holds" (< 1 of 385 expected), the
    # pessimistic bounds at the strict interim levels do not, so the claim waits for the final look
    near = {**far, "activation_distance": _normal(rng, 0.1414, 0.0283)}  # similarity 1 - AD/sqrt(2): 0.90 +- 0.02
    for m in ("js_divergence", "prediction_dissimilarity"):
        near[m] = _normal(rng, 0.001, 0.0001)
    near["logits_cosine_similarity"] = _normal(rng, 0.999, 0.0001)
    run = SequentialRun([claim], DESIGN)
    decided = run_to_end(run, {"resnet18/kd-a0.5": near})
    assert decided[0] == [] and run.results["threshold-claim"].details["sequential"]["stop_look"] > 1


def test_bound_holds_early_with_repeated_bounds_and_only_significant_waits_for_the_final_look():
    rng = np.random.default_rng(10)
    spread = _claim("bound", quantity="spread", metrics=["activation_distance"], arms=KD, bound=0.005)
    values = {f"resnet18/kd-a{a:g}": {"activation_distance": _normal(rng, 0.30, 0.0005)} for a in (0.1, 0.5, 0.9)}
    run = SequentialRun([spread], DESIGN)
    decided = run_to_end(run, values)
    result = run.results["bound-claim"]
    seq = result.details["sequential"]
    assert (result.observed_outcome, seq["reason"]) == ("holds", "equivalence") and seq["stop_look"] < 5
    assert decided[seq["stop_look"] - 1] == ["bound-claim"]
    # the bounds are the look's repeated ones, wider than the fixed 97.5% ones on the same members
    assert "upper bound" in result.reason and "97.5%" not in result.reason

    # "only significant" improvements: which cells are significant is settled only at the final look, so until
    # then every cell counts -- here a noisy, non-significant cell whose bound is far above 0.03 holds the claim
    # back, though the one significant cell is bounded well below 0.03 from the first looks
    only = _claim("bound", quantity="max_improvement", metrics=["activation_distance"], arms=KD[:2], bound=0.03,
                  baseline={"setup": "independent"}, only_significant=True)
    values = {"resnet18/independent": {"activation_distance": _normal(rng, 0.30, 0.001)},
              "resnet18/kd-a0.1": {"activation_distance": _normal(rng, 0.29, 0.001)},  # 0.01 better: significant
              "resnet18/kd-a0.5": {"activation_distance": _normal(rng, 0.30, 0.3)}}  # no effect, huge noise
    run = SequentialRun([only], DESIGN)
    decided = run_to_end(run, values)
    assert decided[:-1] == [[]] * 4
    result = run.results["bound-claim"]
    assert result.observed_outcome == "holds" and result.details["sequential"]["stop_look"] == 5
    assert result.details["considered"] == 1  # at the final look only the significant cell counts, as fixed


def test_a_final_look_without_new_members_ends_inconclusive():
    claim = comparison("stale")
    values = draw(np.random.default_rng(11), claim, effect=0.0)
    run = SequentialRun([claim], DESIGN)
    run.observe(ValuesEvidence(values, default_members=50))
    assert run.observe(ValuesEvidence(values, default_members=50)) == []  # look 2 brought nothing new: continue
    assert run.observe(ValuesEvidence(values, default_members=50), final=True) == ["stale"]
    result = run.results["stale"]
    assert result.verdict == "inconclusive" and "members ran out" in result.reason
    assert [look["action"] for look in result.details["sequential"]["looks"]] == \
        ["continue", "no new members", "no new members"]
    assert result.details["sequential"]["stop_look"] == 3


def test_the_catalogue_simulation_runs_the_engine_on_every_shipped_claim(monkeypatch):
    """One trial of benchmarks/sequential_catalogue_sim.py: every shipped claim (all five kinds) decided by the
    engine on members drawn from the paper's tables, against the fixed design on the same members."""
    import sys
    from pathlib import Path

    from kdclaims.claims import load_claims
    from kdclaims.kinds import comparison as comparison_kind

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import sequential_catalogue_sim as sim

    for name in ("paper_numbers", "fragility"):  # the simulation memoises them; undone after the test
        monkeypatch.setattr(comparison_kind, name, getattr(comparison_kind, name))
    sim.reuse_paper_numbers()
    claims = load_claims()
    out = sim.simulate(claims, DESIGN, trials=1, seed=3, null=False)
    assert out["verdicts"] == len(claims) == 96 and out["populations"] == 30
    assert out["fixed_members"] == 11_553
    assert 30 * 25 + 3 < out["expected_members"] < 11_553
    assert out["agreement"] >= 0.95
    assert set(out["reasons"]) <= set(STOP_REASONS) and out["reasons"]["efficacy"] > 0
    assert {claim_id for claim_id, _ in out["outcomes_sequential"]} == {claim.id for claim in claims}
    assert {claim.kind for claim in claims} == {"comparison", "ranking", "trend", "bound", "threshold"}
    # something is decided (not only inconclusive) for every kind
    decided = {c.kind for c in claims if any(out["outcomes_sequential"][(c.id, o)]
                                            for o in ("reject", "retain", "holds", "fails"))}
    assert decided == {"comparison", "ranking", "trend", "bound", "threshold"}
