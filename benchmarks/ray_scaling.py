"""Ray scaling: member throughput of a population trained through Ray with 1 and 2 workers, and the
per-member overhead Ray adds over training the member in-process.

In one run, on one local Ray cluster (``ray.init(num_cpus=2)``: a local cluster cannot be resized cheaply
within one process, so "1 worker" and "2 workers" are 1 and 2 members in flight at once, through the
backend's ``max_in_flight``), the same smoke population (default vgg16_bn/independent, 8 seeds) is
trained from a fresh temporary cache each time:

- in-process (the local backend, this process, one torch thread: the harness's default);
- through Ray with 1 worker, and with 2 workers, alternated ``--repeats`` times (1, 2, 1, 2, ...).

Before any timing, warm-up populations (caches of their own) have each Ray worker, and this process,
import torch and kdclaims and train once.
Each timed run includes everything ``Workbench.population`` does for the missing members (for Ray:
submitting, the worker rebuilding its workbench on the new cache and loading the data, training, the
cache write, and the driver loading every member back), except generating the synthetic dataset, which
the driver does before the clock starts.

It prints member throughput (members per second) for each side, the ratio 2 workers / 1 worker (target
>= 1.6 on a 2-core machine), and the per-member overhead Ray adds: the task's wall time as the driver
sees it (submit to result) minus the training wall time the member records in its metadata, split into
Ray's own part (scheduling, argument and result serialisation: driver-seen time minus the time inside
the task) and the worker's part (rebuilding or finding its workbench, the key check, the cache write:
time inside the task minus training), beside the same "member wall time minus training" in-process.

    python benchmarks/ray_scaling.py                         # vgg16_bn, 8 seeds, 2 repeats (~2 min on 2 cores)
    python benchmarks/ray_scaling.py --arch vit --seeds 8 --repeats 3 --json ray.json

Needs Ray (``pip install -e '.[ray]'``). The machine should be otherwise idle: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdclaims.backends import LocalBackend, RayBackend, import_ray
from kdclaims.profiles import get_profile
from kdclaims.spec import PopulationSpec
from kdclaims.population import Workbench, cpu_threads


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg16_bn", help="architecture of the population (default vgg16_bn)")
    p.add_argument("--setup", default="independent", help="setup of the population (default independent)")
    p.add_argument("--alpha", type=float, default=None, help="alpha, for a setup that takes one")
    p.add_argument("--seeds", type=int, default=8, help="members per population (default 8)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each Ray side, alternated (default 2)")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    p.add_argument("--skip-in-process", action="store_true", help="leave out the in-process run")
    p.add_argument("--json", dest="json_path", default=None, help="also write every timing as JSON here")
    return p.parse_args(argv)


def timed_population(profile, spec: PopulationSpec, backend, root: Path) -> dict:
    """Train ``spec`` from an empty cache under ``root`` with ``backend``; the data is made before the clock."""
    bench = Workbench(profile, root, device="cpu", progress=False, backend=backend)
    bench.check_data()
    _ = bench.data  # generated, read and prepared outside the timing
    member_wall: list[float] = []
    if isinstance(backend, LocalBackend):  # time each member in-process, as the driver sees it
        original = bench.ensure_member

        def ensure_member(*args, **kwargs):
            started = time.perf_counter()
            record = original(*args, **kwargs)
            member_wall.append(time.perf_counter() - started)
            return record

        bench.ensure_member = ensure_member
    started = time.perf_counter()
    population = bench.population(spec)
    wall = time.perf_counter() - started
    report = population.report
    assert population.trained_now == len(profile.seeds) and not population.failed_seeds, report.summary()
    train = [float(m["wall_time_s"]) for m in population.members_meta]
    out = {"wall_s": wall, "members": population.n, "members_per_s": population.n / wall, "train_s": train,
           "logits": population.test_logits}
    if isinstance(backend, RayBackend):
        timings = [report.timings[(spec, seed)] for seed in population.seeds]
        out["task_s"] = [t["task_s"] for t in timings]
        out["worker_s"] = [t["worker_s"] for t in timings]
        out["overhead_s"] = [t["task_s"] - t["train_s"] for t in timings]
        out["ray_part_s"] = [t["task_s"] - t["worker_s"] for t in timings]
        out["worker_part_s"] = [t["worker_s"] - t["train_s"] for t in timings]
        out["workers"] = len({t["pid"] for t in timings})
    else:
        out["member_wall_s"] = member_wall
        out["overhead_s"] = [w - t for w, t in zip(member_wall, train)]
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms (mean {statistics.mean(values) * 1000:.1f})"


def main(argv=None) -> int:
    args = parse_args(argv)
    ray = import_ray()
    spec = PopulationSpec(args.arch, args.setup, args.alpha)
    profile = get_profile("smoke").with_seeds(tuple(range(1, args.seeds + 1)))
    torch.set_num_threads(cpu_threads())
    print(f"command: python {' '.join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; host {platform.node()}, {os.cpu_count()} CPUs; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"torch {torch.__version__}, ray {ray.__version__}, python {platform.python_version()}; "
          f"{cpu_threads()} torch thread(s) per member")
    print(f"population: {spec.name}, smoke profile, {args.seeds} seeds, from an empty cache each time")

    started = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    results: dict[str, list[dict]] = {"in_process": [], "ray_1": [], "ray_2": []}
    with tempfile.TemporaryDirectory(prefix="kdclaims-ray-bench-") as tmp:
        root = Path(tmp)
        warm = Workbench(profile.with_seeds(tuple(range(1, args.num_cpus + 1))), root / "warm", device="cpu",
                         progress=False, backend=RayBackend(max_in_flight=args.num_cpus))
        warm.population(spec)  # every worker imports torch and kdclaims before anything is timed
        Workbench(profile.with_seeds((1,)), root / "warm-local", device="cpu", progress=False).population(spec)
        if not args.skip_in_process:
            results["in_process"].append(timed_population(profile, spec, LocalBackend(), root / "in-process"))
        for repeat in range(args.repeats):
            for workers in (1, 2):
                results[f"ray_{workers}"].append(timed_population(
                    profile, spec, RayBackend(max_in_flight=workers), root / f"ray-{workers}-{repeat}"))
    ray.shutdown()

    reference = (results["in_process"] or results["ray_1"])[0]["logits"]
    identical = all(torch.equal(r["logits"], reference) for side in results.values() for r in side)
    print()
    print("| side | runs | members/s (median) | per run | wall per run (median) |")
    print("|---|---|---|---|---|")
    for name, label in (("in_process", "in-process"), ("ray_1", "Ray, 1 worker"), ("ray_2", "Ray, 2 workers")):
        runs = results[name]
        if not runs:
            continue
        rates = [r["members_per_s"] for r in runs]
        print(f"| {label} | {len(runs)} | {statistics.median(rates):.3f} | "
              f"{', '.join(f'{x:.3f}' for x in rates)} | {statistics.median(r['wall_s'] for r in runs):.2f} s |")
    one = statistics.median(r["members_per_s"] for r in results["ray_1"])
    two = statistics.median(r["members_per_s"] for r in results["ray_2"])
    paired = [b["members_per_s"] / a["members_per_s"] for a, b in zip(results["ray_1"], results["ray_2"])]
    print()
    print(f"throughput 2 workers / 1 worker: {two / one:.2f}x (target >= 1.6x); per repeat: "
          f"{', '.join(f'{x:.2f}x' for x in paired)}")
    if results["in_process"]:
        print(f"Ray with 1 worker / in-process: {one / results['in_process'][0]['members_per_s']:.2f}x")
    print()
    print("per-member overhead (1-worker runs: no contention), median over members:")
    solo = [x for r in results["ray_1"] for x in r["overhead_s"]]
    print(f"  Ray task wall time (driver) - training wall time (metadata): {ms(solo)}")
    print(f"    Ray's part (scheduling, serialisation: driver-seen - inside the task): "
          f"{ms([x for r in results['ray_1'] for x in r['ray_part_s']])}")
    print(f"    worker's part (workbench lookup/rebuild, key check, cache write: inside - training): "
          f"{ms([x for r in results['ray_1'] for x in r['worker_part_s']])}")
    if results["in_process"]:
        local = results["in_process"][0]["overhead_s"]
        print(f"  in-process member wall time - training wall time (key, cache write): {ms(local)}")
        print(f"  => Ray adds {(statistics.median(solo) - statistics.median(local)) * 1000:.1f} ms per member "
              f"(median) over in-process; median training time per member "
              f"{statistics.median(results['in_process'][0]['train_s']):.2f} s")
    print(f"every run's test logits bit-identical: {identical}")
    print(f"total wall time: {time.perf_counter() - started:.1f} s; load average after "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json_path:
        payload = {side: [{k: v for k, v in r.items() if k != "logits"} for r in runs]
                   for side, runs in results.items()}
        payload.update(ratio_2_over_1=two / one, identical=identical, argv=argv or sys.argv[1:])
        Path(args.json_path).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
