"""The backend that evaluates claims: evidence in, a structured result out (never a bare bool).

Evidence is where a population's numbers come from: ``TrainedEvidence`` computes them from the
trained members of a ``Workbench`` (the reproduction); ``PaperEvidence`` reads the paper's own
summary statistics (n = 385 per cell). Both give a ``Summary`` (mean, std, n) per population and
metric, which is all the z-test needs, so one evaluator serves both.

Verdicts. The observed outcome is "reject" or "retain" (H0, at the paper's one-tailed 0.025). A
claim is *reproduced* when the observed outcome matches the paper's. Retaining H0 is only evidence
when the test could have rejected: if its power is below ``POWER_TARGET`` the verdict is
*inconclusive*, never reproduced (and a paper rejection we fail to see with low power is
inconclusive, not a failure). Power is the design power at the n used: the paper's effect, with the
paper's standard deviations, at our group sizes. For a rejection that effect is the paper's own
difference; for a retention, where the paper saw no effect, it is the smallest difference the
paper's design (n = 385, 80% power) would have detected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from kdclaims import paper as paper_tables
from kdclaims.claims import Claim
from kdclaims.profiles import seeds_to_text
from kdclaims.spec import PopulationSpec
from kdclaims.errors import KdclaimsError
from kdclaims.metrics import SIMILARITY_METRICS, SIMILARITY_READINGS, as_similarity, get_metric, more_similar_direction
from kdclaims.stats import ALPHA, Summary, minimum_detectable_effect, power, z_test
from scipy.stats import norm

POWER_TARGET = 0.8  # a retained H0 counts as evidence only if the test had at least this power
VERDICTS = ("reproduced", "not_reproduced", "inconclusive")


@dataclass
class ArmEvidence:
    """One population's numbers on one metric."""

    population: str  # e.g. "resnet18/kd-a0.5"
    label: str
    summary: Summary
    values: list[float] | None = None  # per member, in seed order (trained evidence only)
    seeds: str | None = None
    keys: list[str] | None = None  # cache keys of the members
    diverged_seeds: list[int] = field(default_factory=list)  # members with NaN/inf outputs, left out

    def to_dict(self) -> dict:
        return {
            "population": self.population, "label": self.label,
            "mean": self.summary.mean, "std": self.summary.std, "n": self.summary.n,
            "values": self.values, "seeds": self.seeds, "keys": self.keys, "diverged_seeds": self.diverged_seeds,
        }


class PaperEvidence:
    """The paper's Tables 1-3 as evidence: no training, n = 385 per population."""

    name = "paper"

    def arm(self, spec: PopulationSpec, metric: str) -> ArmEvidence:
        summary = paper_tables.paper_summary(spec.arch, metric, spec.setup, spec.alpha) if spec.temperature == 1 else None
        if summary is None:
            raise KdclaimsError(f"the paper gives no {metric} for {spec.name} (temperature {spec.temperature:g})")
        return ArmEvidence(spec.name, spec.label, summary)

    def provenance(self) -> dict:
        return {"evidence": "paper", "tables": str(paper_tables.PAPER_DIR), "n": paper_tables.PAPER_N}


class TrainedEvidence:
    """Trained populations as evidence: every member's metric against the teacher, on the test set."""

    name = "trained"

    def __init__(self, workbench):
        self.workbench = workbench

    def arm(self, spec: PopulationSpec, metric: str) -> ArmEvidence:
        population = self.workbench.population(spec)
        teacher = self.workbench.teacher(spec.arch)
        labels = self.workbench.dataset.test_labels
        values = population.values(metric, teacher.test_logits, labels).to(torch.float64)
        finite = torch.isfinite(values) & torch.isfinite(population.test_logits).flatten(1).all(dim=1)
        diverged = [s for s, ok in zip(population.seeds, finite.tolist()) if not ok]
        kept = values[finite].tolist()
        if len(kept) < 2:
            raise KdclaimsError(f"population {spec.name} has {len(kept)} usable member(s) of {population.n} "
                                f"(diverged: {diverged or 'none'}); a z-test needs at least 2: add seeds with --seeds")
        return ArmEvidence(spec.name, spec.label, Summary.from_values(kept), values=values.tolist(),
                           seeds=seeds_to_text(population.seeds), keys=list(population.keys), diverged_seeds=diverged)


