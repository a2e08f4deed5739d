"""Claims: the paper's statements as data, and the generic loading of claim files.

A claim file is YAML: an optional ``group`` and ``defaults`` (merged into every claim of the file)
and a list of ``claims``. A claim carries its id, the sentence it checks, where the paper says it
(``source``), the architecture, its ``kind`` and that kind's parameters, and the outcome the paper
reports. Parsing is strict: an unknown or misspelt field, a missing one, a value of the wrong type or
out of range (p in [0, 1], alpha and bounds finite numbers and not booleans, a temperature positive),
or an id used twice is a one-line ``ClaimError`` naming the file, the line of the claim's entry, the
claim and the field. Whoever wrote the file, reading it is bounded: YAML anchors and aliases are
refused (a few nested aliases expand a 1 KB file to gigabytes), and so are files over
``MAX_FILE_BYTES``, nesting deeper than ``MAX_NESTING`` and matrices standing for too many claims.

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
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdclaims.spec import PopulationSpec
from kdclaims.errors import ClaimError, ConfigError, KdclaimsError, short_repr
from kdclaims.kinds import KINDS, Arm
from kdclaims.architectures import get_architecture
from kdclaims.kinds.base import probability, text

CLAIMS_DIR = Path(__file__).resolve().parent / "catalogue"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
COMMON_FIELDS = ("id", "sentence", "source", "arch", "kind", "paper")
FILE_FIELDS = ("group", "defaults", "claims", "description")

# Bounds on what a claim file may cost to read, whoever wrote it. The shipped catalogue's largest file is
# 6 KB (52 KB all together), its deepest nesting 6 and its largest matrix 12 claims, so these refuse nothing
# honest. PyYAML's safe loader parses about 6 us a byte, so the size bounds the time too (~2 s).
MAX_FILE_BYTES = 256 * 1024
MAX_NESTING = 32  # YAML collections inside collections; deeper would exhaust Python's recursion
MAX_MATRIX_CLAIMS = 1000  # claims one matrix entry may stand for
MAX_MATRIX_VALUES = 200_000  # claims times the values in its template: the work of expanding it
MAX_FILLED_TEXT = 10_000  # characters of one string once its placeholders are filled


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
        """The architecture and ``group_<group>``: both as a Python name (hyphens as underscores) and, where
        it differs, as the group is written (``-m group_vit-kd-vs-uniform`` works as the user reads it)."""
        if not self.group:
            return [self.arch]
        names = [self.arch, _marker_name(self.group)]
        if re.fullmatch(r"[\w.-]+", self.group) and f"group_{self.group}" not in names:
            names.append(f"group_{self.group}")
        return names

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
        where = f"{where} (claim {short_repr(claim_id)})"
    for name in COMMON_FIELDS:
        if name not in raw:
            raise ClaimError(f"{where}: missing field {name!r}")
    if not isinstance(claim_id, str) or not ID_PATTERN.match(claim_id):
        raise ClaimError(f"{where}: id {short_repr(claim_id)} must be letters, digits and . _ + - (no spaces)")
    for name in ("kind", "arch", "source", "group", "note"):
        if name in raw:
            text(raw[name], where, name)
    if raw["kind"] not in KINDS:
        raise ClaimError(f"{where}: unknown kind {raw['kind']!r}{_suggest(raw['kind'], KINDS)}; "
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
                         f"optional>}} for a {kind.name} claim, got {short_repr(paper)}")
    params = kind.parse(raw, where)
    if from_table:
        outcome, p = kind.printed_outcome(raw["arch"], raw["source"], params, where)
    else:
        outcome, p = paper["outcome"], None if paper.get("p") is None else probability(paper["p"], where, "paper.p")
    claim = Claim(
        id=claim_id, sentence=_sentence(raw["sentence"], outcome, kind.outcomes, where), source=raw["source"],
        arch=raw["arch"], kind=kind.name, params=params, group=raw.get("group", group), file=file,
        note=raw.get("note", ""), paper=PaperOutcome(outcome, p),
    )
    try:  # every population must be a valid spec: known setup, alpha in [0, 1], ...
        claim.populations()
    except KdclaimsError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    return claim


def _sentence(value: Any, outcome: str, outcomes: tuple[str, ...], where: str) -> str:
    """The claim's sentence; given as {outcome: text}, the text of the paper's outcome."""
    if not isinstance(value, dict):
        return text(value, where, "sentence")
    unknown = set(value) - set(outcomes)
    if unknown or outcome not in value:
        raise ClaimError(f"{where}: a sentence given per outcome needs keys among {', '.join(outcomes)}, "
                         f"including the paper's outcome {outcome!r}; got {short_repr(', '.join(map(str, value)))}")
    return text(value[outcome], where, f"sentence.{outcome}")


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
            raise ClaimError(f"{where}: matrix {name!r} must be a non-empty list of values, got {short_repr(values)}")
        cells = [value if isinstance(value, dict) else {name: value} for value in values]
        for cell in cells:  # scalars only: a placeholder's text is then as long as the file wrote it
            for key, value in cell.items():
                if not isinstance(key, str) or not isinstance(value, (str, int, float, type(None))):
                    raise ClaimError(f"{where}: matrix {name!r} sets {short_repr(key)} to {short_repr(value)}; a "
                                     "placeholder's value must be a string or a number")
        names = {key for cell in cells for key in cell}
        if names & defined:
            raise ClaimError(f"{where}: matrix placeholder {sorted(names & defined)[0]!r} is set by two dimensions")
        defined |= names
        dimensions.append(cells)
    template = {key: value for key, value in raw.items() if key != "matrix"}
    count = math.prod(len(cells) for cells in dimensions)
    if count > MAX_MATRIX_CLAIMS or count * _size(template) > MAX_MATRIX_VALUES:
        raise ClaimError(f"{where}: the matrix stands for {count} claims of {_size(template)} values each, more than a "
                         f"claim file may expand to ({MAX_MATRIX_CLAIMS} claims, {MAX_MATRIX_VALUES} values)")
    expanded = []
    for combination in itertools.product(*dimensions):
        values = {key: value for cell in combination for key, value in cell.items()}
        expanded.append(_fill(template, values, where))
    return expanded


def _size(value: Any) -> int:
    """How many values ``value`` holds, counting those inside lists and mappings."""
    if isinstance(value, dict):
        return 1 + sum(_size(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(item) for item in value)
    return 1


def _fill(value: Any, values: dict, where: str) -> Any:
    """``value`` with every {placeholder} in its strings replaced by the matrix cell's value."""
    if isinstance(value, dict):
        return {key: _fill(item, values, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values, where) for item in value]
    if not isinstance(value, str):
        return value
    names = PLACEHOLDER.findall(value)
    for name in names:
        if name not in values:
            raise ClaimError(f"{where}: unknown placeholder {{{name}}}{_suggest(name, values)}; the matrix "
                             f"defines {', '.join(sorted(values))}")
    whole = PLACEHOLDER.fullmatch(value)
    if whole:  # alpha: "{alpha}" is the number, not its text
        return values[whole.group(1)]
    # Measured before it is built: a long value in many placeholders would otherwise multiply the file's size.
    if len(value) + sum(len(str(values[name])) for name in names) > MAX_FILLED_TEXT:
        raise ClaimError(f"{where}: {short_repr(value)} is longer than {MAX_FILLED_TEXT} characters once its "
                         "placeholders are filled")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), value)


