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
from kdclaims.config import PopulationSpec, seeds_to_text
from kdclaims.errors import KdclaimsError
from kdclaims.metrics import get_metric
from kdclaims.stats import ALPHA, Summary, minimum_detectable_effect, power, z_test

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
    return {"power": power(effect, se), "effect": effect, "basis": basis}


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
    }
    return ClaimResult(claim, evidence.name, verdict, reason, observed, details)


EVALUATORS = {"comparison": evaluate_comparison}


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