def design_power(claim: Claim, n_treatment: int, n_baseline: int) -> dict:
    """Power of our test, at our n, to detect the paper's effect (see the module docstring)."""
    metric, direction = claim.params["metric"], claim.params["direction"]
    sides = [claim.params[arm].population(claim.arch) for arm in ("treatment", "baseline")]
    if any(s.temperature != 1 for s in sides):
        return {"power": None, "effect": None, "basis": "the paper has no numbers at this temperature"}
    t, b = (paper_tables.paper_summary(s.arch, metric, s.setup, s.alpha) for s in sides)
    if t is None or b is None:
        return {"power": None, "effect": None, "basis": "the paper gives no numbers for this cell"}
    if claim.paper.outcome == "reject":
        sign = 1.0 if direction == "greater" else -1.0
        effect = sign * (t.mean - b.mean)
        basis = "the paper's observed difference"
    else:
        effect = minimum_detectable_effect(math.sqrt(t.std ** 2 / t.n + b.std ** 2 / b.n))
        basis = f"the smallest difference the paper's design (n={t.n}) detects with 80% power"
    se = math.sqrt(t.std ** 2 / n_treatment + b.std ** 2 / n_baseline)
    return {"power": power(effect, se), "effect": effect, "basis": basis,
            "paper_treatment": {"mean": t.mean, "std": t.std, "n": t.n},
            "paper_baseline": {"mean": b.mean, "std": b.std, "n": b.n}}


def decide(paper_outcome: str, observed: str, achieved_power: float | None) -> tuple[str, str]:
    """(verdict, reason) from the paper's outcome, ours, and the power we had."""
    powered = achieved_power is not None and achieved_power >= POWER_TARGET - 1e-9
    power_text = "unknown" if achieved_power is None else f"{achieved_power:.2f}"
    if observed == paper_outcome:
        if observed == "retain" and not powered:
            return "inconclusive", (f"H0 retained as in the paper, but the test's power to detect the paper's effect "
                                    f"was {power_text} (< {POWER_TARGET}): too few members to tell")
        return "reproduced", f"H0 {'rejected' if observed == 'reject' else 'retained'}, as in the paper"
    if observed == "retain" and not powered:
        return "inconclusive", (f"the paper rejects H0 but we retained it with power {power_text} "
                                f"(< {POWER_TARGET}): too few members to tell")
    if observed == "retain":
        return "not_reproduced", f"the paper rejects H0; we retained it with power {power_text}"
    return "not_reproduced", "the paper retains H0; we rejected it"


@dataclass
class ClaimResult:
    claim: Claim
    evidence: str
    verdict: str  # one of VERDICTS
    reason: str
    observed_outcome: str | None
    details: dict  # kind-specific numbers: arms, test, power
    error: str | None = None

    @property
    def reproduced(self) -> bool:
        return self.verdict == "reproduced"

    def to_dict(self) -> dict:
        return {
            **self.claim.as_dict(), "evidence": self.evidence, "verdict": self.verdict, "reason": self.reason,
            "observed_outcome": self.observed_outcome, "details": self.details, "error": self.error,
        }


def evaluate_comparison(claim: Claim, evidence) -> ClaimResult:
    metric, direction = claim.params["metric"], claim.params["direction"]
    treatment = evidence.arm(claim.params["treatment"].population(claim.arch), metric)
    baseline = evidence.arm(claim.params["baseline"].population(claim.arch), metric)
    test = z_test(treatment.summary, baseline.summary, direction, ALPHA)
    observed = "reject" if test.reject else "retain"
    achieved = design_power(claim, treatment.summary.n, baseline.summary.n)
    verdict, reason = decide(claim.paper.outcome, observed, achieved["power"])
    details = {
        "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
        "treatment": treatment.to_dict(), "baseline": baseline.to_dict(),
        "test": test.to_dict(), "power": achieved, "power_target": POWER_TARGET,
        "summary": (f"{treatment.label} {treatment.summary.mean:.4g} vs {baseline.label} {baseline.summary.mean:.4g}: "
                    f"z {test.z:.2f}, p {test.p_value:.3g}"),
    }
    return ClaimResult(claim, evidence.name, verdict, reason, observed, details)


