"""Claims: the paper's statements as data.

A claim file is YAML: an optional ``group`` and ``defaults`` (merged into every claim of the file)
and a list of ``claims``. A claim carries its id, the sentence it checks, where the paper says it
(``source``), the architecture, its ``kind`` and that kind's parameters, and the outcome the paper
reports. Parsing is strict: an unknown or misspelt field, a missing one, a bad value or an id used
twice is a ``ClaimError`` that names the file and the claim.

Claim kinds (what is tested, with which parameters) live in ``KINDS``; how a kind is evaluated lives
in ``kdclaims.evaluate``. A comparison, for instance::

    - id: resnet18-t4-ad-kd0.1
      sentence: "ResNet-18 KD (α=0.1) students are not more similar to the teacher than independent ones on AD"
      source: Table 4
      arch: resnet18
      kind: comparison
      metric: activation_distance
      treatment: {setup: kd, alpha: 0.1}
      baseline: {setup: independent}
      direction: less          # H_a: mean(treatment) < mean(baseline)
      paper: {outcome: retain, p: 0.956}
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdclaims.spec import PopulationSpec
from kdclaims.errors import ClaimError, ConfigError, KdclaimsError
from kdclaims.metrics import METRICS, get_metric
from kdclaims.models import get_architecture

CLAIMS_DIR = Path(__file__).resolve().parent.parent / "claims"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
DIRECTIONS = ("less", "greater")

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


@dataclass(frozen=True)
class PaperOutcome:
    outcome: str  # comparison: "reject" | "retain" (H0); other kinds: "holds" | "fails"
    p: float | None = None  # the p-value the paper prints, when it prints one


@dataclass(frozen=True)
class Claim:
    id: str
    sentence: str
    source: str
    arch: str
    kind: str
    params: dict  # the kind's own parameters, validated by its ClaimKind
    paper: PaperOutcome
    group: str = ""
    file: str = ""
    note: str = ""  # e.g. where the paper contradicts itself

    # Convenience for comparisons, the commonest kind.
    @property
    def metric(self) -> str | None:
        return self.params.get("metric")

    def populations(self) -> list[PopulationSpec]:
        """Every population this claim needs, in a stable order."""
        return KINDS[self.kind].populations(self)

    @property
    def markers(self) -> list[str]:
        return [self.arch, _marker_name(self.group)] if self.group else [self.arch]

    def as_dict(self) -> dict:
        return {
            "id": self.id, "sentence": self.sentence, "source": self.source, "arch": self.arch, "kind": self.kind,
            "group": self.group, "file": self.file, "note": self.note, "params": _plain(self.params),
            "paper": {"outcome": self.paper.outcome, "p": self.paper.p},
        }


def _marker_name(group: str) -> str:
    return "group_" + re.sub(r"[^A-Za-z0-9_]", "_", group)


def _plain(value: Any) -> Any:
    if isinstance(value, Arm):
        return {"setup": value.setup, "alpha": value.alpha, "temperature": value.temperature}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Claim kinds: parameters and validation (evaluation is in kdclaims.evaluate)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimKind:
    name: str
    required: tuple[str, ...]
    optional: dict = field(default_factory=dict)  # name -> default
    description: str = ""
    outcomes: tuple[str, ...] = ("holds", "fails")  # what the paper can report for this kind

    def parse(self, raw: dict, where: str) -> dict:
        params = {}
        for name in self.required:
            if name not in raw:
                raise ClaimError(f"{where}: missing field {name!r} (a {self.name} claim needs {', '.join(self.required)})")
            params[name] = raw[name]
        for name, default in self.optional.items():
            params[name] = raw.get(name, default)
        return self.check(params, where)

    def check(self, params: dict, where: str) -> dict:
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        raise NotImplementedError


def _parse_arm(value: Any, where: str, name: str) -> Arm:
    if not isinstance(value, dict):
        raise ClaimError(f"{where}: {name} must be a mapping like {{setup: kd, alpha: 0.5}}, got {value!r}")
    unknown = set(value) - {"setup", "alpha", "temperature"}
    if unknown:
        raise ClaimError(f"{where}: unknown field {sorted(unknown)[0]!r} in {name} (allowed: setup, alpha, temperature)")
    if "setup" not in value:
        raise ClaimError(f"{where}: {name} needs a setup")
    arm = Arm(str(value["setup"]), value.get("alpha"), float(value.get("temperature", 1.0)))
    return arm


def paper_arms() -> list[Arm]:
    """The ten setups of the paper's tables: independent, then KD, uniform and gaussian KD at 0.1/0.5/0.9."""
    arms = [Arm("independent")]
    for setup in ("kd", "uniform_kd", "gaussian_kd"):
        arms += [Arm(setup, alpha) for alpha in PAPER_ALPHAS]
    return arms


