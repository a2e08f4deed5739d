"""The group-sequential run of a catalogue (issue #19): which claims are decided at each look, and
which populations still have to grow. The ONE place the sequential rules for claims and populations
live; the statistics of the design (error-spending boundaries, information fractions, the z scale of
a t statistic) are :mod:`kdclaims.sequential`'s, used here and not copied. Torch-free, pure logic:
the caller trains members in look-sized batches and hands the evidence to :meth:`SequentialRun.observe`.

The design (:class:`Design`): K looks at ``looks[k]`` members per population (the last is the
maximum, N), an error-spending function (Lan-DeMets O'Brien-Fleming-type "obf" by default, or
Pocock-type "pocock") and the one-sided level alpha = 0.025 of the fixed design. Only trained
evidence has members to look at; ``--evidence paper`` is refused (:func:`check_evidence`).

The rules, claim by claim, at look k (information fraction t_k, see below):

* Boundary. Each claim has its own error-spending efficacy boundaries b_1, b_2, ...:
  b_k = :func:`kdclaims.sequential.next_boundary` of the claim's information fractions so far and
  the boundaries it actually used, so unequal or unplanned looks (cached members beyond a look) spend
  exactly alpha(t_k) in all. The final look (the design's last, a look reaching t >= 1, or one the
  caller declares final because the members ran out) spends all alpha that is left.
  The nominal level of look k is ``alpha_k = 1 - Phi(b_k)``: a one-sided test "rejects at look k"
  when its p-value (Welch's t, or the paired t under ``--pairing seed``) is below alpha_k, which is
  z > b_k on the z scale of :func:`kdclaims.sequential.z_from_t`.
* Comparison (directly via :mod:`kdclaims.sequential`'s rules). Efficacy: H0 is rejected and the
  claim stops when z_k > b_k. Equivalence (non-binding futility), only for claims whose paper
  outcome is a retained H0: the claim stops with H0 retained when the repeated one-sided upper
  confidence bound of the improvement, ``favour_k + q_k * se_k`` (q_k: the t quantile of the
  critical value c_k, which equals b_k -- the same spending at the same information,
  :func:`kdclaims.sequential.equivalence_critical_values`), is below the claim's margin. A claim
  whose paper outcome is "reject" has no futility stop. Efficacy wins a tie. At the final look
  without a crossing, H0 is retained and the repeated bound at c_K is what bounds the improvement.
  The verdict then follows the fixed design's rules (:func:`kdclaims.kinds.comparison.decide`).
  Information fraction: ``information_fraction`` of the two populations' sizes against N each,
  weighted by the current variance estimates, for every look so far (n/N with equal sizes).
* Ranking and trend (several one-sided Welch tests combined into an intersection-union test, IUT):
  at look k the kind's own fixed rule is applied at the nominal level alpha_k instead of 0.025, so
  a ranking holds (or fails) at look k when the leader's lead over every rival -- the hardest one
  included -- is significant at alpha_k, and a trend holds when every step is, fails when some
  step is significantly worse at alpha_k. Each component is a group-sequential test with the
  claim's boundaries, and the IUT is decided when all its components have crossed at the same look,
  so its level is at most alpha (as the fixed IUT's); the fixed design's caveat that the leader is
  chosen by the data is unchanged. Otherwise the claim continues; at the final look it is the fixed
  rule at alpha_K (inconclusive when nothing is significant).
* Bound (an IUT of one-sided upper confidence bounds): at look k the bounds are the repeated
  (1 - alpha_k) bounds; it holds when every cell's upper bound is below the bound, fails when some
  cell's lower bound is above it. A bound over "only significant" improvements considers every cell
  at the interim looks (which cells are significant is not settled until the final look, and
  considering more cells can only make "holds" harder), and only the significant ones (at alpha_K)
  at the final look.
* Threshold (no member reaches the similarity level; not a significance test): it fails, at any
  look, as soon as a member reaches the level (a counted fact that more members cannot undo). It
  holds early only pessimistically: the kind's normal-approximation count of the 385 students
  expected to reach the level must be below one with every arm's mean similarity at its one-sided
  (1 - alpha_k) upper confidence bound and its std at its (1 - alpha_k) upper chi-square bound.
  At the final look it is the fixed rule.
* Ranking, trend, bound and threshold use the information fraction ``min n / N`` over the claim's
  populations: the least-informed population's (every component holds at least that information;
  with equal sizes it is n/N exactly).
* Errors. A claim whose evaluation fails at an interim look (e.g. too few usable members) is
  recorded and continues; at the final look it is inconclusive with the error, as in the fixed run.
  A look that brings a claim no members beyond its last one tests nothing new and continues; if it is
  the final look (the members ran out), the claim ends inconclusive.
* Stopping reasons. "efficacy": a significance boundary decided the claim (H0 rejected; a ranking or
  trend holds or fails; a bound fails; a threshold fails on a member); "equivalence": an effect was
  bounded (a retained H0 with its repeated bound below the margin; a bound holds; a threshold holds);
  "final": the final look, with nothing crossed (a comparison then retains H0). Claims are monitored
  one by one, each at alpha, as the fixed design tests each at 0.025 with no multiplicity correction.

Populations. A population stops growing when every claim that uses it is decided (crossed a
boundary or reached the final look); ``members_used`` keeps the members it had then.
``populations_to_grow`` lists the populations some undecided claim still needs.

Records. Every decided claim's ``ClaimResult`` is its kind's evaluation at the stopping look with
the verdict, observed outcome and reason of the sequential rule; ``details["sequential"]`` holds the
design, the per-look records (look, members per population, information fraction, statistic z,
efficacy boundary, nominal level, alpha spent, repeated bound vs margin), the stopping look and
reason ("efficacy", "equivalence", "final") and the members used.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kdclaims.claims import Claim
from kdclaims.errors import ConfigError, KdclaimsError
from kdclaims.kinds import KINDS, ClaimResult
from kdclaims.sequential import (ALPHA, SPENDING_FUNCTIONS, information_fraction, next_boundary, spending_function,
                                 z_from_t)
from kdclaims.spec import PopulationSpec
from kdclaims.stats import _check_alpha

__all__ = ["Design", "SequentialRun", "ValuesEvidence", "check_evidence", "PAPER_EVIDENCE_MESSAGE", "STOP_REASONS"]

STOP_REASONS = ("efficacy", "equivalence", "final")
PAPER_EVIDENCE_MESSAGE = ("--sequential needs trained evidence (members to look at); --evidence paper has only the "
                          "paper's summary statistics: drop --sequential or use --evidence trained")
EXPECTED_FILE = Path(__file__).with_name("sequential_expected.json")  # benchmarks/sequential_catalogue_sim.py writes it
_FRACTION_DIGITS = 10  # information fractions are rounded so equal looks share one boundary computation

RULES = {
    "boundary": ("each claim has its own Lan-DeMets error-spending efficacy boundaries b_k at the information "
                 "observed (next_boundary with the boundaries actually used); the final look spends all alpha "
                 "that is left; nominal level alpha_k = 1 - Phi(b_k)"),
    "comparison": ("stop with H0 rejected when Welch's z (t on the z scale) exceeds b_k; claims whose paper outcome "
                   "is a retained H0 also stop, H0 retained, when the repeated one-sided upper bound of the "
                   "improvement (critical value c_k = b_k) is below the margin (non-binding); no futility stop "
                   "for reject-expected claims; at the final look the fixed verdict rules with the repeated bound"),
    "futility": ("non-binding equivalence stop, only for claims whose paper outcome is a retained H0: stop, H0 "
                 "retained, when the repeated one-sided upper bound of the improvement (critical value c_k = b_k, "
                 "the same spending) is below the claim's margin; the efficacy boundaries ignore it; claims whose "
                 "paper outcome is a rejected H0 have no futility stop"),
    "ranking": ("intersection-union: the fixed rule at the nominal level alpha_k at each look; stops when the "
                "leader's lead over every rival is significant at alpha_k (holds or fails)"),
    "trend": ("intersection-union: the fixed rule at the nominal level alpha_k at each look; stops when every "
              "step improves significantly (holds) or some step worsens significantly (fails) at alpha_k"),
    "bound": ("the fixed rule with repeated (1 - alpha_k) confidence bounds; 'only significant' bounds consider "
              "every cell until the final look"),
    "threshold": ("fails as soon as a member reaches the level; holds early only if fewer than one of 385 "
                  "students is expected to reach it with mean and std at their (1 - alpha_k) pessimistic bounds; "
                  "the fixed rule at the final look"),
    "information": ("comparison: variance-weighted information fraction of the two populations' sizes; other "
                    "kinds: min n / N over the claim's populations"),
    "populations": "a population stops growing when every claim that uses it is decided",
}


def check_evidence(evidence_name: str) -> None:
    """A one-line ConfigError when the evidence cannot be looked at sequentially (the paper's tables)."""
    if evidence_name != "trained":
        raise ConfigError(PAPER_EVIDENCE_MESSAGE)


@dataclass(frozen=True)
class Design:
    """The group-sequential design: members per population at each look (the last is the maximum,
    N), the error-spending function ("obf" or "pocock") and the one-sided level."""

    looks: tuple[int, ...]
    spending: str = "obf"
    alpha: float = ALPHA

    def __post_init__(self):
        looks = tuple(self.looks) if isinstance(self.looks, (list, tuple)) else self.looks
        if (not isinstance(looks, tuple) or not looks
                or any(isinstance(k, bool) or not isinstance(k, int) for k in looks)
                or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:]))):
            raise ConfigError(f"looks must be member counts increasing strictly from at least 2, got {self.looks!r}")
        object.__setattr__(self, "looks", looks)
        spending_function(self.spending)  # a one-line ConfigError if unknown
        object.__setattr__(self, "alpha", _check_alpha(self.alpha))

    @classmethod
    def from_profile(cls, profile) -> "Design":
        """The design a profile states (``sequential: {looks, spending}``, after --looks/--spending)."""
        return cls(tuple(profile.sequential_looks), profile.spending)

    @property
    def max_members(self) -> int:
        return self.looks[-1]

    def as_dict(self) -> dict:
        """The design and its rules in words (reports and ``plan --sequential`` print them)."""
        names = {"obf": "Lan-DeMets O'Brien-Fleming-type", "pocock": "Lan-DeMets Pocock-type"}
        return {"looks": list(self.looks), "spending": self.spending, "spending_name": names[self.spending],
                "alpha": self.alpha, "max_members": self.max_members, "rules": dict(RULES)}


