"""The pytest plugin: every claim in a ``claims/`` YAML file is a test item.

Registered through the ``pytest11`` entry point, so ``pytest claims/`` finds it once kdclaims is
installed. Following pytest's non-Python test example, a ``ClaimFile`` collects one ``ClaimItem``
per claim; its ``runtest`` evaluates the claim and ``repr_failure`` shows the numbers rather than a
traceback. Claims of one architecture share populations (every population of an architecture distils
from, or is compared with populations distilled from, its one teacher), so under ``-n N`` each
architecture's claims go to one worker: the plugin adds ``--dist loadgroup`` when ``-n`` is given
without ``--dist``, and schedules with ``ClaimGroupScheduling``, which reads a claim's group from its
claim file rather than from the ``@group`` node-id suffix pytest-xdist 3.8 can no longer add under
pytest 9.2 (pytest-xdist issue #1386). Across workers the cache's per-member locks still make sure no
member is trained twice.

Under ``--sequential`` (issue #19) the first claim of a group to run drives the group's ``SequentialRun``
(``kdclaims.sequential_run``) over every claim of the group collected here (``drive_group``): look by look it
trains the populations still needed up to the look's members and lets the run decide what it can; every claim
item then reports the run's result for its claim, as it reports a fixed-design result.

Every result travels to the controlling process in ``user_properties`` (which pytest-xdist
forwards), and the controller saves the whole evaluation as one JSON file when the session ends.
Training progress travels apart, as small records in a run-scoped directory that a controller thread
shows as one live line (``kdclaims/progress.py``), with or without ``-n``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdclaims.claims import CLAIMS_DIR, Claim, load_claim_file
from kdclaims.errors import ClaimError, ConfigError, KdclaimsError
from kdclaims.options import add_pytest_options, chosen_profile

RESULT_PROPERTY = "kdclaims_result"
POPULATION_PROPERTY = "kdclaims_populations"
DATASET_PROPERTY = "kdclaims_dataset"
STATE = pytest.StashKey["HarnessState"]()


def pytest_addoption(parser):
    add_pytest_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """``-n N`` without ``--dist``: add ``--dist loadgroup`` to the arguments.

    It must happen while the arguments are parsed: pytest-xdist turns ``-n`` into ``--dist load`` in its
    ``pytest_cmdline_main``, before any ``pytest_configure`` (where this used to be set, too late), and
    each worker re-parses the original arguments. This hook runs on the controller and on every worker,
    on the same arguments, so all of them see ``loadgroup``.
    """
    known = early_config.known_args_namespace
    if getattr(known, "numprocesses", None) and getattr(known, "dist", "no") == "no" \
            and not any(arg == "--dist" or arg.startswith("--dist=") for arg in args):
        args[:] = [*args, "--dist", "loadgroup"]


class HarnessState:
    """Per-process state: the profile, a lazily built workbench, and (on the controller) the results."""

    def __init__(self, config):
        from kdclaims.paths import default_cache_dir, default_results_dir

        opt = config.getoption
        self.config = config
        self.profile = chosen_profile(opt("--profile"), opt("--seeds"), opt("--precision"),
                                      opt("--looks"), opt("--spending"))
        self.cache_dir = Path(opt("--cache-dir") or default_cache_dir()).expanduser()
        self.data_dir = opt("--data-dir")
        from kdclaims.datasets import check_data_dir

        check_data_dir(self.profile.dataset, self.data_dir, self.profile.name)  # now, not at the first claim
        self.results_dir = Path(opt("--results-dir") or default_results_dir(self.cache_dir)).expanduser()
        self.device = opt("--device")
        self.evidence_name = opt("--evidence")
        if self.evidence_name == "trained":
            check_seeds_form_populations(self.profile.seeds)  # before any training, not after a teacher
        # The run-wide progress records' directory: named by the controller (a run id under the results
        # directory) and handed to each xdist worker in its workerinput; None where nothing trains.
        workerinput = getattr(config, "workerinput", None)
        self.progress_dir: Path | None = None
        if workerinput is not None:
            self.progress_dir = Path(workerinput["kdclaims_progress_dir"]) \
                if workerinput.get("kdclaims_progress_dir") else None
        elif self.evidence_name == "trained" and not config.getoption("collectonly", False):
            run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            self.progress_dir = self.results_dir / "progress" / run_id
        self.worker_id = workerinput["workerid"] if workerinput is not None else "main"
        self.progress_watcher = None
        self.correction = {"method": opt("--correction"), "family": opt("--family")}
        self.sequential = bool(opt("--sequential"))
        if self.sequential:
            check_sequential(self.evidence_name, self.correction["method"])
        # --sequential: each population group's outcome (kdclaims.sequential_run drives it; see drive_group), the
        # member limit each population was last evaluated at, and the members trained for it in this run
        self.sequential_groups: dict[str, SequentialGroup] = {}
        self.member_limits: dict = {}  # PopulationSpec -> members at its last look
        self.members_trained: dict[str, int] = {}  # population name -> members trained across its looks
        self.pairing = opt("--pairing")
        self.concurrent_members = opt("--concurrent-members")
        self.backend_name = opt("--backend")
        self.backend_options = {"address": opt("--address"), "gpus_per_member": opt("--gpus-per-member"),
                                "max_retries": opt("--max-retries")}
        if self.backend_name != "local" and getattr(config.option, "numprocesses", None) \
                and _is_controller(config) and not self.backend_options["address"]:
            raise KdclaimsError(f"--backend {self.backend_name} with -n starts a cluster per xdist worker: drop -n "
                                "(the backend trains members in parallel) or give --address of a running cluster")
        from kdclaims.backends import check_concurrent_members, get_backend

        self.backend = get_backend(self.backend_name, **self.backend_options)  # fails now if Ray is missing
        check_concurrent_members(self.backend, self.concurrent_members)  # now, not at the first claim
        self.results: dict[str, dict] = {}
        self.selected: set[str] = set()  # claim ids left to run after -k, -m, --lf (on the controller)
        self.populations: dict[str, dict] = {}
        self.started = time.time()
        self._workbench = None
        self._evidence = None
        self._sent_populations: set[str] = set()
        self._sent_dataset = False
        self.dataset: dict | None = None  # on the controller: the summary a worker reported
        self.in_process = False  # -n was given, but every member is cached: run_in_process_when_all_cached

    @property
    def workbench(self):
        if self._workbench is None:
            from kdclaims.population import Workbench

            # The run-wide line (kdclaims/progress.py) replaces the per-population bar.
            self._workbench = Workbench(self.profile, self.cache_dir, self.data_dir, self.device,
                                        progress=False if self.progress_dir else _is_controller(self.config),
                                        backend=self.backend, concurrent_members=self.concurrent_members)
            self._workbench.progress_sink = self.progress_sink()
        return self._workbench

    def progress_sink(self):
        from kdclaims.progress import ProgressChannel

        return ProgressChannel(self.progress_dir, self.worker_id) if self.progress_dir else None

    @property
    def evidence(self):
        if self._evidence is None:
            from kdclaims.evaluate import PaperEvidence, TrainedEvidence

            self._evidence = (PaperEvidence(self.pairing) if self.evidence_name == "paper"
                              else TrainedEvidence(self.workbench, self.pairing))
        return self._evidence

    def evaluate(self, claim: Claim, group_claims: list[Claim] | None = None):
        """The claim's result: evaluated now (the fixed design), or under --sequential its group's sequential
        run's (driven over ``group_claims`` by the first of them to run here)."""
        from kdclaims.evaluate import evaluate_claim

        def decide():
            if self.sequential:
                return self.sequential_result(claim, group_claims or [claim])
            return evaluate_claim(claim, self.evidence)

        capture = self.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # let the training progress bar reach the terminal
            with capture.global_and_fixture_disabled():
                return decide()
        return decide()

    def sequential_result(self, claim: Claim, group_claims: list[Claim]):
        group = population_group(claim)
        if group not in self.sequential_groups:
            self.sequential_groups[group] = drive_group(self, group, group_claims)
        outcome = self.sequential_groups[group]
        if outcome.error is not None:
            raise outcome.error
        return outcome.results[claim.id]

    def population_records(self, claim: Claim) -> list[dict]:
        """Provenance of the populations a trained claim used (cache keys, seeds, training time)."""
        if self.evidence_name != "trained":
            return []
        from kdclaims.metrics import METRICS

        wb = self.workbench
        records = []
        for spec in claim.populations():
            if spec.name in self._sent_populations:  # each worker reports a population once
                continue
            self._sent_populations.add(spec.name)
            limit = self.member_limits.get(spec)  # --sequential: the members of its last look
            pop = wb.population(spec, limit)
            records.append({
                "name": spec.name, **spec.as_dict(), "label": spec.label, "n": pop.n,
                "seeds": [int(s) for s in pop.seeds], "keys": list(pop.keys),
                "teacher_key": wb.teacher(spec.arch).key,
                # the teacher's own test accuracy: what a profile's recipe is fixed by (docs/own-data.md)
                # (recorded with the member, and checked against its logits when the cache loads it)
                "teacher_test_accuracy": float(wb.teacher(spec.arch).meta["test_accuracy"]),
                # members trained for it by this run (under --sequential: across its looks)
                "trained_now": self.members_trained.get(spec.name, pop.trained_now) if self.sequential
                else pop.trained_now,
                **({"members_limit": limit, "members_planned": len(self.profile.seeds)} if self.sequential else {}),
                "wall_time_s": pop.wall_time_s,
                "devices": sorted({m.get("device", "?") for m in pop.members_meta}),
                "failed_seeds": [int(x) for x in getattr(pop, "failed_seeds", ()) or ()],
                # every metric of every member: the report rebuilds the paper's tables and figures from these
                "metrics": {m: [float(x) for x in wb.member_values(spec, m, limit)] for m in METRICS},
            })
        return records


