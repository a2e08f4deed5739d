"""A warm run (every member cached) of this tree against an older one, side by side on one machine.

Issue #15 asks for ``pytest claims/ -n 2 --profile smoke`` with every member cached to be at least 5x
faster than before the import work (commit b4e2311). A cache cannot be shared between the two code
versions (member keys and metadata changed between them), so each tree first warms a cache of its own
(an untimed run that trains what is missing: the first time, a whole cold smoke run), then the warm runs
alternate old, new, old, new ... and the script prints each wall time, the medians and their ratio.

    git worktree add /tmp/kdclaims-old b4e2311        # once (the script does this when --old is absent)
    python benchmarks/warm_run.py --old /tmp/kdclaims-old --repeats 3
    python benchmarks/warm_run.py --claims claims/vit_table2.yaml --seeds 2   # a quick check of the script
    python benchmarks/warm_run.py --import-time --repeats 5   # `python -X importtime -c "import kdclaims.plugin"`

Each run is a fresh ``python -m pytest`` with ``PYTHONPATH`` set to its tree, so each imports its own
``kdclaims`` (the entry-point plugin resolves to it); ``--cache-root`` keeps the warmed caches between
invocations (default: a temporary directory, removed at the end). The untimed run before the timed ones
also leaves each tree's bytecode in its ``__pycache__``, as an installed package has it: the runs drop
``PYTHONDONTWRITEBYTECODE`` from the environment unless ``--no-bytecode`` is given (then every run compiles
every kdclaims module, and pytest's assertion rewriting of them, from source).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BEFORE = "b4e2311"


def pytest_command(claims: str, workers: str, profile: str, seeds: str | None, cache: Path,
                   python: str = sys.executable) -> list[str]:
    command = [python, "-m", "pytest", claims, "--profile", profile, "--cache-dir", str(cache),
               "--results-dir", str(cache / "evaluations"), "-q", "-p", "no:cacheprovider"]
    if workers != "0":
        command += ["-n", workers]
    if seeds:
        command += ["--seeds", seeds]
    return command


def run(tree: Path, command: list[str], bytecode: bool = True) -> float:
    """Wall seconds of ``command`` run in ``tree`` with that tree's kdclaims first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a claim not reproduced is still a finished run
        sys.exit(f"{tree}: pytest exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if IN_PROCESS_WORDS in done.stdout:  # the plugin turned -n off: every member was cached
        print(f"{tree}: ran in process", flush=True)
    return elapsed


IN_PROCESS_WORDS = "evaluating in this process"  # kdclaims.plugin.IN_PROCESS_LINE (not imported: either tree)


def import_time(tree: Path, bytecode: bool = True) -> tuple[float, dict[str, float]]:
    """Seconds ``import kdclaims.plugin`` takes in a fresh interpreter (``-X importtime``'s cumulative figure),
    and the cumulative seconds of the heavy packages it pulled in (0 where it did not import them)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import kdclaims.plugin"], cwd=tree, env=env,
                          capture_output=True, text=True, check=True)
    cumulative: dict[str, float] = {}
    for line in done.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            cumulative[parts[2].strip()] = int(parts[1]) / 1e6
    heavy = {name: cumulative.get(name, 0.0) for name in HEAVY}
    return cumulative["kdclaims.plugin"], heavy


HEAVY = ("pytest", "numpy", "torch", "scipy.special", "scipy.stats", "pandas", "hypothesis", "matplotlib")


def compare_import_times(trees: dict[str, Path], repeats: int, bytecode: bool) -> None:
    """Alternate the trees' ``import kdclaims.plugin`` ``repeats`` times (after one untimed import each, which
    leaves the bytecode); print each tree's medians."""
    runs: dict[str, list[tuple[float, dict]]] = {side: [] for side in trees}
    for tree in trees.values():
        import_time(tree, bytecode)
    for _ in range(repeats):
        for side, tree in trees.items():
            runs[side].append(import_time(tree, bytecode))
    print(f"python -X importtime -c 'import kdclaims.plugin', median of {repeats} (seconds, cumulative):")
    print(f"| tree | kdclaims.plugin | {' | '.join(HEAVY)} |")
    print(f"|---|---|{'---|' * len(HEAVY)}")
    for side, tree in trees.items():
        total = statistics.median(t for t, _ in runs[side])
        parts = [statistics.median(h[name] for _, h in runs[side]) for name in HEAVY]
        print(f"| {side} ({tree}) | {total:.2f} | {' | '.join(f'{p:.2f}' if p else '-' for p in parts)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, default=Path("/tmp/kdclaims-old"),
                        help=f"the older tree (default /tmp/kdclaims-old, added as a git worktree of {BEFORE})")
    parser.add_argument("--new", type=Path, default=HERE, help="this tree (default: the one holding this script)")
    parser.add_argument("--claims", default="claims/", help="claims to run, relative to each tree (default claims/)")
    parser.add_argument("-n", dest="workers", default="2", help="xdist workers (default 2; 0: no xdist)")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", default=None, help="override the profile's seeds (default: the profile's)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each tree, alternating (default 3)")
    parser.add_argument("--cache-root", type=Path, default=None, help="keep the two warmed caches here")
    parser.add_argument("--old-python", default=sys.executable,
                        help="the interpreter to run the old tree with (default: this one). At b4e2311 hypothesis "
                             "was a runtime dependency, so an environment installed from that tree has its pytest "
                             "plugin; give such an environment's python to measure the old tree as users had it")
    parser.add_argument("--import-time", action="store_true",
                        help="compare `python -X importtime -c 'import kdclaims.plugin'` instead of warm runs")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE if set (default: drop it, so bytecode is cached)")
    args = parser.parse_args(argv)

    if not args.old.exists():
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(args.old), BEFORE], check=True)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    if args.import_time:
        compare_import_times(trees, args.repeats, not args.no_bytecode)
        return
    root = args.cache_root or Path(tempfile.mkdtemp(prefix="kdclaims-warm-"))
    pythons = {"old": args.old_python, "new": sys.executable}
    commands = {side: pytest_command(args.claims, args.workers, args.profile, args.seeds, root / side, pythons[side])
                for side in trees}
    print(f"claims {args.claims}, profile {args.profile}, -n {args.workers}; caches under {root}; "
          f"old runs with {pythons['old']}, new with {pythons['new']}", flush=True)
    try:
        bytecode = not args.no_bytecode
        for side, tree in trees.items():  # a cold run the first time; on warm caches it primes the bytecode
            print(f"warming {side} ({tree}): {run(tree, commands[side], bytecode):.1f} s (untimed)", flush=True)
        times: dict[str, list[float]] = {"old": [], "new": []}
        print("load average before the timed runs: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
        for repeat in range(args.repeats):
            for side, tree in trees.items():
                times[side].append(run(tree, commands[side], bytecode))
                print(f"round {repeat + 1}: {side} {times[side][-1]:.2f} s", flush=True)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        print(f"warm run, median of {args.repeats}: old {old:.2f} s, new {new:.2f} s; old/new = {old / new:.2f}x")
    finally:
        if args.cache_root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