@lru_cache(maxsize=4096)
def _boundary(fractions: tuple[float, ...], previous: tuple[float, ...], spending: str, alpha: float,
              final: bool) -> float:
    return float(next_boundary(fractions, previous, alpha=alpha, spending=spending, final=final))


def _nominal(boundary: float) -> float:
    """The one-sided nominal level of a z boundary: 1 - Phi(b)."""
    from scipy.special import ndtr

    return float(ndtr(-boundary))


def _t_quantile(critical: float, df: float) -> float:
    """The t quantile (df) with the same upper tail as the z critical value (the z itself for infinite df)."""
    from scipy.special import ndtr, stdtrit

    if math.isinf(critical):
        return critical
    if df is None or not math.isfinite(df):
        return critical
    return float(stdtrit(df, ndtr(critical)))


def _z_ratio(numerator: float, se: float, df: float | None) -> float:
    """numerator / se on the z scale (through the t's p-value when df is finite); se 0 gives +-inf or 0."""
    if se > 0:
        ratio = numerator / se
    else:
        ratio = math.inf if numerator > 0 else (-math.inf if numerator < 0 else 0.0)
    if df is None or not math.isfinite(ratio):
        return ratio
    return float(z_from_t(ratio, df))


class _Recorder:
    """Evidence that passes every arm through and remembers the members each population had."""

    def __init__(self, evidence, seen: dict[str, int]):
        self._evidence, self._seen = evidence, seen
        self.usable: dict[str, int] = {}  # population name -> fewest usable members over the metrics read
        self.name = getattr(evidence, "name", "trained")
        self.pairing = getattr(evidence, "pairing", "none")

    def arm(self, spec: PopulationSpec, metric: str):
        arm = self._evidence.arm(spec, metric)
        members = len(arm.values) if arm.values is not None else arm.summary.n
        self._seen[spec.name] = max(members, self._seen.get(spec.name, 0))
        self.usable[spec.name] = min(arm.summary.n, self.usable.get(spec.name, arm.summary.n))
        return arm

    def __getattr__(self, name):
        return getattr(self._evidence, name)


