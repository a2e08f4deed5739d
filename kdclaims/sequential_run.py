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
* Ranking and step trend (intersection-union tests, IUT, of one-sided Welch comparisons), pair by pair.
  A ranking's pairs are (expected setup e, rival r) for every e in ``expected_best`` and every other
  candidate r; a trend's are its steps (later arm, earlier arm). Each pair is a group-sequential test
  of its own, like a comparison: Welch's z of "first better than second" against the pair's own
  error-spending boundaries at the pair's own (variance-weighted) information fraction. It is
  "ahead" when z > b_k, "behind" when z < -b_k (each side spends alpha: the two one-sided tests of
  a two-sided design), and a pair that crossed stays decided. A ranking holds when one expected
  setup is ahead of every rival and fails when one rival is ahead of every expected setup; a trend
  holds when every step is ahead and fails when some step is behind. Validity: under any
  configuration where a ranking (or trend) does not hold, some pair's null is true, and that pair
  crosses at any look with probability at most alpha (its own spending), so the IUT's level is at
  most alpha -- whenever each pair crossed. The fixed design's caveats are unchanged: with several
  expected setups, "some e ahead of every rival" is bounded by |E| alpha at worst (the fixed rule's
  data-chosen leader has the same bound), and "fails" is a union over rivals (or steps).
  Futility (non-binding, pairs only): an undecided pair with at least half its information
  (FUTILITY_FROM_INFORMATION) whose conditional power under the current trend (stochastic
  curtailment: the drift estimated from the data so far) of ending beyond z_alpha is below 10%
  (FUTILITY_POWER) in both directions stops as "futile"; a pair still undecided at the final look
  is "spent". A way is also closed, for the look, while one of its undecided pairs has a predictive
  probability below 10% of ending beyond z_alpha in the direction the way needs (Spiegelhalter, Freedman
  & Blackburn's, flat prior on the drift: ``Phi((+-z - z_alpha sqrt(t)) / sqrt(1 - t))``; it averages the
  conditional power over the drift's posterior, so it needs no information minimum); it reopens if members
  grown for other claims raise the probability. A claim with no reachable outcome left (every way to
  "holds" and to "fails" passes through a pair that is futile, spent, decided the other way or closed in
  the way's direction) stops, inconclusive, on "futility".
  Futility never rejects anything, so it cannot raise a type-I error; it can only turn a late
  decision into "inconclusive" (the simulation counts how often). Pairs release populations: a
  ranking or trend needs only the populations of its undecided pairs that lie on a way to an outcome
  still reachable (a pair no such way passes through decides nothing, whatever it becomes), and reads
  a population that stopped growing at the members it stopped at. A trend with ``test: point_estimates`` keeps the
  whole-claim rule: the fixed rule at the look's nominal level alpha_k.
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
* Point-estimate trends, bounds and thresholds use the information fraction ``min n / N`` over the claim's
  populations: the least-informed population's (every component holds at least that information;
  with equal sizes it is n/N exactly).
* Errors. A claim whose evaluation fails at an interim look (e.g. too few usable members) is
  recorded and continues; at the final look it is inconclusive with the error, as in the fixed run.
  A look that brings a claim no members beyond its last one tests nothing new and continues; if it is
  the final look (the members ran out), the claim ends inconclusive.
* Stopping reasons. "efficacy": a significance boundary decided the claim (H0 rejected; a ranking or
  trend holds or fails; a bound fails; a threshold fails on a member); "equivalence": an effect was
  bounded (a retained H0 with its repeated bound below the margin; a bound holds; a threshold holds);
  "futility": a ranking or trend none of whose outcomes can be reached any more (inconclusive);
  "final": the final look, with nothing crossed (a comparison then retains H0). Claims are monitored
  one by one, each at alpha, as the fixed design tests each at 0.025 with no multiplicity correction.

Populations. A population stops growing when every claim that uses it is decided (crossed a
boundary or reached the final look) -- for a ranking or step trend, when every pair of it the
population belongs to is decided or can no longer change the outcome; ``members_used`` keeps the members it had then.
``populations_to_grow`` lists the populations some undecided claim still needs.

Records. Every decided claim's ``ClaimResult`` is its kind's evaluation at the stopping look with
the verdict, observed outcome and reason of the sequential rule; ``details["sequential"]`` holds the
design, the per-look records (look, members per population, information fraction, statistic z,
efficacy boundary, nominal level, alpha spent, repeated bound vs margin), the stopping look and
reason ("efficacy", "equivalence", "futility", "final") and the members used; a ranking's or step
trend's ``details["sequential"]["pairs"]`` holds each pair's status, the look it was decided at and its
last look's statistics (z, boundary, information, conditional power, predictive probability, the directions
closed), and each look record lists the
pairs tested at it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