def _held(claim: Claim, evidence, observed: str | None, reason: str, details: dict) -> ClaimResult:
    """Verdict for kinds whose observed outcome is "holds", "fails" or None (the evidence cannot tell)."""
    if observed is None:
        verdict = "inconclusive"
    else:
        verdict = "reproduced" if observed == claim.paper.outcome else "not_reproduced"
    return ClaimResult(claim, evidence.name, verdict, reason, observed, details)


def _arm_row(arm: ArmEvidence) -> dict:
    row = arm.to_dict()
    row.pop("keys", None)  # provenance lives with the populations, not in every ranking row
    return row


def _better(metric: str) -> float:
    """+1 when higher is better on ``metric``, -1 when lower is better."""
    return 1.0 if more_similar_direction(metric) == "greater" else -1.0


def evaluate_ranking(claim: Claim, evidence) -> ClaimResult:
    metric = claim.params["metric"]
    direction, sign = more_similar_direction(metric), _better(metric)
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
        "ranking": [_arm_row(arms[a]) for a in ordered],
        "expected_best": [arms[a].population for a in claim.params["expected_best"]],
        "top_two": {"first": arms[ordered[0]].population, "second": arms[ordered[1]].population,
                    "gap": abs(top_two.diff), "test": top_two.to_dict()},
        "lead": {"leader": arms[leader].population, "rival": arms[rival].population, "test": lead.to_dict()},
        "summary": reason,
    }
    return _held(claim, evidence, observed, reason, details)


def evaluate_trend(claim: Claim, evidence) -> ClaimResult:
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
        "arms": [_arm_row(a) for a in arms],
        "steps": [{"from": a.population, "to": b.population, "test": t.to_dict(), "reversed_p": r.p_value}
                  for a, b, t, r in zip(arms, arms[1:], steps, reversed_)],
        "endpoints": ends.to_dict(), "monotone": monotone, "summary": reason,
    }
    return _held(claim, evidence, observed, reason, details)


Z_UPPER = float(norm.isf(ALPHA))  # one-sided 97.5% confidence bounds, matching the paper's 0.025


def evaluate_bound(claim: Claim, evidence) -> ClaimResult:
    """Intersection-union test: the bound holds if every cell's one-sided 97.5% upper confidence bound
    is below it (valid at level 0.025 without a multiplicity correction); it fails if some cell's
    lower bound is above it; otherwise the evidence cannot tell."""
    bound, quantity = claim.params["bound"], claim.params["quantity"]
    cells = []
    for metric in claim.params["metrics"]:
        direction, sign = more_similar_direction(metric), _better(metric)
        arms = [evidence.arm(a.population(claim.arch), metric) for a in claim.params["arms"]]
        if quantity == "max_improvement":
            base = evidence.arm(claim.params["baseline"].population(claim.arch), metric)
            for arm in arms:
                test = z_test(arm.summary, base.summary, direction)
                value = sign * test.diff  # the improvement, positive = better than the baseline
                cells.append({"metric": metric, "population": arm.population, "label": arm.label, "value": value,
                              "upper": value + Z_UPPER * test.se, "lower": value - Z_UPPER * test.se,
                              "significant": test.reject, "p_value": test.p_value})
        else:
            for i, a in enumerate(arms):
                for b in arms[i + 1:]:
                    test = z_test(a.summary, b.summary, direction)
                    value = abs(test.diff)
                    cells.append({"metric": metric, "population": f"{a.population} vs {b.population}",
                                  "label": f"{a.label} vs {b.label}", "value": value,
                                  "upper": value + Z_UPPER * test.se, "lower": value - Z_UPPER * test.se})
    considered = [c for c in cells if c.get("significant", True)] if claim.params["only_significant"] else cells
    what = "improvement" if quantity == "max_improvement" else "difference between means"
    if not considered:
        observed, reason, largest = None, "no significant improvement over the baseline, so there is nothing to bound", None
    else:
        largest = max(considered, key=lambda c: c["value"])
        worst_upper = max(c["upper"] for c in considered)
        head = (f"largest {what} {largest['value']:.4g} ({largest['label']}, {get_metric(largest['metric']).label}); "
                f"highest 97.5% upper bound {worst_upper:.4g} vs bound {bound:g}")
        if all(c["upper"] < bound for c in considered):
            observed, reason = "holds", head
        elif any(c["lower"] > bound for c in considered):
            observed, reason = "fails", head + ": some cell is significantly above the bound"
        else:
            observed, reason = None, head + ": the estimate is below the bound but the data cannot establish it at 97.5%"
    details = {"quantity": quantity, "bound": bound, "cells": cells, "considered": len(considered),
               "largest": largest, "summary": reason}
    return _held(claim, evidence, observed, reason, details)


