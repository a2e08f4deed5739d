"""Ranking: which setup is best on a metric.

The observed best must be one of ``expected_best`` and lead every other candidate significantly: an
intersection-union test -- one one-sided Welch t-test of the leader against *every* rival (each candidate
not in ``expected_best``), holding only when every one rejects at 0.025 (no multiplicity correction is
needed: the IUT's level is that of its largest p). It fails when a setup outside ``expected_best`` leads
every expected one significantly (the same IUT the other way round). Otherwise the evidence cannot tell.
The IUT's p-value (the largest pairwise p) is what a family-wise correction adjusts.
"""

from __future__ import annotations

from kdclaims.errors import ClaimError
from kdclaims.kinds.base import (ClaimKind, ClaimResult, arm_row, better_sign, parse_arms, parse_metrics, register_kind,
                                 welch_and_z)
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.render.format import p_clause
from kdclaims.stats import ALPHA


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

    def evaluate(self, claim, evidence, alpha: float = ALPHA) -> ClaimResult:
        """``alpha``: the level of every pairwise test (a sequential look's nominal level; 0.025 otherwise)."""
        metric = claim.params["metric"]
        direction, sign = more_similar_direction(metric), better_sign(metric)
        arms = {arm: evidence.arm(arm.population(claim.arch), metric) for arm in claim.params["candidates"]}
        ordered = sorted(arms, key=lambda a: -sign * arms[a].summary.mean)
        expected = set(claim.params["expected_best"])
        expected_leads = ordered[0] in expected
        leader = ordered[0]
        # the rivals the leader must beat: every non-expected setup if an expected one leads, else every expected one
        rivals = [a for a in ordered[1:] if (a in expected) != expected_leads]
        tests = [(rival, welch_and_z(arms[leader].summary, arms[rival].summary, direction, alpha)) for rival in rivals]
        rival, lead = max(tests, key=lambda rt: rt[1]["p_value"])  # the hardest rival: its p is the IUT's p
        significant = lead["p_value"] < alpha
        top_two = welch_and_z(arms[ordered[0]].summary, arms[ordered[1]].summary, direction, alpha)
        against = "every other setup" if expected_leads else "every expected setup"
        reason = (f"{arms[leader].label} is best; against {against} ({len(rivals)}) the hardest is "
                  f"{arms[rival].label}, {lead['diff']:.4g} behind the leader (t {lead['t']:.2f}, df {lead['df']:.3g}, "
                  f"{p_clause(lead['p_value'])})")
        if expected_leads:
            observed = "holds" if significant else None
            if not significant:
                reason += ": not every lead is significant, so which is best is not established"
        else:
            observed = "fails" if significant else None
            if not significant:
                reason += ": not significantly ahead of every expected setup, so the paper's ranking is not refuted either"
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "ranking": [arm_row(arms[a]) for a in ordered],
            "expected_best": [arms[a].population for a in claim.params["expected_best"]],
            "top_two": {"first": arms[ordered[0]].population, "second": arms[ordered[1]].population,
                        "gap": top_two["diff"], "test": top_two},
            "lead": {"leader": arms[leader].population, "rival": arms[rival].population, "test": lead},
            "rivals": [{"rival": arms[r].population, "test": t} for r, t in tests],
            "method": "intersection-union: a one-sided Welch t-test of the leader against every rival",
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