from kdclaims.claims import Claim
from kdclaims.errors import ConfigError, KdclaimsError
from kdclaims.kinds import KINDS, ClaimResult
from kdclaims.sequential import (ALPHA, SPENDING_FUNCTIONS, information_fraction, next_boundary, spending_function,
                                 z_from_t)
from kdclaims.spec import PopulationSpec
from kdclaims.stats import _check_alpha

__all__ = ["Design", "SequentialRun", "ValuesEvidence", "check_evidence", "PAPER_EVIDENCE_MESSAGE", "STOP_REASONS"]

STOP_REASONS = ("efficacy", "equivalence", "futility", "final")
# A ranking's or step trend's pair stops as futile (non-binding) once it holds at least half its information and
# its conditional power under the current trend is below 10% in both directions: conventional stochastic-curtailment
# values, fixed before any simulation of the catalogue was run with them.
# The same 10% also closes a way to an outcome (for the look: it reopens if the probability rises again) while one
# of its undecided pairs has a predictive probability (flat prior on the drift) below it of ending beyond z_alpha in
# the direction the way needs. No information minimum there: the predictive probability averages over the drift's
# uncertainty, which is what makes conditional power unusable early. Pre-specified in benchmarks/RESULTS.md
# (session 7) before it was coded or simulated.
FUTILITY_FROM_INFORMATION = 0.5
FUTILITY_POWER = 0.10
PAPER_EVIDENCE_MESSAGE = ("--sequential needs trained evidence (members to look at); --evidence paper has only the "
                          "paper's summary statistics: drop --sequential or use --evidence trained")
EXPECTED_FILE = Path(__file__).with_name("sequential_expected.json")  # benchmarks/sequential_catalogue_sim.py writes it
_DIRECTIONS = ("ahead", "behind")  # a pair's two ways to cross, in the order of its (ahead, behind) chances
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
    "ranking": ("intersection-union, pair by pair: each (expected setup, rival) pair is a group-sequential test of "
                "its own (Welch's z against its own boundaries at its own information); a pair that crosses stays "
                "decided; holds when one expected setup is ahead of every rival, fails when one rival is ahead of "
                "every expected setup; the level of each pair bounds the IUT's"),
    "trend": ("intersection-union, step by step ('test: steps'): each step is a group-sequential test of its own; "
              "holds when every step has improved significantly, fails when some step worsens significantly; "
              "'test: point_estimates' trends: the fixed rule at the nominal level alpha_k at each look"),
    "pair_futility": ("non-binding: a ranking's pair or a trend's step stops undecided (futile) once it holds at "
                      f"least {FUTILITY_FROM_INFORMATION:.0%} of its information and its conditional power under the "
                      "current trend of ending beyond z_alpha either way is below "
                      f"{FUTILITY_POWER:.0%}; a way to an outcome is closed while one of its undecided pairs has a "
                      f"predictive probability (flat prior on the drift) below {FUTILITY_POWER:.0%} of ending "
                      "beyond z_alpha in the direction the way needs (reopened if it rises again); a claim no "
                      "outcome of which is reachable any more stops, inconclusive, on futility"),
    "bound": ("the fixed rule with repeated (1 - alpha_k) confidence bounds; 'only significant' bounds consider "
              "every cell until the final look"),
    "threshold": ("fails as soon as a member reaches the level; holds early only if fewer than one of 385 "
                  "students is expected to reach it with mean and std at their (1 - alpha_k) pessimistic bounds; "
                  "the fixed rule at the final look"),
    "information": ("comparison: variance-weighted information fraction of the two populations' sizes; other "
                    "kinds: min n / N over the claim's populations"),
    "populations": ("a population stops growing when every claim that uses it is decided, or, for a ranking or "
                    "step trend, when every pair of the claim it belongs to is decided (crossed, futile or spent) "
                    "or lies on no way to an outcome still reachable (open); "
                    "a claim still undecided reads a stopped population at the members it stopped at"),
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
    pairs: list["_Pair"] | None = None  # a ranking's or a step trend's components, each its own sequential test