PAPER_N_FOR_THRESHOLD = paper_tables.PAPER_N  # "no student" is judged for populations of the paper's size


def evaluate_threshold(claim: Claim, evidence) -> ClaimResult:
    """The compression test. A member reaches the threshold if its similarity is at least the level on
    every metric at once. Trained evidence counts members directly; for both kinds of evidence a
    normal approximation bounds how many of 385 students would reach it: at most
    385 * min over metrics of P(similarity >= level)."""
    level = float(claim.params["similarity_at_least"])
    rows, reached_total, expected_max = [], 0, 0.0
    for arm_spec in claim.params["arms"]:
        spec = arm_spec.population(claim.arch)
        per_metric = {m: evidence.arm(spec, m) for m in SIMILARITY_METRICS}
        tails, sims = {}, {}
        for m, arm in per_metric.items():
            scale = abs(SIMILARITY_READINGS[m][0])
            mean, std = float(as_similarity(m, arm.summary.mean)), arm.summary.std * scale
            sims[m] = {"mean": mean, "std": std}
            tails[m] = float(norm.sf((level - mean) / std)) if std > 0 else float(mean >= level)
        expected = PAPER_N_FOR_THRESHOLD * min(tails.values())
        row = {"population": spec.name, "label": spec.label, "similarity": sims,
               "expected_reaching_of_385": expected, "n": min(a.summary.n for a in per_metric.values())}
        values = [per_metric[m].values for m in SIMILARITY_METRICS]
        if all(v is not None for v in values):
            member_min = [min(float(as_similarity(m, v[i])) for m, v in zip(SIMILARITY_METRICS, values))
                          for i in range(len(values[0]))]
            row["reached"] = sum(x >= level for x in member_min)
            row["closest_member_min_similarity"] = max(member_min)
            reached_total += row["reached"]
        expected_max = max(expected_max, expected)
        rows.append(row)
    counted = all("reached" in r for r in rows)
    if reached_total:
        observed, reason = "fails", f"{reached_total} member(s) reach {level:.0%} similarity on every metric"
    elif expected_max < 1:
        closest = max((r.get("closest_member_min_similarity", -1.0) for r in rows), default=None)
        observed = "holds"
        reason = (f"no member reaches {level:.0%} on every metric"
                  + (f" (closest member: {closest:.3f} on its weakest metric)" if counted else "")
                  + f"; at most {expected_max:.2g} of 385 students would be expected to")
    else:
        observed, reason = None, (f"no member observed above {level:.0%}, but up to {expected_max:.2g} of 385 "
                                  "students could be expected to: too close to the threshold to tell")
    details = {"level": level, "readings": {m: SIMILARITY_READINGS[m][2] for m in SIMILARITY_METRICS},
               "arms": rows, "summary": reason}
    return _held(claim, evidence, observed, reason, details)


EVALUATORS = {
    "comparison": evaluate_comparison,
    "ranking": evaluate_ranking,
    "trend": evaluate_trend,
    "bound": evaluate_bound,
    "threshold": evaluate_threshold,
}


def evaluate_claim(claim: Claim, evidence) -> ClaimResult:
    return EVALUATORS[claim.kind](claim, evidence)


def evaluate_all(claims: list[Claim], evidence, lazy: bool = True) -> list[ClaimResult]:
    """Evaluate every claim. Lazy (the default): a claim that errors becomes a result with its error."""
    results = []
    for claim in claims:
        try:
            results.append(evaluate_claim(claim, evidence))
        except KdclaimsError as exc:
            if not lazy:
                raise
            results.append(ClaimResult(claim, evidence.name, "inconclusive", f"not evaluated: {exc}", None, {}, str(exc)))
    return results