_UNSET = object()


@dataclass
class _ClaimState:
    claim: Claim
    populations: list[PopulationSpec]
    records: list[dict] = dataclasses.field(default_factory=list)
    sizes: list[dict[str, int]] = dataclasses.field(default_factory=list)  # members per population, each look used
    boundaries: list[float] = dataclasses.field(default_factory=list)  # efficacy boundaries used
    fractions: list[float] = dataclasses.field(default_factory=list)  # information fraction at each look used
    margin: object = None  # a comparison's margin (None: the paper gives none), _UNSET until first read


class SequentialRun:
    """The sequential run of ``claims`` under ``design``: call :meth:`observe` with evidence holding
    at least :meth:`target_members` members in every population of :meth:`populations_to_grow`, until
    :attr:`done`. Decided claims are in :attr:`results`; rules in the module docstring."""

    def __init__(self, claims: list[Claim], design: Design):
        ids = [c.id for c in claims]
        if len(set(ids)) != len(ids):
            raise ConfigError("claim ids must be unique in a sequential run")
        self.design = design
        self.claims = list(claims)
        self._states = {c.id: _ClaimState(c, list(c.populations()), margin=_UNSET) for c in self.claims}
        self.look_index = 0
        self.results: dict[str, ClaimResult] = {}
        self.members_used: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # population name -> members the evidence had at the last look

    # ----------------------------------------------------------------------------------------
    # Scheduling
    # ----------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every claim decided."""
        return len(self.results) == len(self.claims)

    def target_members(self) -> int:
        """Members per population at the next look (the maximum once past the last planned look)."""
        return self.design.looks[min(self.look_index, len(self.design.looks) - 1)]

    def populations_to_grow(self) -> list[PopulationSpec]:
        """The populations some undecided claim still needs, in first-use order."""
        out: dict[str, PopulationSpec] = {}
        for state in self._states.values():
            if state.claim.id not in self.results:
                for spec in state.populations:
                    out.setdefault(spec.name, spec)
        return list(out.values())

    def population_members(self) -> dict[str, int]:
        """Members seen per population at the last look (populations still growing included)."""
        return dict(self._seen)

    # ----------------------------------------------------------------------------------------
    # A look
    # ----------------------------------------------------------------------------------------

    def observe(self, evidence, final: bool = False) -> list[str]:
        """Evaluate every undecided claim on ``evidence`` (its populations hold at least
        :meth:`target_members` members; more are used); return the ids decided at this look.
        ``final``: the last look (all alpha spent) -- also when the members ran out. The design's
        last look is always final."""
        if self.done:
            raise ConfigError("every claim of this sequential run is already decided")
        check_evidence(getattr(evidence, "name", "trained"))
        is_final = bool(final) or self.look_index >= len(self.design.looks) - 1
        recorder = _Recorder(evidence, self._seen)
        decided = []
        for state in self._states.values():
            if state.claim.id in self.results:
                continue
            result = self._look(state, recorder, is_final)
            if result is not None:
                self.results[state.claim.id] = result
                decided.append(state.claim.id)
        self._stop_populations()
        self.look_index += 1
        return decided

    def _stop_populations(self) -> None:
        still_needed = {spec.name for spec in self.populations_to_grow()}
        for state in self._states.values():
            for spec in state.populations:
                if spec.name not in still_needed and spec.name not in self.members_used and spec.name in self._seen:
                    self.members_used[spec.name] = self._seen[spec.name]

    def _look(self, state: _ClaimState, evidence: _Recorder, is_final: bool) -> ClaimResult | None:
        claim = state.claim
        look = {"look": self.look_index + 1, "target_members": self.target_members()}
        try:
            if claim.kind == "comparison":
                return self._comparison_look(state, evidence, is_final, look)
            return self._combined_look(state, evidence, is_final, look)
        except KdclaimsError as exc:
            look.update(action="error", error=str(exc))
            state.records.append(look)
            if not is_final:
                return None
            result = ClaimResult(claim, evidence.name, "inconclusive", f"not evaluated: {exc}", None, {}, str(exc))
            result.details["sequential"] = self._sequential_details(state, "final")
            return result

    def _next_boundary(self, state: _ClaimState, fractions: list[float], is_final: bool) -> tuple[float, bool]:
        """(b_k, final) for the claim's current look at ``fractions`` (every look so far, this one last)."""
        rounded = tuple(round(f, _FRACTION_DIGITS) for f in fractions)
        final = is_final or rounded[-1] >= 1.0
        b = _boundary(rounded, tuple(state.boundaries), self.design.spending, self.design.alpha, final)
        return b, final

    def _alpha_spent(self, fraction: float, final: bool) -> float:
        if final:
            return self.design.alpha
        return float(SPENDING_FUNCTIONS[self.design.spending](min(fraction, 1.0), self.design.alpha))

    def _no_new_information(self, state: _ClaimState, sizes: dict[str, int]) -> bool:
        return bool(state.sizes) and all(sizes.get(k, 0) <= v for k, v in state.sizes[-1].items())

    # -- comparison ------------------------------------------------------------------------------

    def _comparison_look(self, state: _ClaimState, evidence, is_final: bool, look: dict) -> ClaimResult | None:
        from kdclaims.kinds.comparison import claim_margin, decide, paper_numbers

        claim = state.claim
        kind = KINDS.get("comparison")
        treatment, baseline, test, _, _ = kind.deciding_test(claim, evidence)
        sizes = {treatment.population: treatment.summary.n, baseline.population: baseline.summary.n}  # usable
        if self._no_new_information(state, sizes):
            return self._stale_look(state, look, is_final)
        if state.margin is _UNSET:  # the paper's design fixes it: once per claim
            state.margin = claim_margin(paper_numbers(claim))["value"]
        margin = state.margin
        favour, se, df = float(test.improvement), float(test.se), float(test.df)
        n_t = [s[treatment.population] for s in state.sizes] + [treatment.summary.n]
        n_b = [s[baseline.population] for s in state.sizes] + [baseline.summary.n]
        fractions = [float(f) for f in information_fraction(
            n_t, n_b, planned_treatment=self.design.max_members, planned_baseline=self.design.max_members,
            sd_treatment=treatment.summary.std, sd_baseline=baseline.summary.std)]
        if len(fractions) > 1 and any(b <= a for a, b in zip(fractions, fractions[1:])):
            return self._stale_look(state, look, is_final)
        b, final = self._next_boundary(state, fractions, is_final)
        z = _z_ratio(favour, se, df)
        c = b  # equivalence critical value: the same spending at the same information (see module docstring)
        upper = None if margin is None else (favour + _t_quantile(c, df) * se if se > 0 else favour)
        shown = margin is not None and _z_ratio(margin - favour, se, df) > c
        efficacy = z > b
        expected = claim.paper.outcome
        if efficacy:
            reason_code = "efficacy"
        elif expected == "retain" and shown:
            reason_code = "equivalence"
        elif final:
            reason_code = "final"
        else:
            reason_code = None
        look.update(n=sizes, information_fraction=fractions[-1], z=z, efficacy_boundary=b, nominal_alpha=_nominal(b),
                    alpha_spent=self._alpha_spent(fractions[-1], final), test=test.test, improvement=favour, se=se,
                    df=df, upper_bound=upper, margin=margin,
                    equivalence_critical=c if margin is not None else None, action=reason_code or "continue")
        state.records.append(look)
        state.sizes.append(sizes)
        state.fractions = fractions  # re-estimated at every look with the current variances
        state.boundaries.append(b)
        if reason_code is None:
            return None
        observed = "reject" if efficacy else "retain"
        bounded = None if observed == "reject" or margin is None else bool(shown)
        verdict, reason = decide(expected, observed, bounded)
        rule = {"efficacy": f"z {z:.3g} > boundary {b:.3g}",
                "equivalence": f"repeated upper bound {upper:.4g} < margin {margin:.4g}" if margin is not None else "",
                "final": (f"final look, z {z:.3g} <= boundary {b:.3g}"
                          + (f"; repeated upper bound {upper:.4g} vs margin {margin:.4g}" if margin is not None else ""))
                }[reason_code]
        reason = f"{reason} (sequential, stopped at look {look['look']} on {reason_code}: {rule})"
        fixed = kind.evaluate(claim, evidence)  # the full record (arms, tests, power, fragility) at the stop
        result = dataclasses.replace(fixed, verdict=verdict, reason=reason, observed_outcome=observed)
        result.details = {**fixed.details, "sequential": self._sequential_details(state, reason_code)}
        return result

    def _stale_look(self, state: _ClaimState, look: dict, is_final: bool) -> ClaimResult | None:
        """A look with no members beyond the claim's last one: nothing new to test, so it continues. At
        the final look (the members ran out) no alpha can be spent on no new information: the claim
        ends inconclusive, undecided at its last informative look."""
        look.update(action="no new members")
        state.records.append(look)
        if not is_final:
            return None
        reason = (f"not decided: the members ran out (no members beyond look {state.records[-2]['look']} "
                  "at the final look)" if len(state.records) > 1 else "not decided: no members")
        result = ClaimResult(state.claim, "trained", "inconclusive", reason, None, {})
        result.details["sequential"] = self._sequential_details(state, "final")
        return result

    # -- ranking, trend, bound, threshold ----------------------------------------------------------

    def _combined_look(self, state: _ClaimState, evidence: _Recorder, is_final: bool,
                       look: dict) -> ClaimResult | None:
        """Ranking, trend, bound, threshold: the kind's own rule at the look's nominal level."""
        claim = state.claim
        kind = KINDS.get(claim.kind)
        at_level = claim.kind in ("ranking", "trend", "bound")  # kinds whose evaluate takes the level
        interim_claim = claim
        if claim.kind == "bound" and claim.params.get("only_significant"):
            # until the final look every cell counts (which are significant is not settled; more cells only
            # make "holds" harder)
            interim_claim = dataclasses.replace(claim, params={**claim.params, "only_significant": False})
        # At the paper's level first: it reads the members (so the look's sizes are known) and, as every rule
        # here is monotone in the level (a smaller level makes fewer tests significant and every bound
        # wider), a claim undecided at 0.025 is undecided at any interim nominal level: no second pass.
        fixed = kind.evaluate(claim if is_final else interim_claim, evidence)
        sizes = {spec.name: evidence.usable[spec.name] for spec in state.populations if spec.name in evidence.usable}
        if self._no_new_information(state, sizes):
            return self._stale_look(state, look, is_final)
        fraction = min(sizes.values()) / self.design.max_members
        fractions = state.fractions + [fraction]
        b, final = self._next_boundary(state, fractions, is_final)
        nominal = _nominal(b)
        if final:
            result = kind.evaluate(claim, evidence, alpha=nominal) if at_level else fixed
        elif claim.kind == "threshold":
            result = fixed if fixed.observed_outcome == "fails" else _pessimistic_threshold(fixed, nominal)
        elif fixed.observed_outcome is None or nominal <= 0.0:
            result = None
        else:
            result = kind.evaluate(interim_claim, evidence, alpha=nominal)
        observed = None if result is None else result.observed_outcome
        reason_code = None
        if observed is not None:
            bounded = (claim.kind == "bound" and observed == "holds") or (claim.kind == "threshold" and observed == "holds")
            reason_code = "equivalence" if bounded else "efficacy"
        elif final:
            reason_code = "final"
        look.update(n=sizes, information_fraction=fraction, efficacy_boundary=b, nominal_alpha=nominal,
                    alpha_spent=self._alpha_spent(fraction, final),
                    statistic=_deciding_statistic(result if result is not None else fixed),
                    observed_outcome=observed, action=reason_code or "continue")
        state.records.append(look)
        state.sizes.append(sizes)
        state.fractions.append(fraction)
        state.boundaries.append(b)
        if reason_code is None:
            return None
        if claim.kind == "threshold" and not final and observed == "holds":
            rule = "no student expected to reach the level even at the pessimistic bounds"
        elif reason_code == "final":
            rule = f"final look, at the nominal level {nominal:.3g}"
        else:
            rule = f"decided at the nominal level {nominal:.3g} (boundary z {b:.3g})"
        result = dataclasses.replace(
            result, reason=f"{result.reason} (sequential, stopped at look {look['look']} on {reason_code}: {rule})")
        result.details = {**result.details, "sequential": self._sequential_details(state, reason_code)}
        return result

    def _sequential_details(self, state: _ClaimState, reason: str) -> dict:
        """What a decided claim's ``details["sequential"]`` holds; ``members_used``: each of its
        populations' members at the stopping look (the claim used them all)."""
        return {"design": self.design.as_dict(), "looks": copy.deepcopy(state.records),
                "stop_look": state.records[-1]["look"], "reason": reason,
                "members_used": {spec.name: self._seen.get(spec.name) for spec in state.populations}}