class _ClaimFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, without what makes a small file expensive: anchors and aliases (a few nested
    aliases expand a 1 KB file to gigabytes once a claim's text is built from it) and deep nesting (which
    exhausts Python's recursion). Claim files share values through ``defaults:`` and ``matrix:`` instead."""

    _depth = 0

    def compose_node(self, parent, index):
        _refuse_node(self.peek_event(), self._depth)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# libyaml (PyYAML's C extension) where it is installed: parses a claim file ~6x faster than the pure-Python
# loader (a warm run parses every claim file). Its composer recurses in C, so the limits above are checked first
# on its parser's event stream (iterative, no recursion): the same anchors/aliases and nesting rules, the same errors.
_CSafeLoader = getattr(yaml, "CSafeLoader", None) if getattr(yaml, "__with_libyaml__", False) else None


def _refuse_node(event, depth: int) -> None:
    """The claim-file rules for the node ``event`` starts, ``depth`` nodes deep: no anchors or aliases, nesting
    at most MAX_NESTING (a ComposerError naming the line otherwise)."""
    if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
        raise yaml.composer.ComposerError(
            None, None, "anchors and aliases (&name, *name) are not allowed in a claim file; write the value "
            "out, or share it through defaults: or a matrix:", event.start_mark)
    if depth >= MAX_NESTING:
        raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_NESTING} levels deep",
                                          event.start_mark)


def _check_events(source: str) -> None:
    """``_ClaimFileLoader``'s rules (``_refuse_node``) on libyaml's event stream, every node at its depth."""
    depth = 0
    for event in yaml.parse(source, Loader=_CSafeLoader):
        if isinstance(event, yaml.NodeEvent):
            _refuse_node(event, depth)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _read_claim_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ClaimError(f"{path}: cannot read ({exc.strerror})") from None