@dataclass
class _Pair:
    """One component of a ranking or a step trend: the one-sided comparison "``first`` is better than
    ``second``" on the claim's metric, a group-sequential test of its own (its own information, its own
    boundaries), symmetric: ``status`` becomes "ahead" when z > b_k (first significantly better) or "behind"
    when z < -b_k (second significantly better), and stays so. A ranking's pairs are (expected, rival); a
    trend's are (later arm, earlier arm) for each step."""

    first: PopulationSpec
    second: PopulationSpec
    sizes: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (n first, n second) at each look used
    boundaries: list[float] = dataclasses.field(default_factory=list)
    status: str | None = None  # None (undecided), "ahead", "behind"
    decided_look: int | None = None
    last: dict | None = None  # the record of its last look

    @property
    def populations(self) -> tuple[PopulationSpec, PopulationSpec]:
        return self.first, self.second

    @property
    def closed(self) -> tuple[str, ...]:
        """The directions its predictive probability ruled out at its last look."""
        return tuple(self.last["closed"]) if self.last is not None else ()


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
        self._states = {c.id: _ClaimState(c, list(c.populations()), margin=_UNSET, pairs=_pairs_of(c))
                        for c in self.claims}
        self.look_index = 0
        self.results: dict[str, ClaimResult] = {}
        self.members_used: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # population name -> members the evidence had at the last look
        self._limits: dict[str, int] = {}  # population name -> the look target it last grew to

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

    def _needs(self):
        """(claim id, population) for every population an undecided claim still needs to grow."""
        for state in self._states.values():
            if state.claim.id not in self.results:
                for spec in _needed(state):
                    yield state.claim.id, spec

    def populations_to_grow(self) -> list[PopulationSpec]:
        """The populations some undecided claim still needs, in first-use order: every population of an
        undecided claim, but a ranking or step trend needs only the populations of its undecided pairs on a way
        to an outcome still reachable."""
        out: dict[str, PopulationSpec] = {}
        for _, spec in self._needs():
            out.setdefault(spec.name, spec)
        return list(out.values())

    def needed_by(self) -> dict[str, list[str]]:
        """Population name -> the undecided claims that need it to grow (why it grows at the next look)."""
        out: dict[str, list[str]] = {}
        for claim_id, spec in self._needs():
            out.setdefault(spec.name, []).append(claim_id)
        return out

    def evidence_members(self) -> dict[str, int]:
        """Members each population shows at the next look: the look's target for a population still growing,
        the members it stopped at for one that stopped while an undecided ranking or trend still reads it."""
        target, growing = self.target_members(), {spec.name for spec in self.populations_to_grow()}
        out = {}
        for state in self._states.values():
            if state.claim.id not in self.results:
                for spec in state.populations:
                    # the look target it last grew to, not its member count: members cached beyond a look need
                    # not be the next seeds, and a count would ask for seeds it never trained
                    out[spec.name] = target if spec.name in growing else self._limits.get(spec.name, target)
        return out

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
        for spec in self.populations_to_grow():  # what the caller grew to this look's target
            self._limits[spec.name] = self.target_members()
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
            if state.pairs is not None:
                return self._pairwise_look(state, evidence, is_final, look)
            return self._combined_look(state, evidence, is_final, look)
        except KdclaimsError as exc:
            look.update(action="error", error=str(exc))
            state.records.append(look)
            if not is_final:
                return None
            result = ClaimResult(claim, evidence.name, "inconclusive", f"not evaluated: {exc}", None, {}, str(exc))
            result.details["sequential"] = self._sequential_details(state, "final")
            return result

    def _next_boundary(self, state: _ClaimState | _Pair, fractions: list[float], is_final: bool) -> tuple[float, bool]:
        """(b_k, final) for a claim's (or a pair's) current look at ``fractions`` (every look so far, this one
        last), given the boundaries it used before."""
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

    # -- ranking and step trend: pair by pair ------------------------------------------------------

    def _pairwise_look(self, state: _ClaimState, evidence: _Recorder, is_final: bool,
                       look: dict) -> ClaimResult | None:
        """A ranking or a step trend: every undecided pair is tested at its own boundary (each pair is a
        group-sequential test of its own); the claim is decided by its pairs' statuses (``_ways``)."""
        from kdclaims.metrics import more_similar_direction
        from kdclaims.stats import welch_t_test

        claim = state.claim
        metric = claim.params["metric"]
        direction = more_similar_direction(metric)
        # every population read once, for the pairs and the look's record (a stopped one at its limit)
        arms = {spec.name: evidence.arm(spec, metric) for spec in state.populations}
        monitored = []
        for pair in state.pairs:
            if pair.status is not None:
                continue
            first, second = arms[pair.first.name], arms[pair.second.name]
            sizes = (first.summary.n, second.summary.n)
            if pair.sizes and sizes[0] <= pair.sizes[-1][0] and sizes[1] <= pair.sizes[-1][1]:
                continue  # no members beyond the pair's last look: nothing new to test
            fractions = [float(f) for f in information_fraction(
                [s[0] for s in pair.sizes] + [sizes[0]], [s[1] for s in pair.sizes] + [sizes[1]],
                planned_treatment=self.design.max_members, planned_baseline=self.design.max_members,
                sd_treatment=first.summary.std, sd_baseline=second.summary.std)]
            if len(fractions) > 1 and any(b <= a for a, b in zip(fractions, fractions[1:])):
                continue
            b, final = self._next_boundary(pair, fractions, is_final)
            test = welch_t_test(first.summary, second.summary, direction)
            z = _z_ratio(float(test.improvement), float(test.se), float(test.df))
            power = _conditional_power(z, fractions[-1], self.design.alpha)
            predictive = _predictive_probability(z, fractions[-1], self.design.alpha)
            status = "ahead" if z > b else ("behind" if z < -b else ("spent" if final else None))
            if status is None and fractions[-1] >= FUTILITY_FROM_INFORMATION and max(power) < FUTILITY_POWER:
                status = "futile"
            pair.sizes.append(sizes)
            pair.boundaries.append(b)
            pair.last = {"first": pair.first.name, "second": pair.second.name, "n": list(sizes),
                         "information_fraction": fractions[-1], "z": z, "efficacy_boundary": b,
                         "nominal_alpha": _nominal(b), "alpha_spent": self._alpha_spent(fractions[-1], final),
                         "improvement": float(test.improvement), "conditional_power": list(power),
                         "predictive_probability": list(predictive),
                         "closed": [d for d, p in zip(_DIRECTIONS, predictive) if p < FUTILITY_POWER],
                         "status": status or "undecided"}
            if status is not None:
                pair.status, pair.decided_look = status, look["look"]
            monitored.append(pair)
        way = _decided_way(claim, state.pairs)
        observed = way[0] if way is not None else None
        if observed is not None:
            reason_code = "efficacy"
        elif is_final:
            reason_code = "final"
        elif not _reachable_ways(claim, state.pairs):
            reason_code = "futility"
        else:
            reason_code = None
        sizes = {spec.name: evidence.usable[spec.name] for spec in state.populations if spec.name in evidence.usable}
        weakest = min(monitored, key=lambda pair: pair.last["z"]) if monitored else None
        look.update(n=sizes, pairs=[pair.last for pair in monitored],
                    pairs_decided=sum(pair.status in ("ahead", "behind") for pair in state.pairs),
                    pairs_total=len(state.pairs), observed_outcome=observed,
                    action=reason_code or ("continue" if monitored else "no new members"))
        if weakest is not None:
            look.update({k: weakest.last[k] for k in ("information_fraction", "efficacy_boundary", "nominal_alpha",
                                                      "alpha_spent")},
                        statistic={"what": "z of the weakest " + ("step" if claim.kind == "trend" else "pair")
                                           + " still monitored", "z": weakest.last["z"],
                                   "pair": f"{weakest.first.label} vs {weakest.second.label}"})
        state.records.append(look)
        if reason_code is None:
            return None
        kind = KINDS.get(claim.kind)
        fixed = kind.evaluate(claim, evidence)  # the full record (arms, ranking, tests) at the stopping look
        verdict = "inconclusive" if observed is None else (
            "reproduced" if observed == claim.paper.outcome else "not_reproduced")
        rule = ("no outcome can be reached any more: every way to one needs a pair that is futile (conditional power "
                f"below {FUTILITY_POWER:.0%} both ways), decided against it, or closed in its direction (predictive "
                f"probability below {FUTILITY_POWER:.0%})" if reason_code == "futility"
                else "each pair tested at its own boundary")
        summary = _pairs_reason(claim, state.pairs, observed)
        reason = f"{summary} (sequential, stopped at look {look['look']} on {reason_code}: {rule})"
        result = dataclasses.replace(fixed, verdict=verdict, observed_outcome=observed, reason=reason)
        result.details = {**fixed.details, "summary": summary,
                          "sequential": self._sequential_details(state, reason_code)}
        return result

    # -- point-estimate trend, bound, threshold -----------------------------------------------------

    def _combined_look(self, state: _ClaimState, evidence: _Recorder, is_final: bool,
                       look: dict) -> ClaimResult | None:
        """A point-estimate trend, a bound, a threshold (rankings and step trends: ``_pairwise_look``): the
        kind's own rule at the look's nominal level."""
        claim = state.claim
        kind = KINDS.get(claim.kind)
        at_level = claim.kind in ("trend", "bound")  # kinds whose evaluate takes the level
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
        details = {"design": self.design.as_dict(), "looks": copy.deepcopy(state.records),
                   "stop_look": state.records[-1]["look"], "reason": reason,
                   "members_used": {spec.name: self._seen.get(spec.name) for spec in state.populations}}
        if state.pairs is not None:
            details["pairs"] = [{"first": pair.first.name, "second": pair.second.name,
                                 "status": pair.status or "undecided", "decided_look": pair.decided_look,
                                 "last": copy.deepcopy(pair.last)} for pair in state.pairs]
        return details



