"""Trend: the metric improves (in its more-similar direction) step by step along ``arms``, e.g. with alpha.

Holds when every step improves and the last arm is significantly better than the first; fails when
some step gets significantly worse; otherwise the evidence cannot tell.
"""

from __future__ import annotations

from kdclaims.kinds.base import ClaimKind, ClaimResult, arm_row, parse_arms, parse_metrics, register_kind
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.stats import z_test


@register_kind
class Trend(ClaimKind):
    name = "trend"
    required = ("metric", "arms")
    description = "the metric improves monotonically along arms (e.g. with alpha)"

    def check(self, params: dict, where: str) -> dict:
        params["metric"] = parse_metrics(params["metric"], where)[0]
        params["arms"] = parse_arms(params["arms"], where, "arms", minimum=2)
        return params

    def populations(self, claim):
        return [a.population(claim.arch) for a in claim.params["arms"]]

    def evaluate(self, claim, evidence) -> ClaimResult:
        metric = claim.params["metric"]
        direction = more_similar_direction(metric)
        arms = [evidence.arm(a.population(claim.arch), metric) for a in claim.params["arms"]]
        steps = [z_test(b.summary, a.summary, direction) for a, b in zip(arms, arms[1:])]  # H_a: each step improves
        reversed_ = [z_test(a.summary, b.summary, direction) for a, b in zip(arms, arms[1:])]  # H_a: it got worse
        ends = z_test(arms[-1].summary, arms[0].summary, direction)
        monotone = all(step.z > 0 for step in steps)
        worse = [f"{a.label} → {b.label}" for a, b, r in zip(arms, arms[1:], reversed_) if r.reject]
        if worse:
            observed, reason = "fails", f"the metric gets significantly worse at {', '.join(worse)}"
        elif monotone and ends.reject:
            observed = "holds"
            reason = (f"every step improves and {arms[-1].label} is significantly better than {arms[0].label} "
                      f"(z {ends.z:.2f}, p {ends.p_value:.3g})")
        elif monotone:
            observed, reason = None, f"every step improves, but the overall change is not significant (p {ends.p_value:.3g})"
        else:
            observed, reason = None, "the means are not monotone, though no step gets significantly worse"
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "arms": [arm_row(a) for a in arms],
            "steps": [{"from": a.population, "to": b.population, "test": t.to_dict(), "reversed_p": r.p_value}
                      for a, b, t, r in zip(arms, arms[1:], steps, reversed_)],
            "endpoints": ends.to_dict(), "monotone": monotone, "summary": reason,
        }
        return self.held(claim, evidence, observed, reason, details)
