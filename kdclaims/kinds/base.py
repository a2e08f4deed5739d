"""What every claim kind has in common: the registry, the base class, arms, and the typed result.

A claim kind is one class, in one module of ``kdclaims.kinds``, registered with ``@register_kind``.
It says which YAML parameters a claim of its kind takes (``required``, ``optional``) and checks them
(``check``), which populations the claim needs (``populations``), how evidence decides it
(``evaluate``, returning a ``ClaimResult``), and how it takes part in a family-wise correction
(``primary_p``, ``redecide``). The loader (``kdclaims.claims``), the driver and the corrections
(``kdclaims.evaluate``) only ever call these methods, so a new kind needs no edit anywhere else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kdclaims.spec import PopulationSpec
from kdclaims.errors import ClaimError, ConfigError, short_repr
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.registry import Registry
from kdclaims.stats import ALPHA, Summary, TTestResult, welch_t_test, z_test

# A claim (kdclaims.claims.Claim) as the kinds see it: the loader sits above the kinds and imports them,
# so they name its type without importing it (no loop, no upward import).
Claim = Any

# The paper's ten setups of Tables 1-3: what "all setups" means in a ranking.
PAPER_ALPHAS = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a setup at an alpha and temperature (the architecture is the claim's)."""

    setup: str
    alpha: float | None = None
    temperature: float = 1.0

    def population(self, arch: str) -> PopulationSpec:
        return PopulationSpec(arch, self.setup, self.alpha, self.temperature)


def paper_arms() -> list[Arm]:
    """The ten setups of the paper's tables: independent, then KD, uniform and gaussian KD at 0.1/0.5/0.9."""
    arms = [Arm("independent")]
    for setup in ("kd", "uniform_kd", "gaussian_kd"):
        arms += [Arm(setup, alpha) for alpha in PAPER_ALPHAS]
    return arms


@dataclass
class ClaimResult:
    """A claim's evaluation: what reports, the saved JSON and the pytest failure text all read."""

    claim: Claim
    evidence: str
    verdict: str  # reproduced, not_reproduced or inconclusive
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


# ---------------------------------------------------------------------------------------------
# Parsing helpers the kinds share
# ---------------------------------------------------------------------------------------------


def parse_arm(value: Any, where: str, name: str) -> Arm:
    if not isinstance(value, dict):
        raise ClaimError(f"{where}: {name} must be a mapping like {{setup: kd, alpha: 0.5}}, got {value!r}")
    unknown = set(value) - {"setup", "alpha", "temperature"}
    if unknown:
        raise ClaimError(f"{where}: unknown field {sorted(unknown)[0]!r} in {name} (allowed: setup, alpha, temperature)")
    if "setup" not in value:
        raise ClaimError(f"{where}: {name} needs a setup")
    setup = text(value["setup"], where, f"{name}.setup")
    # alpha's range, and whether the setup takes one, is the population spec's to check (one message for all)
    alpha = None if value.get("alpha") is None else number(value["alpha"], where, f"{name}.alpha")
    return Arm(setup, alpha, positive_number(value.get("temperature", 1.0), where, f"{name}.temperature"))


