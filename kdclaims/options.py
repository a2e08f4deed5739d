"""The run options, declared once, each with the surfaces that have it: the pytest plugin and the commands
``kdclaims run``, ``train`` and ``plan``. An option added here reaches every surface it names, with one help
text; ``kdclaims run`` forwards its options to pytest from this table too.

Imports no torch, pandas, scipy or matplotlib (and click only when click options are made): the command
line and pytest's start-up load it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PYTEST, RUN, TRAIN, PLAN = "pytest", "run", "train", "plan"
ALL = frozenset({PYTEST, RUN, TRAIN, PLAN})
PAIRINGS = ("none", "seed")  # --pairing: which test decides a comparison (none: Welch's, the paper's design)
PYTEST_GROUPS = {"kdclaims": "kdclaims: the paper's claims as hypothesis tests",
                 "kdclaims-backend": "kdclaims: where missing members are trained"}


@dataclass(frozen=True)
class RunOption:
    name: str  # "--cache-dir"; the parameter is cache_dir
    help: str  # says the default where it has one: pytest's --help shows no defaults
    surfaces: frozenset[str]
    type: type = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None  # None with choices: both show the choices
    # Of an int option; checked by click. Under pytest the harness checks it with a message of its own
    # (kdclaims.backends.check_concurrent_members, which covers callers of the Python API too).
    minimum: int | None = None
    pytest_group: str = "kdclaims"
    flag: bool = False  # an on/off switch taking no value (default off)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


# No choices= for --profile, --precision or --backend: their names live in registries (and --precision's
# in kdclaims.training, which imports torch); get_profile, Profile.with_precision and get_backend refuse a
# bad one in one line naming the valid ones.
OPTIONS: tuple[RunOption, ...] = (
    RunOption("--profile", "a shipped profile (paper, the default: CIFAR-100, full models, 385 seeds; smoke: "
              "synthetic data, small models; digits: scikit-learn's digits; `kdclaims profiles list`) or the path of "
              "a profile file of your own", ALL, default="paper", metavar="NAME|PATH"),
    RunOption("--seeds", "override the profile's student seeds: 5, 1-385 or 1,4,7-9", ALL, metavar="SEEDS"),
    RunOption("--precision", "override the profile's arithmetic precision: fp32, tf32 or bf16 (default: the "
              "profile's, fp32 for paper and smoke); part of every member's cache key, so bf16 members never mix "
              "with fp32 ones (nor count as cached for them)", ALL, metavar="NAME"),
    RunOption("--cache-dir", "member cache (default $KDCLAIMS_CACHE_DIR or ~/.cache/kdclaims)", ALL, metavar="DIR"),
    RunOption("--data-dir", "where the profile's dataset is (default $KDCLAIMS_DATA_DIR or <cache>/data); refused "
              "for a profile whose data kdclaims makes (smoke, digits)",
              frozenset({PYTEST, TRAIN, PLAN}), metavar="DIR"),
    RunOption("--results-dir", "where evaluations are saved (default $KDCLAIMS_RESULTS_DIR or <cache>/evaluations)",
              frozenset({PYTEST}), metavar="DIR"),
    RunOption("--device", "where members are trained (and plan measures the time per member): auto (default), "
              "cpu, cuda or cuda:N", frozenset({PYTEST, TRAIN, PLAN}), default="auto", metavar="DEVICE"),
    RunOption("--evidence", "trained (default): train/load populations (the reproduction); paper: the paper's own "
              "tables", frozenset({PYTEST, RUN}), default="trained", choices=("trained", "paper")),
    RunOption("--correction", "family-wise correction of the claims' p-values (default none, as in the paper)",
              frozenset({PYTEST}), default="none", choices=("none", "holm", "bh")),
    RunOption("--pairing", "which test decides a comparison: none (default, the paper's: Welch's unpaired t-test) or "
              "seed (the paired t-test over members that share a seed; the other is shown beside it either way); "
              "--evidence paper has no members, so there it stays unpaired and says so", frozenset({PYTEST, RUN}),
              default="none", choices=PAIRINGS),
    RunOption("--family", "what a family is for --correction (default: a claim group)", frozenset({PYTEST}),
              default="group", choices=("all", "group", "arch", "source")),
    RunOption("--backend", "local (default: in this process; parallel with -n) or ray (members as Ray tasks; "
              "needs pip install -e '.[ray]')", frozenset({PYTEST, TRAIN}), default="local", metavar="NAME",
              pytest_group="kdclaims-backend"),
    RunOption("--address", "Ray cluster to use with --backend ray (auto, host:6379 or ray://host:10001); default: "
              "$RAY_ADDRESS or a local cluster", frozenset({PYTEST, TRAIN}), metavar="ADDRESS",
              pytest_group="kdclaims-backend"),
    RunOption("--gpus-per-member", "GPU fraction each member asks Ray for (0.25: four share a GPU; default 1); "
              "members run on CPUs where the cluster has no GPU", frozenset({PYTEST, TRAIN}), type=float,
              metavar="FRACTION", pytest_group="kdclaims-backend"),
    RunOption("--concurrent-members", "members of one population trained at once on the device by the local "
              "backend (default 1); on CUDA each has a stream of its own. Changes the speed only: each member "
              "computes what it would alone (plan measures the time per member so too)", ALL, type=int, default=1,
              metavar="K", minimum=1, pytest_group="kdclaims-backend"),
    RunOption("--max-retries", "times a failed member (task error or dead worker) is resubmitted before it is "
              "reported failed (default 2)", frozenset({PYTEST, TRAIN}), type=int, metavar="N",
              pytest_group="kdclaims-backend"),
    RunOption("--sequential", "group-sequential testing (issue #19): train members in look-sized batches and stop "
              "each population once every claim using it has crossed a boundary (default off: the fixed design)",
              frozenset({PYTEST, RUN, PLAN}), flag=True),
    RunOption("--spending", "error-spending function of --sequential: obf (Lan-DeMets O'Brien-Fleming-type) or "
              "pocock (Lan-DeMets Pocock-type); default the profile's (obf)", frozenset({PYTEST, RUN, PLAN}),
              choices=("obf", "pocock")),
    RunOption("--looks", "members per population at each look of --sequential, ending at the seeds' count, e.g. "
              "25,50,100,200,385 (default the profile's)", frozenset({PYTEST, RUN, PLAN}), metavar="N,N,..."),
    RunOption("--measure", "time a member by training one briefly on --device where the cache has no times "
              "(default off: plan trains nothing and answers in seconds)", frozenset({PLAN}), flag=True),
    RunOption("--device-tflops", "sustained accelerator throughput for plan's FLOP-based estimate, TFLOP/s "
              "(default 296.7: an H100/H200's 989 TFLOP/s bf16 dense peak at 0.3 utilisation)", frozenset({PLAN}),
              type=float, metavar="TFLOPS"),
)


def options_for(surface: str) -> tuple[RunOption, ...]:
    return tuple(option for option in OPTIONS if surface in option.surfaces)


def add_pytest_options(parser) -> None:
    """The table's pytest options, in its groups (called from the plugin's ``pytest_addoption``)."""
    for option in options_for(PYTEST):
        group = parser.getgroup(option.pytest_group, PYTEST_GROUPS[option.pytest_group])
        if option.flag:
            group.addoption(option.name, action="store_true", default=False, help=option.help)
            continue
        group.addoption(option.name, type=option.type, default=option.default, choices=option.choices,
                        metavar=option.metavar, help=option.help)


def click_options(command: str) -> Callable:
    """A decorator giving a click command the table's options for ``command``, in the table's order."""
    import click

    def decorate(function):
        for option in reversed(options_for(command)):
            if option.flag:
                function = click.option(option.name, is_flag=True, default=False, help=option.help)(function)
                continue
            kind = click.Choice(option.choices) if option.choices else option.type if option.minimum is None \
                else click.IntRange(min=option.minimum)
            function = click.option(option.name, type=kind, default=option.default, metavar=option.metavar,
                                    help=option.help)(function)
        return function

    return decorate


def forwarded_to_pytest(values: Mapping[str, Any]) -> list[str]:
    """``kdclaims run``'s table options as pytest arguments (each ``run`` option is a pytest one too)."""
    args: list[str] = []
    for option in options_for(RUN):
        if option.flag:
            args += [option.name] if values.get(option.dest) else []
        elif values.get(option.dest) is not None:
            args += [option.name, str(values[option.dest])]
    return args


def chosen_profile(name: str, seeds: str | None = None, precision: str | None = None, looks: str | None = None,
                   spending: str | None = None):
    """The profile that --profile, --seeds, --precision, --looks and --spending choose (a bad one: a one-line
    ConfigError)."""
    from kdclaims.profiles import get_profile, parse_seeds

    profile = get_profile(name)
    if seeds:
        profile = profile.with_seeds(parse_seeds(seeds))
    if precision:
        profile = profile.with_precision(precision)
    if looks:
        profile = profile.with_looks(looks)
    if spending:
        profile = profile.with_spending(spending)
    return profile