MIN_MEMBERS = 2  # the fewest members a population's z-test (a standard deviation) can use


def check_seeds_form_populations(seeds) -> None:
    """Refuse, before anything is trained, seeds that cannot form a population a claim can test."""
    if len(seeds) < MIN_MEMBERS:
        raise ConfigError(f"--seeds gives {len(seeds)} seed(s): a claim's test needs populations of at least "
                          f"{MIN_MEMBERS} members; give --seeds {MIN_MEMBERS} or more")


def check_sequential(evidence: str, correction: str) -> None:
    """Refuse, in one line before anything runs, what --sequential cannot do."""
    from kdclaims.sequential_run import check_evidence

    check_evidence(evidence)  # --evidence paper has no members to look at
    if correction != "none":
        raise ConfigError(f"--sequential with --correction {correction}: a group-sequential design with a "
                          "family-wise correction is a different design (each claim's boundaries would have to "
                          "spend the corrected alpha), which kdclaims does not implement; drop one of them")


@dataclass
class SequentialGroup:
    """A population group's sequential run, once driven: each claim's result, or the error that stopped it."""

    results: dict[str, "ClaimResult"] = field(default_factory=dict)  # claim id -> its result (kdclaims.kinds)
    error: KdclaimsError | None = None


def drive_group(state: HarnessState, group: str, claims: list[Claim]) -> SequentialGroup:
    """Drive one group's ``SequentialRun`` look by look: train (or load) only the populations some undecided
    claim still needs, each up to the look's members (its first seeds, in order; a finished population is
    never trained further nor waited for), and let the run evaluate its undecided claims on those members
    (later members already cached are used too: they cost nothing). The look that reaches the profile's
    seeds is final. The rules (boundaries, stopping, verdicts) are the run's (``kdclaims.sequential_run``)."""
    from kdclaims.evaluate import TrainedEvidence
    from kdclaims.sequential_run import Design, SequentialRun

    wb = state.workbench
    design = Design.from_profile(state.profile)
    run = SequentialRun(list(claims), design)
    sink = state.progress_sink()
    n_seeds = len(state.profile.seeds)
    try:
        while not run.done:
            look, members = run.look_index, run.target_members()
            grow = run.populations_to_grow()
            final = members >= n_seeds
            if sink is not None:
                sink({"event": "look", "group": group, "look": look + 1, "looks": len(design.looks),
                      "members": members, "populations": [spec.name for spec in grow]})
            for spec in grow:  # the members the evidence below reads, trained now where missing
                population = wb.population(spec, members)
                state.member_limits[spec] = members
                state.members_trained[spec.name] = state.members_trained.get(spec.name, 0) + population.trained_now
            run.observe(TrainedEvidence(wb, state.pairing, members=run.evidence_members()), final=final)
            if not run.done and (final or run.look_index == look):
                raise KdclaimsError(f"the sequential run of {group} did not stop at its final look {look + 1}"
                                    if final else f"the sequential run of {group} did not move past look {look + 1}")
    except KdclaimsError as exc:
        return SequentialGroup(error=exc)
    return SequentialGroup(results=dict(run.results))


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "resnet18: claims about ResNet-18")
    config.addinivalue_line("markers", "vgg16_bn: claims about VGG-16-BN")
    config.addinivalue_line("markers", "vit: claims about the ViT")
    config.addinivalue_line("markers", "claim: a kdclaims claim item")
    try:
        config.stash[STATE] = HarnessState(config)
    except KdclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _is_controller(config):
        config.pluginmanager.register(ResultCollector(config.stash[STATE]), "kdclaims-results")
        run_in_process_when_all_cached(config, config.stash[STATE])