def _deciding_statistic(result: ClaimResult) -> dict | None:
    """The number a combined claim's decision turns on at a look, for the records."""
    from kdclaims.sequential import z_from_t

    d = result.details
    if result.claim.kind == "ranking" and d.get("lead"):
        test = d["lead"]["test"]
        return {"what": "z of the leader's lead over its hardest rival", "z": float(z_from_t(test["t"], test["df"]))}
    if result.claim.kind == "trend" and d.get("steps"):
        z = min(float(z_from_t(s["test"]["t"], s["test"]["df"])) for s in d["steps"])
        return {"what": "z of the weakest step", "z": z}
    if result.claim.kind == "bound" and d.get("cells"):
        return {"what": "highest upper bound vs the bound", "upper_bound": max(c["upper"] for c in d["cells"]),
                "bound": d["bound"]}
    if result.claim.kind == "threshold":
        pessimistic = d.get("pessimistic_expected_reaching_of_385")
        return {"what": "students of 385 expected to reach the level", "expected": max(
            (r["expected_reaching_of_385"] for r in d.get("arms", [])), default=None),
            **({"pessimistic": pessimistic} if pessimistic is not None else {})}
    return None


def _pessimistic_threshold(fixed: ClaimResult, nominal: float) -> ClaimResult | None:
    """A threshold claim's early "holds": fewer than one of 385 students expected to reach the level with
    every arm's mean similarity at its one-sided (1 - nominal) upper t bound and its std at its
    (1 - nominal) upper chi-square bound (the normal approximation of the kind, made pessimistic);
    None (continue) otherwise."""
    from scipy.special import gammaincinv, ndtr, stdtrit

    from kdclaims.paper import PAPER_N

    if nominal <= 0.0:
        return None
    level = fixed.details["level"]
    worst = 0.0
    for row in fixed.details["arms"]:
        n = row["n"]
        if n < 2:
            return None
        q_mean = -float(stdtrit(n - 1, nominal))  # lower-tail forms: nominal levels go down to 1e-18
        chi2_low = 2.0 * float(gammaincinv((n - 1) / 2.0, nominal))  # the chi-square(n - 1) quantile at nominal
        if not chi2_low > 0:
            return None
        std_factor = math.sqrt((n - 1) / chi2_low)
        tails = []
        for sim in row["similarity"].values():
            mean_hi = sim["mean"] + q_mean * sim["std"] / math.sqrt(n)
            std_hi = sim["std"] * std_factor
            tails.append(float(ndtr((mean_hi - level) / std_hi)) if std_hi > 0 else float(mean_hi >= level))
        worst = max(worst, PAPER_N * min(tails))
    if worst >= 1.0:
        return None
    details = {**fixed.details, "pessimistic_expected_reaching_of_385": worst}
    reason = (f"no member reaches {level:.0%} on every metric; even with pessimistic means and stds at most "
              f"{worst:.2g} of 385 students would be expected to")
    return dataclasses.replace(fixed, verdict="reproduced" if fixed.claim.paper.outcome == "holds" else "not_reproduced",
                               observed_outcome="holds", reason=reason, details=details)


