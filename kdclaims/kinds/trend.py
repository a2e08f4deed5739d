"""Trend: the metric improves (in its more-similar direction) step by step along ``arms``, e.g. with alpha.

Holds when every step improves significantly in the stated direction (one one-sided Welch t-test per
step at 0.025: an intersection-union test, so no multiplicity correction is needed); fails when some
step gets significantly worse; otherwise the evidence cannot tell. A claim file that says
``test: point_estimates`` asks for the weaker, paper-style reading instead -- every step's mean improves
and the last arm is significantly better than the first -- and the result says that is what was tested.
"""

from __future__ import annotations

from kdclaims.errors import ClaimError
from kdclaims.kinds.base import ClaimKind, ClaimResult, arm_row, parse_arms, parse_metrics, register_kind, welch_and_z
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.render.format import p_clause
from kdclaims.stats import ALPHA

TREND_TESTS = ("steps", "point_estimates")  # steps: every step significant; point_estimates: the paper's reading


@register_kind
class Trend(ClaimKind):
    name = "trend"
    required = ("metric", "arms")
    optional = {"test": "steps"}
    description = "the metric improves monotonically along arms (e.g. with alpha)"

    def check(self, params: dict, where: str) -> dict:
        params["metric"] = parse_metrics(params["metric"], where)[0]
        params["arms"] = parse_arms(params["arms"], where, "arms", minimum=2)
        if params["test"] not in TREND_TESTS:
            raise ClaimError(f"{where}: test must be one of {', '.join(TREND_TESTS)}, got {params['test']!r}")
        return params

    def populations(self, claim):
        return [a.population(claim.arch) for a in claim.params["arms"]]

    def evaluate(self, claim, evidence, alpha: float = ALPHA) -> ClaimResult:
        """``alpha``: the level of every step's test (a sequential look's nominal level; 0.025 otherwise)."""
        metric = claim.params["metric"]
        direction = more_similar_direction(metric)
        arms = [evidence.arm(a.population(claim.arch), metric) for a in claim.params["arms"]]
        steps = [welch_and_z(b.summary, a.summary, direction, alpha) for a, b in zip(arms, arms[1:])]  # H_a: it improves
        reversed_ = [welch_and_z(a.summary, b.summary, direction, alpha) for a, b in zip(arms, arms[1:])]  # H_a: it got worse
        ends = welch_and_z(arms[-1].summary, arms[0].summary, direction, alpha)
        monotone = all(step["t"] > 0 for step in steps)
        every_step = all(step["p_value"] < alpha for step in steps)
        worse = [f"{a.label} → {b.label}" for a, b, r in zip(arms, arms[1:], reversed_) if r["p_value"] < alpha]
        weakest = max(range(len(steps)), key=lambda i: steps[i]["p_value"])
        weakest_text = (f"{arms[weakest].label} → {arms[weakest + 1].label} (t {steps[weakest]['t']:.2f}, "
                        f"{p_clause(steps[weakest]['p_value'])})")
        point_estimates = claim.params["test"] == "point_estimates"
        if worse:
            observed, reason = "fails", f"the metric gets significantly worse at {', '.join(worse)}"
        elif point_estimates:
            basis = "tested on point estimates, as the claim file says: "
            if monotone and ends["p_value"] < alpha:
                observed = "holds"
                reason = (basis + f"every step's mean improves and {arms[-1].label} is significantly better than "
                          f"{arms[0].label} (t {ends['t']:.2f}, {p_clause(ends['p_value'])})")
            elif monotone:
                observed, reason = None, basis + f"every step's mean improves, but the overall change is not significant ({p_clause(ends['p_value'])})"
            else:
                observed, reason = None, basis + "the means are not monotone, though no step gets significantly worse"
        elif every_step:
            observed, reason = "holds", f"every step improves significantly; the weakest is {weakest_text}"
        else:
            observed = None
            reason = (f"not every step improves significantly (weakest: {weakest_text}), though no step gets "
                      "significantly worse")
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "arms": [arm_row(a) for a in arms], "rule": claim.params["test"],
            "steps": [{"from": a.population, "to": b.population, "test": t, "reversed_p": r["p_value"]}
                      for a, b, t, r in zip(arms, arms[1:], steps, reversed_)],
            "endpoints": ends, "monotone": monotone, "every_step_significant": every_step, "summary": reason,
        }
        return self.held(claim, evidence, observed, reason, details)