IN_PROCESS_LINE = "kdclaims: every member is cached: evaluating in this process; -n would only add start-up"


def run_in_process_when_all_cached(config, state: HarnessState) -> None:
    """Under ``-n``, when every member the named claim files could need is cached: turn xdist off for this run.

    A warm run only reads the cache and computes, so xdist's workers (each a fresh interpreter importing and
    collecting everything) would add their start-up and save nothing. This runs in the controller's
    ``pytest_configure`` (tryfirst), before xdist's own (trylast) makes its ``DSession`` from ``dist`` and
    ``tx``, which ``pytest_cmdline_main`` has already derived from ``-n``. It checks a superset of what the run
    needs -- every population (and its architecture's teacher) of every claim in the files on the command line,
    whatever ``-k``/``-m`` later deselect -- so a member missing anywhere keeps xdist: anything that may train
    runs as asked; so does a session that names anything but claim files (Python tests keep their workers). The evaluation is the one a worker computes, from the same cache. Not under ``--sequential``
    (its looks decide how many members a population needs), ``--dist each`` (every worker runs every claim),
    another backend than ``local``, paper evidence or ``--collect-only``.
    """
    option = config.option
    if not getattr(option, "numprocesses", None) or not getattr(option, "tx", None) \
            or getattr(option, "dist", "no") in ("no", "each"):
        return
    if state.evidence_name != "trained" or state.backend_name != "local" or state.sequential \
            or config.getoption("collectonly", False):
        return
    claims = _requested_claims(config)
    if not claims or not _names_only_claims(config):
        return
    try:
        if not every_member_cached(state.workbench, claims):
            return
    except KdclaimsError:  # no data, an unreadable cache, ...: the run as asked reports it
        return
    option.numprocesses, option.dist, option.tx = 0, "no", []  # what xdist itself sets for -n 0
    state.in_process = True