def _pairs_of(claim: Claim) -> list[_Pair] | None:
    """A ranking's pairs (each expected setup against each rival) or a step trend's (each step, later arm
    first); None for the kinds decided as a whole."""
    if claim.kind == "ranking":
        expected = [arm.population(claim.arch) for arm in claim.params["expected_best"]]
        names = {spec.name for spec in expected}
        rivals = [spec for spec in (arm.population(claim.arch) for arm in claim.params["candidates"])
                  if spec.name not in names]
        return [_Pair(e, r) for e in expected for r in rivals]
    if claim.kind == "trend" and claim.params.get("test", "steps") == "steps":
        arms = [arm.population(claim.arch) for arm in claim.params["arms"]]
        return [_Pair(later, earlier) for earlier, later in zip(arms, arms[1:])]
    return None


def _needed(state: _ClaimState) -> list[PopulationSpec]:
    """The populations an undecided claim still needs to grow: all of them, or, for a pairwise claim, those of its
    undecided pairs that lie on a way still reachable (a pair no reachable way passes through cannot change the
    outcome, whatever it becomes)."""
    if state.pairs is None:
        return state.populations
    out: dict[str, PopulationSpec] = {}
    for _, _, group in _reachable_ways(state.claim, state.pairs):
        for pair in group:
            if pair.status is None:
                for spec in pair.populations:
                    out.setdefault(spec.name, spec)
    return list(out.values())