def _read_yaml(path: Path, data: bytes) -> tuple[Any, yaml.Node | None]:
    """A claim file's document and its node tree (for line numbers) from its bytes ``data`` (read with
    ``_read_claim_bytes``), within the bounds above."""
    if len(data) > MAX_FILE_BYTES:
        raise ClaimError(f"{path}: larger than a claim file may be ({MAX_FILE_BYTES} bytes); split it")
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ClaimError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8") from None
    if _CSafeLoader is not None:
        try:
            _check_events(source)
            return _load(_CSafeLoader(source))
        except yaml.YAMLError:
            pass  # read again below by the pure-Python loader, whose messages are the ones users see
    try:
        return _load(_ClaimFileLoader(source))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ClaimError(f"{at}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
        raise ClaimError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _load(loader) -> tuple[Any, yaml.Node | None]:
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _lines(node: yaml.Node | None) -> dict:
    """The line (1-based) of each key of a YAML mapping node (a sequence node: of each item, by index)."""
    if isinstance(node, yaml.MappingNode):
        return {key.value: (key.start_mark.line + 1, value) for key, value in node.value
                if isinstance(key, yaml.ScalarNode)}
    if isinstance(node, yaml.SequenceNode):
        return {index: (item.start_mark.line + 1, item) for index, item in enumerate(node.value)}
    return {}


# Each claim file parsed once per process (a pytest controller reads the files for the catalogue's ids, the
# in-process check and collection): by the path as given (each claim records it) and the file's bytes, which
# are cheap to read and, unlike a modification time (as coarse as a clock tick), cannot miss a rewrite.
_PARSED_FILES: dict[str, tuple[bytes, tuple[Claim, ...]]] = {}


def load_claim_file(path: Path | str, errors: list[str] | None = None) -> list[Claim]:
    """The claims of one file. With an ``errors`` list, a malformed claim is recorded there and the
    others still load (``kdclaims claims validate`` reports every error); without, the first one raises.
    A file that loaded without error is parsed again only when its bytes change."""
    path = Path(path)
    data = _read_claim_bytes(path)
    if errors is not None:
        return _parse_claim_file(path, data, errors)
    parsed = _PARSED_FILES.get(str(path))
    if parsed is not None and parsed[0] == data:
        return list(parsed[1])
    claims = _parse_claim_file(path, data, None)
    _PARSED_FILES[str(path)] = (data, tuple(claims))
    return claims


def _parse_claim_file(path: Path, data: bytes, errors: list[str] | None) -> list[Claim]:
    document, node = _read_yaml(path, data)
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise ClaimError(f"{path}: a claim file needs a top-level 'claims:' list")
    top = _lines(node)
    unknown = set(document) - set(FILE_FIELDS)
    if unknown:
        name = sorted(unknown, key=str)[0]
        line = top.get(name, (1,))[0]
        raise ClaimError(f"{path}:{line}: unknown top-level field {short_repr(name)}"
                         f"{_suggest(str(name), ['group', 'defaults', 'claims'])}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ClaimError(f"{path}:{top['defaults'][0]}: defaults must be a mapping")
    group = text(document.get("group", path.stem), f"{path}:{top.get('group', (1,))[0]}", "group")
    entries = _lines(top["claims"][1])
    claims, seen = [], set()
    for index, raw in enumerate(document["claims"]):
        where = f"{path}:{entries[index][0]} claim #{index + 1}"  # a matrix's claims all point at its entry
        merged = {**defaults, **raw} if isinstance(raw, dict) else raw
        try:
            for entry in expand_matrix(merged, where):
                claim = parse_claim(entry, where, group=group, file=str(path))
                if claim.id in seen:
                    raise ClaimError(f"{where}: claim id {claim.id!r} is used twice")
                seen.add(claim.id)
                claims.append(claim)
        except ClaimError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return claims


def claim_files(directory: Path | str = CLAIMS_DIR) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_claims(paths=None, errors: list[str] | None = None) -> list[Claim]:
    """Every claim of the given files (default: the shipped catalogue, ``CLAIMS_DIR``); ids must be unique.
    With an ``errors`` list, every error is recorded there and the valid claims are returned; without,
    the first error raises."""
    files = claim_files() if paths is None else [q for p in paths for q in (claim_files(p) if Path(p).is_dir() else [Path(p)])]
    claims, where = [], {}
    for path in files:
        try:
            loaded = load_claim_file(path, errors)
        except ClaimError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        for claim in loaded:
            if claim.id in where:
                message = f"claim id {claim.id!r} is used twice: in {where[claim.id]} and {path}"
                if errors is None:
                    raise ClaimError(message)
                errors.append(message)
                continue
            where[claim.id] = path
            claims.append(claim)
    return claims