def _names_only_claims(config) -> bool:
    """Whether the session's arguments name claim files only (files, or folders with no Python module but a
    conftest): other tests keep the parallelism ``-n`` asked for, whatever the cache holds."""
    for path in _session_paths(config):
        if path.is_file():
            if not _is_claim_file(path):
                return False
        elif not path.is_dir() or any(p.name not in ("conftest.py", "__init__.py") for p in path.rglob("*.py")):
            return False
    return True


def every_member_cached(workbench, claims: list[Claim]) -> bool:
    """Whether the cache holds every member of every population of ``claims`` under the workbench's profile
    (its seeds, precision and data), and each population's teacher (every population record names it)."""
    from kdclaims.setups import TEACHER_SEED
    from kdclaims.spec import teacher_spec

    specs = dict.fromkeys(spec for claim in claims for spec in claim.populations())
    teachers = [teacher_spec(arch) for arch in dict.fromkeys(spec.arch for spec in specs)]
    return all(workbench.cache.has(workbench.member_key(teacher, TEACHER_SEED)) for teacher in teachers) \
        and not any(workbench.missing_seeds(spec) for spec in specs)


def _requests_claims(config) -> bool:
    """Whether this session will run claims (so the data check applies), judged from its arguments."""
    for path in _session_paths(config):
        if path.is_file() and _is_claim_file(path):
            return True
        if path.is_dir() and any(_is_claim_file(p) for p in path.rglob("*.y*ml")):
            return True
    return False