def _ways(claim: Claim, pairs: list[_Pair]) -> list[tuple[str, str, list[_Pair]]]:
    """Every way the claim can be decided: (outcome, the status each of its pairs must reach, those pairs).
    A ranking holds through one expected setup ahead of every rival, fails through one rival ahead of every
    expected setup; a step trend holds through every step ahead, fails through any one step behind."""
    if claim.kind == "ranking":
        by_first, by_second = {}, {}
        for pair in pairs:
            by_first.setdefault(pair.first.name, []).append(pair)
            by_second.setdefault(pair.second.name, []).append(pair)
        return ([("holds", "ahead", group) for group in by_first.values()]
                + [("fails", "behind", group) for group in by_second.values()])
    return [("holds", "ahead", pairs)] + [("fails", "behind", [pair]) for pair in pairs]


def _decided_way(claim: Claim, pairs: list[_Pair]) -> tuple[str, str, list[_Pair]] | None:
    """The way every pair of which reached its status, if any (two cannot: they would disagree on a pair)."""
    return next((way for way in _ways(claim, pairs) if all(p.status == way[1] for p in way[2])), None)


def _reachable_ways(claim: Claim, pairs: list[_Pair]) -> list[tuple[str, str, list[_Pair]]]:
    """The ways still open: every pair of the way decided its way, or still undecided and not closed in the way's
    direction by its predictive probability (a futile or spent pair, like one decided the other way, closes every
    way through it)."""
    return [way for way in _ways(claim, pairs)
            if all(p.status == way[1] or (p.status is None and way[1] not in p.closed) for p in way[2])]