def parse_arms(value: Any, where: str, name: str, minimum: int = 1) -> list[Arm]:
    if value == "all":
        return paper_arms()
    if not isinstance(value, list) or len(value) < minimum:
        raise ClaimError(f"{where}: {name} must be 'all' or a list of at least {minimum} mappings like "
                         f"{{setup: kd, alpha: 0.5}}")
    arms = [parse_arm(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if len(set(arms)) != len(arms):
        raise ClaimError(f"{where}: {name} lists the same setup twice")
    return arms


def check_metric(metric: Any, where: str) -> str:
    text(metric, where, "metric")
    try:
        get_metric(metric)
    except ConfigError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    return metric


def parse_metrics(value: Any, where: str) -> list[str]:
    metrics = [value] if isinstance(value, str) else value
    if not isinstance(metrics, list) or not metrics:
        raise ClaimError(f"{where}: metrics must be a metric name or a non-empty list of them")
    return [check_metric(metric, where) for metric in metrics]


def text(value: Any, where: str, name: str) -> str:
    """A field that must be a string (a name, a sentence), not a list, mapping or number."""
    if not isinstance(value, str):
        raise ClaimError(f"{where}: {name} must be text, got {short_repr(value)}")
    return value


def number(value: Any, where: str, name: str, low: float = -math.inf, high: float = math.inf,
           above_low: bool = False, what: str = "a finite number") -> float:
    """A numeric field as a float: finite, in [low, high] (``above_low``: (low, high]), and a number, not a
    bool (YAML reads ``true`` as one) nor a list. Numeric text is accepted because PyYAML, following YAML
    1.1, reads ``1e-5`` (no dot) as a string; text that is not a number is refused like any other type."""
    value_ok = isinstance(value, (int, float, str)) and not isinstance(value, bool)
    try:
        result = float(value) if value_ok else math.nan
    except (ValueError, OverflowError):  # "abc"; an integer too large for a float
        result = math.nan
    in_range = math.isfinite(result) and (result > low if above_low else result >= low) and result <= high
    if not in_range:
        raise ClaimError(f"{where}: {name} must be {what}, got {short_repr(value)}")
    return result


def positive_number(value: Any, where: str, name: str) -> float:
    return number(value, where, name, low=0.0, above_low=True, what="a positive finite number")


def probability(value: Any, where: str, name: str) -> float:
    return number(value, where, name, low=0.0, high=1.0, what="a number in [0, 1]")


def arm_row(arm) -> dict:
    """One population's numbers as a row of a ranking or trend (an ``ArmEvidence``, without cache keys)."""
    row = arm.to_dict()
    row.pop("keys", None)  # provenance lives with the populations, not in every row
    return row


def test_record(result: TTestResult, paper_z: float | None = None) -> dict:
    """A t-test as a result stores it, every number signed in the hypothesis' direction (positive: the
    treatment is better in the way H_a states): ``diff`` is the improvement, ``ci_low``/``ci_high`` its
    two-sided (1 - 2 alpha) interval with the t quantile (Welch or paired df), ``t`` and ``effect_size`` (d)
    likewise; ``mean_difference`` keeps treatment - baseline as measured. ``z`` is the paper's z statistic
    of the same means (for reference only; it decides nothing)."""
    record = result.to_dict()
    record.update(mean_difference=result.diff, diff=result.improvement, ci_low=result.lower_bound,
                  ci_high=result.upper_bound, ci_level=result.ci_level, z=paper_z)
    return record


def test_from_record(record: dict) -> TTestResult:
    """The ``TTestResult`` a stored ``test_record`` came from (to re-derive bounds at another alpha)."""
    fields = {f.name for f in dataclasses.fields(TTestResult)}
    values = {k: v for k, v in record.items() if k in fields}
    values["diff"] = record["mean_difference"]
    return TTestResult(**values)


def welch_and_z(treatment: Summary, baseline: Summary, direction: str, alpha: float = ALPHA) -> dict:
    """Welch's test of treatment vs baseline as stored (``test_record``), with the paper's z beside it."""
    return test_record(welch_t_test(treatment, baseline, direction, alpha), z_test(treatment, baseline, direction).z)


def better_sign(metric: str) -> float:
    """+1 when higher is better on ``metric``, -1 when lower is better."""
    return 1.0 if more_similar_direction(metric) == "greater" else -1.0


# ---------------------------------------------------------------------------------------------
# The base class and the registry
# ---------------------------------------------------------------------------------------------


class ClaimKind:
    """One kind of claim. Subclasses set the class attributes and implement ``evaluate``."""

    name: str = ""
    required: tuple[str, ...] = ()  # YAML fields a claim of this kind must give
    optional: dict[str, Any] = {}  # YAML fields it may give -> their default (never mutated)
    description: str = ""
    outcomes: tuple[str, ...] = ("holds", "fails")  # what the paper can report for this kind

    def parse(self, raw: dict, where: str) -> dict:
        """The kind's parameters from a claim's YAML mapping, checked."""
        params = {}
        for name in self.required:
            if name not in raw:
                raise ClaimError(f"{where}: missing field {name!r} (a {self.name} claim needs {', '.join(self.required)})")
            params[name] = raw[name]
        for name, default in self.optional.items():
            params[name] = raw.get(name, default)
        return self.check(params, where)

    def check(self, params: dict, where: str) -> dict:
        """Validate and normalise the parameters (e.g. mappings into ``Arm``s); a ClaimError if wrong."""
        return params

    def printed_outcome(self, arch: str, source: str, params: dict, where: str) -> tuple[str, float | None]:
        """(outcome, p) as the paper prints them in ``source``, for ``paper: table`` (kinds whose
        outcome the paper's tables print override this)."""
        raise ClaimError(f"{where}: a {self.name} claim cannot read its outcome from the paper's tables; "
                         f"write paper: {{outcome: {'|'.join(self.outcomes)}}}")

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        raise NotImplementedError

    def evaluate(self, claim: Claim, evidence) -> ClaimResult:
        raise NotImplementedError

    # Corrections. A kind whose outcome rests on one p-value exposes it and re-decides under an adjusted
    # one; kinds that combine several tests by design (an intersection-union test needs no correction)
    # return None and are left out of the family.

    def primary_p(self, result: dict) -> float | None:
        """The one p-value a saved result's observed outcome rests on, if it has one."""
        return None

    def redecide(self, result: dict, p_adjusted: float) -> tuple[str | None, str, str]:
        """(observed outcome, verdict, reason) of a saved result once its primary p is ``p_adjusted``."""
        raise NotImplementedError(f"{self.name} claims have no primary p-value to correct")

    def held(self, claim: Claim, evidence, observed: str | None, reason: str, details: dict) -> ClaimResult:
        """The result when the observed outcome is "holds", "fails" or None (the evidence cannot tell)."""
        if observed is None:
            verdict = "inconclusive"
        else:
            verdict = "reproduced" if observed == claim.paper.outcome else "not_reproduced"
        return ClaimResult(claim, evidence.name, verdict, reason, observed, details)


KINDS: Registry[ClaimKind] = Registry("claim kind", ClaimError)


def register_kind(cls: type[ClaimKind]) -> type[ClaimKind]:
    """Class decorator: register one instance of a ClaimKind subclass under its ``name``."""
    KINDS.register(cls.name, cls())
    return cls