def _requested_claim_ids(config) -> list[str]:
    """Every claim id in the claim files this session names (the catalogue a subset is taken from)."""
    return sorted({claim.id for claim in _requested_claims(config)})


def _requested_claims(config) -> list[Claim]:
    """Every claim in the claim files this session names; a file that does not load is left out here (its
    collection error says why)."""
    claims: list[Claim] = []
    for path in _session_paths(config):
        files = [path] if path.is_file() else sorted(path.rglob("*.y*ml")) if path.is_dir() else []
        for file in files:
            if _is_claim_file(file):
                try:
                    claims += load_claim_file(file)
                except ClaimError:
                    pass
    return claims


def _session_paths(config) -> list[Path]:
    """The files and folders the session's arguments name (a node id's ``::`` part dropped)."""
    return [Path(config.invocation_params.dir, arg.split("::")[0]) for arg in config.args]


def _is_claim_file(path: Path) -> bool:
    """A YAML file under a directory named ``claims``, or in the shipped catalogue (``pytest --pyargs
    kdclaims.catalogue`` reaches it by its installed path, which has no ``claims`` in it)."""
    if path.suffix not in (".yaml", ".yml"):
        return False
    return "claims" in path.parent.parts or path.resolve().parent == CLAIMS_DIR


def pytest_sessionstart(session):
    config = session.config
    state = config.stash[STATE]
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if state.in_process and reporter is not None:
        reporter.write_line(IN_PROCESS_LINE)
    collect_only = config.getoption("collectonly", False)
    if _is_controller(config) and state.evidence_name == "trained" and not collect_only and _requests_claims(config):
        try:
            state.workbench.check_data()  # stop before any training when the data is not there
        except KdclaimsError as exc:
            # a UsageError is printed once, as "ERROR: ..." (pytest.exit would print it twice, the second
            # time as "!!! _pytest.outcomes.Exit: ... !!!")
            raise pytest.UsageError(f"kdclaims: {exc}") from None
        if state.progress_dir is not None:  # before xdist starts its workers (its sessionstart is trylast)
            from kdclaims.progress import ProgressWatcher

            state.progress_watcher = ProgressWatcher(state.progress_dir).start()
    if _is_controller(config) and state.progress_watcher is None:
        state.progress_dir = None  # nothing will show the records: have none written


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist, on the controller: tell each worker where its progress records go."""
    state = node.config.stash.get(STATE, None)
    if state is not None and state.progress_dir is not None:
        node.workerinput["kdclaims_progress_dir"] = str(state.progress_dir)


def pytest_collection_modifyitems(session, config, items):
    """Tell the progress view which populations (and teachers) the collected claims need."""
    state = config.stash.get(STATE, None)
    sink = state.progress_sink() if state is not None else None
    if sink is None:
        return
    from kdclaims.setups import get_setup

    specs = {spec.name: spec for item in items if isinstance(item, ClaimItem) for spec in item.claim.populations()}
    teachers = sorted({spec.arch for spec in specs.values() if get_setup(spec.setup).uses_teacher})
    sink({"event": "plan", "populations": sorted(specs), "teachers": teachers, "seeds": len(state.profile.seeds)})


def pytest_collect_file(file_path: Path, parent):
    if _is_claim_file(file_path):
        return ClaimFile.from_parent(parent, path=file_path)
    return None


class ClaimFile(pytest.File):
    def collect(self):
        try:
            claims = load_claim_file(self.path)
        except ClaimError as exc:
            raise self.CollectError(f"malformed claim file: {exc}") from None
        text = self.path.read_text().splitlines()
        for claim in claims:
            item = ClaimItem.from_parent(self, name=claim.id, claim=claim, line=_line_of(text, claim.id))
            for marker in claim.markers:
                self.config.addinivalue_line("markers", f"{marker}: kdclaims claims marker")
                item.add_marker(marker)
            item.add_marker("claim")
            item.add_marker(pytest.mark.xdist_group(population_group(claim)))
            yield item


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup``: schedule claims by their group (``ClaimGroupScheduling``)."""
    if config.getvalue("dist") == "loadgroup":
        return claim_group_scheduling(config, log)
    return None