def results_frame(results) -> pd.DataFrame:
    """One row per claim: id, verdict and the numbers behind it (accepts ClaimResults or their dicts)."""
    rows = []
    for r in results:
        r = r.to_dict() if isinstance(r, ClaimResult) else r
        d = r.get("details") or {}
        test, t, b, pw = d.get("test") or {}, d.get("treatment") or {}, d.get("baseline") or {}, d.get("power") or {}
        rows.append({
            "id": r["id"], "arch": r["arch"], "kind": r["kind"], "group": r["group"], "source": r["source"],
            "metric": d.get("metric"), "treatment": t.get("population"), "baseline": b.get("population"),
            "mean_treatment": t.get("mean"), "std_treatment": t.get("std"), "n_treatment": t.get("n"),
            "mean_baseline": b.get("mean"), "std_baseline": b.get("std"), "n_baseline": b.get("n"),
            "diff": test.get("diff"), "z": test.get("z"), "p_value": test.get("p_value"),
            "effect_size": test.get("effect_size"), "ci_low": test.get("ci_low"), "ci_high": test.get("ci_high"),
            "power": pw.get("power"), "paper_outcome": r["paper"]["outcome"], "paper_p": r["paper"]["p"],
            "observed_outcome": r["observed_outcome"], "verdict": r["verdict"], "reason": r["reason"],
            "evidence": r["evidence"],
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Family-wise correction (optional; the paper tests each claim at 0.025 on its own)
# ---------------------------------------------------------------------------------------------

CORRECTIONS = ("none", "holm", "bh")  # Holm: family-wise error rate; Benjamini-Hochberg: false discovery rate
FAMILIES = ("all", "group", "arch", "source")


def primary_p(result: dict) -> float | None:
    """The one p-value a claim's observed outcome rests on, if it has one.

    Comparisons: the z-test; rankings: the leader's lead over its rival. Trends, bounds and thresholds
    combine several tests by design (an intersection-union test needs no correction) and stay out.
    """
    d = result.get("details") or {}
    if result["kind"] == "comparison" and "test" in d:
        return d["test"]["p_value"]
    if result["kind"] == "ranking" and "lead" in d:
        return d["lead"]["test"]["p_value"]
    return None


def apply_correction(results: list[dict], method: str = "none", family: str = "all") -> list[dict]:
    """Adjust the primary p-values within each family and re-derive the verdicts.

    Returns new result dicts; each corrected one gains ``correction: {method, family, family_id,
    p_raw, p_adjusted}`` and, where the outcome changes, a verdict and reason that say so.
    """
    from kdclaims.stats import benjamini_hochberg, holm

    if method not in CORRECTIONS:
        raise KdclaimsError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    if family not in FAMILIES:
        raise KdclaimsError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")
    results = [dict(r) for r in results]
    if method == "none":
        return results
    adjust = holm if method == "holm" else benjamini_hochberg
    families: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        p = primary_p(r)
        if isinstance(p, (int, float)):
            key = "all" if family == "all" else str(r.get(family))
            families.setdefault(key, []).append(i)
    for key, members in families.items():
        adjusted = adjust([primary_p(results[i]) for i in members])
        for i, p_adj in zip(members, adjusted):
            r = results[i]
            r["correction"] = {"method": method, "family": family, "family_id": key, "family_size": len(members),
                               "p_raw": primary_p(r), "p_adjusted": p_adj}
            _redecide(r, p_adj)
    return results


def _redecide(r: dict, p_adjusted: float) -> None:
    significant = p_adjusted < ALPHA
    label = f"{r['correction']['method']} over {r['correction']['family']}"
    if r["kind"] == "comparison":
        observed = "reject" if significant else "retain"
        verdict, reason = decide(r["paper"]["outcome"], observed, (r["details"].get("power") or {}).get("power"))
    else:  # ranking: the lead must stay significant after correction
        observed = r["observed_outcome"] if significant else None
        if observed is None:
            verdict, reason = "inconclusive", f"{r['reason']}; after correction the lead is not significant"
        else:
            verdict = "reproduced" if observed == r["paper"]["outcome"] else "not_reproduced"
            reason = r["reason"]
    if verdict != r["verdict"]:
        reason = f"{reason} (adjusted p {p_adjusted:.3g}, {label}; uncorrected: {r['verdict']})"
    r.update(observed_outcome=observed, verdict=verdict, reason=reason)
