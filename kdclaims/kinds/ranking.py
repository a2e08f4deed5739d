"""Ranking: which setup is best on a metric.

The observed best must be one of ``expected_best`` and lead every other candidate significantly: a
z-test of the best expected setup against the best of the rest. If the expected setup leads but not
significantly, or another leads but not significantly, the evidence cannot tell.
"""

from __future__ import annotations

from kdclaims.errors import ClaimError
from kdclaims.kinds.base import ClaimKind, ClaimResult, arm_row, better_sign, parse_arms, parse_metrics, register_kind
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.stats import ALPHA, z_test


@register_kind
class Ranking(ClaimKind):
    name = "ranking"
    required = ("metric", "expected_best")
    optional = {"candidates": "all"}
    description = "the best setup on a metric is one of expected_best, significantly ahead of the rest"

    def check(self, params: dict, where: str) -> dict:
        params["metric"] = parse_metrics(params["metric"], where)[0]
        params["candidates"] = parse_arms(params["candidates"], where, "candidates", minimum=2)
        params["expected_best"] = parse_arms(params["expected_best"], where, "expected_best")
        missing = [a for a in params["expected_best"] if a not in params["candidates"]]
        if missing:
            raise ClaimError(f"{where}: expected_best {missing[0]} is not among the candidates")
        if len(params["expected_best"]) == len(params["candidates"]):
            raise ClaimError(f"{where}: expected_best lists every candidate, so the ranking claims nothing")
        return params

    def populations(self, claim):
        return [a.population(claim.arch) for a in claim.params["candidates"]]

    def evaluate(self, claim, evidence) -> ClaimResult:
        metric = claim.params["metric"]
        direction, sign = more_similar_direction(metric), better_sign(metric)
        arms = {arm: evidence.arm(arm.population(claim.arch), metric) for arm in claim.params["candidates"]}
        ordered = sorted(arms, key=lambda a: -sign * arms[a].summary.mean)
        expected = set(claim.params["expected_best"])
        best_in = next(a for a in ordered if a in expected)
        best_out = next(a for a in ordered if a not in expected)
        top_two = z_test(arms[ordered[0]].summary, arms[ordered[1]].summary, direction)
        expected_leads = ordered[0] in expected
        leader, rival = (best_in, best_out) if expected_leads else (best_out, best_in)
        lead = z_test(arms[leader].summary, arms[rival].summary, direction)
        if expected_leads:
            observed = "holds" if lead.reject else None
            reason = (f"{arms[leader].label} is best and leads the best other setup, {arms[rival].label}, "
                      f"by {abs(lead.diff):.4g} (z {lead.z:.2f}, p {lead.p_value:.3g})")
            if not lead.reject:
                reason += ": the lead is not significant, so which is best is not established"
        else:
            observed = "fails" if lead.reject else None
            reason = (f"{arms[leader].label} is best, ahead of the best expected setup {arms[rival].label} "
                      f"by {abs(lead.diff):.4g} (z {lead.z:.2f}, p {lead.p_value:.3g})")
            if not lead.reject:
                reason += ": not significantly, so the paper's ranking is not refuted either"
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "ranking": [arm_row(arms[a]) for a in ordered],
            "expected_best": [arms[a].population for a in claim.params["expected_best"]],
            "top_two": {"first": arms[ordered[0]].population, "second": arms[ordered[1]].population,
                        "gap": abs(top_two.diff), "test": top_two.to_dict()},
            "lead": {"leader": arms[leader].population, "rival": arms[rival].population, "test": lead.to_dict()},
            "summary": reason,
        }
        return self.held(claim, evidence, observed, reason, details)

    def primary_p(self, result: dict) -> float | None:
        lead = (result.get("details") or {}).get("lead")
        return lead["test"]["p_value"] if lead else None

    def redecide(self, result: dict, p_adjusted: float) -> tuple[str | None, str, str]:
        """The lead must stay significant after correction."""
        observed = result["observed_outcome"] if p_adjusted < ALPHA else None
        if observed is None:
            return None, "inconclusive", f"{result['reason']}; after correction the lead is not significant"
        return observed, ("reproduced" if observed == result["paper"]["outcome"] else "not_reproduced"), result["reason"]