def claim_group_scheduling(config, log):
    """pytest-xdist's ``LoadGroupScheduling``, with a claim's scope its ``population_group`` read from its
    claim file (the controller collects nothing, so it looks the claim up by node id); other tests keep
    xdist's own grouping (their ``@group`` suffix where pytest still carries it, else one scope each)."""
    from xdist.scheduler import LoadGroupScheduling

    class ClaimGroupScheduling(LoadGroupScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.groups_by_file: dict[str, dict[str, str]] = {}

        def _split_scope(self, nodeid: str) -> str:
            group = claim_group_of(config.rootpath, nodeid, self.groups_by_file)
            return f"kdclaims-group:{group}" if group is not None else super()._split_scope(nodeid)

    return ClaimGroupScheduling(config, log)


def claim_group_of(rootpath: Path, nodeid: str, groups_by_file: dict[str, dict[str, str]]) -> str | None:
    """The ``population_group`` of the claim whose node id is ``nodeid``; None for anything else."""
    file_part, sep, rest = nodeid.partition("::")
    if not sep:
        return None
    if file_part not in groups_by_file:
        path = Path(rootpath, file_part)
        groups: dict[str, str] = {}
        if _is_claim_file(path) and path.is_file():
            try:
                groups = {claim.id: population_group(claim) for claim in load_claim_file(path)}
            except ClaimError:
                groups = {}  # a malformed file collects no claims anyway
        groups_by_file[file_part] = groups
    return groups_by_file[file_part].get(rest.split("@")[0])


def population_group(claim: Claim) -> str:
    """The xdist group of a claim: the claims that share populations, kept on one worker. Every population of
    an architecture needs that architecture's teacher (or sits in claims beside one that does), so the
    groups are the architectures."""
    return claim.arch


def _line_of(lines: list[str], claim_id: str) -> int | None:
    for number, line in enumerate(lines):
        if line.strip().lstrip("- ").replace('"', "").replace("'", "") == f"id: {claim_id}":
            return number
    return None


class ClaimNotReproduced(Exception):
    def __init__(self, result: dict):
        super().__init__(result["id"])
        self.result = result


class ClaimNotEvaluated(Exception):
    pass


class ClaimItem(pytest.Item):
    def __init__(self, *, claim: Claim, line: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.claim = claim
        self.line = line

    def runtest(self):
        from kdclaims.results import jsonable

        state = self.config.stash[STATE]
        try:
            result = state.evaluate(self.claim, self.group_claims() if state.sequential else None).to_dict()
            self.user_properties.append((POPULATION_PROPERTY, json.dumps(jsonable(state.population_records(self.claim)))))
            if state.evidence_name == "trained" and not state._sent_dataset:  # once per worker
                state._sent_dataset = True
                self.user_properties.append((DATASET_PROPERTY, json.dumps(jsonable(state.workbench.dataset_summary.as_dict()))))
        except KdclaimsError as exc:
            result = {**self.claim.as_dict(), "evidence": state.evidence_name, "verdict": "error",
                      "reason": f"not evaluated: {exc}", "observed_outcome": None, "details": {}, "error": str(exc)}
            self.user_properties.append((RESULT_PROPERTY, json.dumps(jsonable(result))))
            raise ClaimNotEvaluated(str(exc)) from exc
        self.user_properties.append((RESULT_PROPERTY, json.dumps(jsonable(result))))
        # A smoke run (synthetic data) records every verdict but is not a reproduction: it passes once
        # the claim was evaluated. In a reproduction, the pytest outcome is the verdict.
        if state.profile.is_reproduction or state.evidence_name == "paper":
            if result["verdict"] != "reproduced":
                raise ClaimNotReproduced(result)

    def group_claims(self) -> list[Claim]:
        """The claims collected (and selected) in this session that share this claim's populations."""
        group = population_group(self.claim)
        return [item.claim for item in self.session.items
                if isinstance(item, ClaimItem) and population_group(item.claim) == group]

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ClaimNotReproduced):
            from kdclaims.render.terminal import describe_result

            return describe_result(excinfo.value.result)
        if isinstance(excinfo.value, ClaimNotEvaluated):
            return f"claim {self.claim.id} could not be evaluated: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.line, f"claim {self.claim.id}: {self.claim.sentence}"


class ResultCollector:
    """Registered on the controller (or a run without xdist): gathers every claim's result as it arrives,
    and which claims were selected (after -k, -m, --lf deselected theirs)."""

    def __init__(self, state: HarnessState):
        self.state = state

    @pytest.hookimpl(trylast=True)  # after the deselecting plugins (-k, -m, --lf) have done their work
    def pytest_collection_modifyitems(self, items):
        self.state.selected |= {item.claim.id for item in items if isinstance(item, ClaimItem)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        """Under xdist the workers collect: each reports the node ids it kept."""
        self.state.selected |= {nodeid.rsplit("::", 1)[-1] for nodeid in ids
                                if "::" in nodeid and _is_claim_file(Path(nodeid.split("::")[0]))}

    def pytest_runtest_logreport(self, report):
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                result = json.loads(value)
                self.state.results[result["id"]] = result
            elif name == POPULATION_PROPERTY:
                for record in json.loads(value):
                    self.state.populations[record["name"]] = record
            elif name == DATASET_PROPERTY:
                self.state.dataset = json.loads(value)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not _is_controller(config):
        return
    state = config.stash.get(STATE, None)
    if state is not None and state.progress_watcher is not None:
        state.progress_watcher.stop()
        state.progress_watcher = None
    if state is None or not state.results:
        return
    from kdclaims.results import save_evaluation

    payload = build_payload(state, int(exitstatus))
    path = save_evaluation(payload, state.results_dir)
    changed = [r for r in payload["results"] if r.get("correction") and r["verdict"] != state.results[r["id"]]["verdict"]]
    if changed and state.profile.is_reproduction and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a verdict the correction overturned is a failure too
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        counts = payload["summary"]["verdicts"]
        reporter.write_sep("-", "kdclaims")
        from kdclaims.render.format import verdict_words

        selection = payload["selection"]
        reporter.write_line(f"profile {state.profile.name} ({state.profile.kind}, {payload['profile']['n_seeds']} seeds), evidence "
                            f"{state.evidence_name}: {len(payload['results'])} of {len(selection['catalogue'])} claims "
                            "evaluated: " + ", ".join(f"{v} {verdict_words(k)}" for k, v in counts.items()))
        if not state.profile.is_reproduction and state.evidence_name == "trained":
            reporter.write_line(f"profile {state.profile.name} is a machinery check ({state.profile.dataset.kind} "
                                "data): verdicts are recorded, not a reproduction")
        if state.sequential:
            from kdclaims.render.format import sequential_members_text

            reporter.write_line(f"sequential design (looks {','.join(map(str, state.profile.sequential_looks))}, "
                                f"{state.profile.spending} spending): {sequential_members_text(payload['populations'])}")
        if state.correction["method"] != "none":
            reporter.write_line(f"{state.correction['method']} correction over each {state.correction['family']}: "
                                f"{len(changed)} verdict(s) changed" + "".join(f"\n  {r['id']}: {r['reason']}" for r in changed))
        reporter.write_line(f"evaluation saved to {path}; write the report with `kdclaims report --format markdown` "
                            f"(the latest result of each claim across runs), or this run alone with "
                            f"`kdclaims report --run {path.stem}`")


def build_payload(state: HarnessState, exitstatus: int) -> dict:
    import platform
    import sys
    from importlib.metadata import version

    import kdclaims
    from kdclaims.results import EVALUATION_SCHEMA_VERSION, git_revision

    from kdclaims.evaluate import apply_correction, corrected_verdicts

    results = apply_correction([state.results[k] for k in sorted(state.results)], **state.correction)
    verdicts: dict[str, int] = {}
    for r in results:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    dataset = state.dataset  # reported by whichever process (worker or this one) loaded it
    catalogue = sorted(set(_requested_claim_ids(state.config)) | state.selected | set(state.results))
    evaluated = {r["id"] for r in results}
    devices = sorted({d for p in state.populations.values() for d in p.get("devices") or []})
    # Torch is asked only where this process loaded it (it trained): a warm run never imports it, and the
    # devices the members were trained on are in "device" either way.
    torch = sys.modules.get("torch")
    return {
        "schema_version": EVALUATION_SCHEMA_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "evidence": state.evidence_name,
        "profile": state.profile.as_dict(),
        "dataset": dataset,
        "cache_dir": str(state.cache_dir),
        "provenance": {
            "git": git_revision(), "kdclaims": kdclaims.__version__, "torch": version("torch"),
            # the device the members were trained on ("auto" is what was asked, not what ran)
            "python": platform.python_version(), "device": ", ".join(devices) or _resolved_device(state.device),
            "device_requested": state.device,
            "cuda": torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None,
            "backend": state.backend_name, "concurrent_members": state.concurrent_members,
            "host": platform.node(), "duration_s": time.time() - state.started, "pytest_exitstatus": exitstatus,
        },
        "summary": {"claims": len(results), "verdicts": verdicts},
        # which claims this run covers: a subset run (-k, -m, -x, --lf) is not the whole catalogue
        "selection": {"catalogue": catalogue, "selected": sorted(state.selected | evaluated),
                      "not_selected": sorted(set(catalogue) - state.selected - evaluated),
                      "not_evaluated": sorted(set(catalogue) - evaluated)},
        "correction": state.correction,
        "corrected_verdicts": corrected_verdicts(results),  # the verdicts the correction changed
        "pairing": state.pairing,
        # --sequential: the design every claim was monitored under (its rules in words); each claim's looks,
        # statistics and stopping reason are in its details["sequential"], each population's members trained
        # and used in its record
        "sequential": state.sequential,
        "sequential_design": sequential_design(state.profile) if state.sequential else None,
        "populations": [state.populations[k] for k in sorted(state.populations)],
        "results": results,
    }


def sequential_design(profile) -> dict:
    from kdclaims.sequential_run import Design

    return Design.from_profile(profile).as_dict()


def _resolved_device(requested: str | None) -> str:
    """The device a run without trained members would have used (paper evidence trains nothing)."""
    if requested not in (None, "auto"):
        return str(requested)
    from kdclaims.population import resolve_device

    return str(resolve_device(requested))