def _chance_beyond(z: float, fraction: float, alpha: float, averaged: bool) -> tuple[float, float]:
    """(ahead, behind): the chance that a pair's z ends beyond +-z_alpha at full information, given z at information
    fraction t. The final z is normal with mean z / sqrt(t) (the drift estimated so far) and variance 1 - t given
    that drift, or (1 - t) / t once the drift's own uncertainty (its flat-prior posterior N(z / sqrt(t), 1 / t)) is
    averaged in (``averaged``). z_alpha (1.96 at 0.025), not the final look's slightly larger boundary: the chance
    is if anything overstated, so nothing closes or stops earlier than it should."""
    critical = NormalDist().inv_cdf(1.0 - alpha)
    if not math.isfinite(z) or fraction >= 1.0:  # a zero standard error, or nothing left to come: where z is
        return float(z > critical), float(z < -critical)
    mean = z / math.sqrt(fraction)
    spread = math.sqrt((1.0 - fraction) / (fraction if averaged else 1.0))
    return (0.5 * math.erfc((critical - mean) / spread / math.sqrt(2.0)),
            0.5 * math.erfc((critical + mean) / spread / math.sqrt(2.0)))


def _conditional_power(z: float, fraction: float, alpha: float) -> tuple[float, float]:
    """(ahead, behind) under the current trend (Lan, Simon & Halperin's stochastic curtailment):
    ``1 - Phi((z_alpha -+ z / sqrt(t)) / sqrt(1 - t))``."""
    return _chance_beyond(z, fraction, alpha, averaged=False)


def _predictive_probability(z: float, fraction: float, alpha: float) -> tuple[float, float]:
    """(ahead, behind) with a flat prior on the drift (Spiegelhalter, Freedman & Blackburn 1986): the conditional
    power averaged over the drift's posterior, ``Phi((+-z - z_alpha sqrt(t)) / sqrt(1 - t))``. Not overconfident at
    low information, so it can close ways from the first look."""
    return _chance_beyond(z, fraction, alpha, averaged=True)


def _pairs_reason(claim: Claim, pairs: list[_Pair], observed: str | None) -> str:
    """The outcome in one sentence (which pair crossed at which look is in ``details["sequential"]["pairs"]``)."""
    way = _decided_way(claim, pairs) if observed is not None else None
    if way is not None:
        _, _, group = way
        if claim.kind == "ranking" and observed == "holds":
            return (f"{group[0].first.label} is significantly ahead of every rival ({len(group)}), each pair at its "
                    "own boundary")
        if claim.kind == "ranking":
            return f"{group[0].second.label} is significantly ahead of every expected setup ({len(group)})"
        if observed == "holds":
            return f"every step improves significantly ({len(group)}), each at its own boundary"
        return "the metric gets significantly worse at " + ", ".join(
            f"{p.second.label} → {p.first.label}" for p in pairs if p.status == "behind")

    def pair_text(p):
        if p.last is None:
            return f"{p.first.label} vs {p.second.label}"
        if p.status == "futile":
            power = f", conditional power {max(p.last['conditional_power']):.2g}"
        elif p.status is None and p.closed:
            power = ", closed " + " and ".join(
                f"{d} (predictive probability {chance:.2g})"
                for d, chance in zip(_DIRECTIONS, p.last["predictive_probability"]) if d in p.closed)
        else:
            power = ""
        return (f"{p.first.label} vs {p.second.label} (z {p.last['z']:.3g}, boundary "
                f"{p.last['efficacy_boundary']:.3g}{power})")

    futile = [p for p in pairs if p.status == "futile" or (p.status is None and p.closed)]
    if futile and not _reachable_ways(claim, pairs):
        head, shown = "no outcome can be reached any more; futile or closed: ", futile
    else:
        head, shown = "not every pair crossed its boundary by the final look; undecided: ", [
            p for p in pairs if p.status not in ("ahead", "behind")]
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return head + "; ".join(pair_text(p) for p in shown[:3]) + more


def _deciding_statistic(result: ClaimResult) -> dict | None:
    """The number a combined claim's decision turns on at a look, for the records."""
    from kdclaims.sequential import z_from_t

    d = result.details
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
