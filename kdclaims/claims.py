"""Claims: the paper's statements as data, and the generic loading of claim files.

A claim file is YAML: an optional ``group`` and ``defaults`` (merged into every claim of the file)
and a list of ``claims``. A claim carries its id, the sentence it checks, where the paper says it
(``source``), the architecture, its ``kind`` and that kind's parameters, and the outcome the paper
reports. Parsing is strict: an unknown or misspelt field, a missing one, a bad value or an id used
twice is a ``ClaimError`` that names the file and the claim.

What a kind takes and how it is evaluated is its class in ``kdclaims.kinds``; this module only
reads files, expands matrices and checks the fields every claim has. A comparison, for instance::

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

An entry (or the file's ``defaults``) with ``matrix: {metric: [...], alpha: [0.1, 0.5, 0.9]}``
stands for one claim per combination of values, in the order the dimensions are written (the last
varies fastest); ``{metric}`` and ``{alpha}`` in any string of the entry take the cell's value (a
string that is only a placeholder takes the value itself, so ``alpha: "{alpha}"`` is a number). A
dimension's value may be a mapping, which sets several placeholders at once. ``sentence`` may be a
mapping from the paper's outcome to the text, and a comparison's ``paper: table`` takes the outcome
and p from the p-value its ``source`` table prints.

The shipped catalogue is package data, ``kdclaims/catalogue/`` (``CLAIMS_DIR``); the repository's
``claims/`` is a link to it.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdclaims.spec import PopulationSpec
from kdclaims.errors import ClaimError, ConfigError, KdclaimsError
from kdclaims.kinds import KINDS, Arm
from kdclaims.architectures import get_architecture

CLAIMS_DIR = Path(__file__).resolve().parent / "catalogue"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
COMMON_FIELDS = ("id", "sentence", "source", "arch", "kind", "paper")
FILE_FIELDS = ("group", "defaults", "claims", "description")


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
        return KINDS.get(self.kind).populations(self)

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
    if raw["kind"] not in KINDS:
        raise ClaimError(f"{where}: unknown kind {raw['kind']!r}{_suggest(str(raw['kind']), KINDS)}; "
                         f"known kinds: {', '.join(KINDS)}")
    kind = KINDS.get(raw["kind"])
    allowed = set(COMMON_FIELDS) | {"group", "note"} | set(kind.required) | set(kind.optional)
    for name in raw:
        if name not in allowed:
            raise ClaimError(f"{where}: unknown field {name!r}{_suggest(str(name), allowed)}")
    try:
        get_architecture(raw["arch"])
    except ConfigError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    paper = raw["paper"]
    from_table = paper == "table"
    if not from_table and (not isinstance(paper, dict) or paper.get("outcome") not in kind.outcomes
                           or set(paper) - {"outcome", "p"}):
        raise ClaimError(f"{where}: paper must be {{outcome: {'|'.join(kind.outcomes)}, p: <printed p-value, "
                         f"optional>}} for a {kind.name} claim, got {paper!r}")
    params = kind.parse(raw, where)
    if from_table:
        outcome, p = kind.printed_outcome(str(raw["arch"]), str(raw["source"]), params, where)
    else:
        outcome, p = paper["outcome"], None if paper.get("p") is None else float(paper["p"])
    claim = Claim(
        id=claim_id, sentence=_sentence(raw["sentence"], outcome, kind.outcomes, where), source=str(raw["source"]),
        arch=str(raw["arch"]), kind=kind.name, params=params, group=str(raw.get("group", group)), file=file,
        note=str(raw.get("note", "")), paper=PaperOutcome(outcome, p),
    )
    try:  # every population must be a valid spec: known setup, alpha in [0, 1], ...
        claim.populations()
    except KdclaimsError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    return claim


def _sentence(value: Any, outcome: str, outcomes: tuple[str, ...], where: str) -> str:
    """The claim's sentence; given as {outcome: text}, the text of the paper's outcome."""
    if not isinstance(value, dict):
        return str(value)
    unknown = set(value) - set(outcomes)
    if unknown or outcome not in value:
        raise ClaimError(f"{where}: a sentence given per outcome needs keys among {', '.join(outcomes)}, "
                         f"including the paper's outcome {outcome!r}; got {', '.join(map(str, value))}")
    return str(value[outcome])


def expand_matrix(raw: Any, where: str) -> list:
    """The claims one entry stands for: the entry itself, or one per cell of its ``matrix``."""
    if not isinstance(raw, dict) or "matrix" not in raw:
        return [raw]
    matrix = raw["matrix"]
    if not isinstance(matrix, dict) or not matrix:
        raise ClaimError(f"{where}: matrix must map each placeholder to a list of values, e.g. "
                         "{alpha: [0.1, 0.5, 0.9]}")
    dimensions, defined = [], set()
    for name, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise ClaimError(f"{where}: matrix {name!r} must be a non-empty list of values, got {values!r}")
        cells = [value if isinstance(value, dict) else {name: value} for value in values]
        names = {key for cell in cells for key in cell}
        if names & defined:
            raise ClaimError(f"{where}: matrix placeholder {sorted(names & defined)[0]!r} is set by two dimensions")
        defined |= names
        dimensions.append(cells)
    template = {key: value for key, value in raw.items() if key != "matrix"}
    expanded = []
    for combination in itertools.product(*dimensions):
        values = {key: value for cell in combination for key, value in cell.items()}
        expanded.append(_fill(template, values, where))
    return expanded


def _fill(value: Any, values: dict, where: str) -> Any:
    """``value`` with every {placeholder} in its strings replaced by the matrix cell's value."""
    if isinstance(value, dict):
        return {key: _fill(item, values, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values, where) for item in value]
    if not isinstance(value, str):
        return value
    for name in PLACEHOLDER.findall(value):
        if name not in values:
            raise ClaimError(f"{where}: unknown placeholder {{{name}}}{_suggest(name, values)}; the matrix "
                             f"defines {', '.join(sorted(values))}")
    whole = PLACEHOLDER.fullmatch(value)
    if whole:  # alpha: "{alpha}" is the number, not its text
        return values[whole.group(1)]
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), value)


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
    unknown = set(document) - set(FILE_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise ClaimError(f"{path}: unknown top-level field {name!r}{_suggest(name, ['group', 'defaults', 'claims'])}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ClaimError(f"{path}: defaults must be a mapping")
    group = str(document.get("group", path.stem))
    claims, seen = [], set()
    for index, raw in enumerate(document["claims"]):
        where = f"{path} claim #{index + 1}"
        merged = {**defaults, **raw} if isinstance(raw, dict) else raw
        for entry in expand_matrix(merged, where):
            claim = parse_claim(entry, where, group=group, file=str(path))
            if claim.id in seen:
                raise ClaimError(f"{path}: claim id {claim.id!r} is used twice")
            seen.add(claim.id)
            claims.append(claim)
    return claims


def claim_files(directory: Path | str = CLAIMS_DIR) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_claims(paths=None) -> list[Claim]:
    """Every claim of the given files (default: the shipped catalogue, ``CLAIMS_DIR``); ids must be unique."""
    files = claim_files() if paths is None else [q for p in paths for q in (claim_files(p) if Path(p).is_dir() else [Path(p)])]
    claims, where = [], {}
    for path in files:
        for claim in load_claim_file(path):
            if claim.id in where:
                raise ClaimError(f"claim id {claim.id!r} is used twice: in {where[claim.id]} and {path}")
            where[claim.id] = path
            claims.append(claim)
    return claims