class ValuesEvidence:
    """Trained-style evidence from per-member metric values held in memory (simulations and tests):
    ``values[population name][metric]`` is a sequence over members in seed order; the first
    ``members[population name]`` (or ``default_members``; None: all) are visible, so one object can
    show a look's worth of members or more (cached beyond the look)."""

    name = "trained"

    def __init__(self, values: dict, members: dict | None = None, default_members: int | None = None,
                 pairing: str = "none"):
        self.values, self.members, self.default_members, self.pairing = values, dict(members or {}), default_members, pairing
        self._arms: dict = {}  # (population, metric) -> ArmEvidence: claims share populations

    def visible(self, population: str) -> int | None:
        return self.members.get(population, self.default_members)

    def arm(self, spec: PopulationSpec, metric: str):
        from kdclaims.evaluate import ArmEvidence  # the evidence protocol's arm type (torch-heavy module: lazy)
        from kdclaims.stats import Summary

        key = (spec.name, metric)
        if key not in self._arms:
            try:
                column = self.values[spec.name][metric]
            except KeyError:
                raise KdclaimsError(f"no {metric} values for {spec.name}") from None
            shown = [float(v) for v in list(column)[:self.visible(spec.name)]]
            if len(shown) < 2:
                raise KdclaimsError(f"population {spec.name} has {len(shown)} member(s); a test needs at least 2")
            self._arms[key] = ArmEvidence(spec.name, spec.label, Summary.from_values(shown), values=shown,
                                          member_seeds=list(range(1, len(shown) + 1)))
        return self._arms[key]