def _parse_arms(value: Any, where: str, name: str, minimum: int = 1) -> list[Arm]:
    if value == "all":
        return paper_arms()
    if not isinstance(value, list) or len(value) < minimum:
        raise ClaimError(f"{where}: {name} must be 'all' or a list of at least {minimum} mappings like "
                         f"{{setup: kd, alpha: 0.5}}")
    arms = [_parse_arm(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if len(set(arms)) != len(arms):
        raise ClaimError(f"{where}: {name} lists the same setup twice")
    return arms


def _parse_metrics(value: Any, where: str) -> list[str]:
    metrics = [value] if isinstance(value, str) else value
    if not isinstance(metrics, list) or not metrics:
        raise ClaimError(f"{where}: metrics must be a metric name or a non-empty list of them")
    for metric in metrics:
        try:
            get_metric(metric)
        except ConfigError as exc:
            raise ClaimError(f"{where}: {exc}") from None
    return list(metrics)


def _positive_number(value: Any, where: str, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise ClaimError(f"{where}: {name} must be a positive number, got {value!r}")
    return number


class ComparisonKind(ClaimKind):
    """Treatment more similar to the teacher (or more accurate) than a baseline: one-tailed z-test."""

    def check(self, params: dict, where: str) -> dict:
        metric = params["metric"]
        try:
            get_metric(metric)
        except ConfigError as exc:
            raise ClaimError(f"{where}: {exc}") from None
        if params["direction"] not in DIRECTIONS:
            raise ClaimError(f"{where}: direction must be 'less' or 'greater' (H_a: treatment mean < or > baseline "
                             f"mean), got {params['direction']!r}")
        params["treatment"] = _parse_arm(params["treatment"], where, "treatment")
        params["baseline"] = _parse_arm(params["baseline"], where, "baseline")
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        return [claim.params["treatment"].population(claim.arch), claim.params["baseline"].population(claim.arch)]


class RankingKind(ClaimKind):
    """Which setup is best on a metric: the observed best must be one of ``expected_best`` and lead
    every other candidate significantly (z-test of the best expected vs the best of the rest)."""

    def check(self, params: dict, where: str) -> dict:
        params["metric"] = _parse_metrics(params["metric"], where)[0]
        params["candidates"] = _parse_arms(params["candidates"], where, "candidates", minimum=2)
        params["expected_best"] = _parse_arms(params["expected_best"], where, "expected_best")
        missing = [a for a in params["expected_best"] if a not in params["candidates"]]
        if missing:
            raise ClaimError(f"{where}: expected_best {missing[0]} is not among the candidates")
        if len(params["expected_best"]) == len(params["candidates"]):
            raise ClaimError(f"{where}: expected_best lists every candidate, so the ranking claims nothing")
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        return [a.population(claim.arch) for a in claim.params["candidates"]]


class TrendKind(ClaimKind):
    """Similarity (or the metric's better direction) improves step by step along ``arms``."""

    def check(self, params: dict, where: str) -> dict:
        params["metric"] = _parse_metrics(params["metric"], where)[0]
        params["arms"] = _parse_arms(params["arms"], where, "arms", minimum=2)
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        return [a.population(claim.arch) for a in claim.params["arms"]]


class BoundKind(ClaimKind):
    """An effect is below a size. ``quantity: max_improvement``: every improvement of a treatment over
    the baseline (in the metric's better direction) is below ``bound``; ``quantity: spread``: the
    means of ``arms`` differ pairwise by less than ``bound``. Both are intersection-union tests: each
    one-sided 97.5% upper confidence bound must be below ``bound``."""

    QUANTITIES = ("max_improvement", "spread")

    def check(self, params: dict, where: str) -> dict:
        if params["quantity"] not in self.QUANTITIES:
            raise ClaimError(f"{where}: quantity must be one of {', '.join(self.QUANTITIES)}, got {params['quantity']!r}")
        params["metrics"] = _parse_metrics(params["metrics"], where)
        params["bound"] = _positive_number(params["bound"], where, "bound")
        params["arms"] = _parse_arms(params["arms"], where, "arms", minimum=2 if params["quantity"] == "spread" else 1)
        if params["quantity"] == "max_improvement":
            if params["baseline"] is None:
                raise ClaimError(f"{where}: a max_improvement bound needs a baseline")
            params["baseline"] = _parse_arm(params["baseline"], where, "baseline")
        elif params["baseline"] is not None or params["only_significant"]:
            raise ClaimError(f"{where}: a spread bound takes no baseline and no only_significant")
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        arms = list(claim.params["arms"])
        if claim.params.get("baseline") is not None:
            arms.append(claim.params["baseline"])
        return [a.population(claim.arch) for a in arms]


class ThresholdKind(ClaimKind):
    """The compression test (Section 3): no member of ``arms`` reaches ``similarity_at_least`` on every
    similarity metric at once. Distances are read as similarities: 1 - AD/sqrt(2), 1 - JS/ln 2,
    1 - prediction dissimilarity; cosine as it is."""

    def check(self, params: dict, where: str) -> dict:
        params["arms"] = _parse_arms(params["arms"], where, "arms")
        level = params["similarity_at_least"]
        if not isinstance(level, (int, float)) or not 0 < level <= 1:
            raise ClaimError(f"{where}: similarity_at_least must be in (0, 1], got {level!r}")
        return params

    def populations(self, claim: Claim) -> list[PopulationSpec]:
        return [a.population(claim.arch) for a in claim.params["arms"]]


KINDS: dict[str, ClaimKind] = {}


def register_kind(kind: ClaimKind) -> ClaimKind:
    KINDS[kind.name] = kind
    return kind


register_kind(ComparisonKind(
    "comparison", required=("metric", "treatment", "baseline", "direction"),
    description="treatment vs baseline on one metric, one-tailed two-sample z-test at 0.025",
    outcomes=("reject", "retain"),
))
register_kind(RankingKind(
    "ranking", required=("metric", "expected_best"), optional={"candidates": "all"},
    description="the best setup on a metric is one of expected_best, significantly ahead of the rest",
))
register_kind(TrendKind(
    "trend", required=("metric", "arms"),
    description="the metric improves monotonically along arms (e.g. with alpha)",
))
register_kind(BoundKind(
    "bound", required=("quantity", "metrics", "arms", "bound"), optional={"baseline": None, "only_significant": False},
    description="an effect (largest improvement, or spread of means) is below a size",
))
register_kind(ThresholdKind(
    "threshold", required=("arms",), optional={"similarity_at_least": 0.95},
    description="no member reaches the similarity threshold on every metric (the compression test)",
))

COMMON_FIELDS = ("id", "sentence", "source", "arch", "kind", "paper")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_claim(raw: Any, where: str, group: str = "", file: str = "") -> Claim:
    if not isinstance(raw, dict):
        raise ClaimError(f"{where}: a claim must be a mapping of fields, got {type(raw).__name__}")
    claim_id = raw.get("id")
    if claim_id is not None:
        where = f"{where} (claim {claim_id!r})"
    for name in COMMON_FIELDS:
        if name not in raw:
            raise ClaimError(f"{where}: missing field {name!r}")
    if not isinstance(claim_id, str) or not ID_PATTERN.match(claim_id):
        raise ClaimError(f"{where}: id {claim_id!r} must be letters, digits and . _ + - (no spaces)")
    kind = KINDS.get(raw["kind"])
    if kind is None:
        raise ClaimError(f"{where}: unknown kind {raw['kind']!r}{_suggest(str(raw['kind']), KINDS)}; "
                         f"known kinds: {', '.join(KINDS)}")
    allowed = set(COMMON_FIELDS) | {"group", "note"} | set(kind.required) | set(kind.optional)
    for name in raw:
        if name not in allowed:
            raise ClaimError(f"{where}: unknown field {name!r}{_suggest(str(name), allowed)}")
    try:
        get_architecture(raw["arch"])
    except ConfigError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    paper = raw["paper"]
    if not isinstance(paper, dict) or paper.get("outcome") not in kind.outcomes or set(paper) - {"outcome", "p"}:
        raise ClaimError(f"{where}: paper must be {{outcome: {'|'.join(kind.outcomes)}, p: <printed p-value, "
                         f"optional>}} for a {kind.name} claim, got {paper!r}")
    params = kind.parse(raw, where)
    claim = Claim(
        id=claim_id, sentence=str(raw["sentence"]), source=str(raw["source"]), arch=str(raw["arch"]),
        kind=kind.name, params=params, group=str(raw.get("group", group)), file=file, note=str(raw.get("note", "")),
        paper=PaperOutcome(paper["outcome"], None if paper.get("p") is None else float(paper["p"])),
    )
    try:  # every population must be a valid spec: known setup, alpha in [0, 1], ...
        claim.populations()
    except KdclaimsError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    return claim


def load_claim_file(path: Path | str) -> list[Claim]:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClaimError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ClaimError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise ClaimError(f"{path}: a claim file needs a top-level 'claims:' list")
    unknown = set(document) - {"group", "defaults", "claims", "description"}
    if unknown:
        name = sorted(unknown)[0]
        raise ClaimError(f"{path}: unknown top-level field {name!r}{_suggest(name, ['group', 'defaults', 'claims'])}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ClaimError(f"{path}: defaults must be a mapping")
    group = str(document.get("group", path.stem))
    claims, seen = [], set()
    for index, raw in enumerate(document["claims"]):
        merged = {**defaults, **raw} if isinstance(raw, dict) else raw
        claim = parse_claim(merged, f"{path} claim #{index + 1}", group=group, file=str(path))
        if claim.id in seen:
            raise ClaimError(f"{path}: claim id {claim.id!r} is used twice")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def claim_files(directory: Path | str = CLAIMS_DIR) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_claims(paths=None) -> list[Claim]:
    """Every claim of the given files (default: the repository's ``claims/``); ids must be unique."""
    files = claim_files() if paths is None else [q for p in paths for q in (claim_files(p) if Path(p).is_dir() else [Path(p)])]
    claims, where = [], {}
    for path in files:
        for claim in load_claim_file(path):
            if claim.id in where:
                raise ClaimError(f"claim id {claim.id!r} is used twice: in {where[claim.id]} and {path}")
            where[claim.id] = path
            claims.append(claim)
    return claims


def metric_names() -> list[str]:
    return list(METRICS)
