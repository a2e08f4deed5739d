"""Training throughput: the fast path (``kdclaims.training``) against the reference loop.

For each architecture, in one process on one machine, interleaved (reference, then the fast path at each
``--concurrent`` value, and again, ``--repeats`` times, after one warm-up of each), members are trained
from the same initial weights with the same recipe, loss, batch size and number of steps. The reference
trains one member; the fast path trains K members at once (``train_concurrently``: one step of each in
turn, on CUDA a stream each) and, with ``--processes``, P processes train one member each at once. The median wall time of each gives member-epochs per second (K members for
E epochs count K x E) and their ratio (fast / reference; above 1: the fast path is faster). On CUDA it
also prints the achieved training FLOP/s, counted as 3 x the forward FLOPs of one image
(``kdclaims.models.model_flops_per_image``) x images per second, and its fraction of the device's bf16
dense matrix peak (``--peak-tflops``), and it measures a large bf16 matrix product for comparison.
``--channels-last`` and ``--compile`` try those on the fast side, to see whether they earn a place in it.

    python benchmarks/train_throughput.py                                   # CPU, smoke scale (~1 min)
    python benchmarks/train_throughput.py --device cuda --scale paper       # GPU, the paper's models
    bash benchmarks/gpu.sh                                                  # every GPU figure, one command

Smoke scale: each architecture at the smoke profile's size, on the smoke profile's synthetic data
(CIFAR-100's format, 1,600 training images pooled to 16x16). Paper scale: the paper's model sizes on
random uint8 data of CIFAR-100's shape (50,000 x 3 x 32 x 32, 100 classes); the throughput does not
depend on the pixel values. Both sides distil (setup ``kd``, alpha 0.5) from fixed soft targets, so
the teacher-lookup work is part of what is timed. The one-off preparation of the data (uploading it
to the device, normalising it once for the reference loop) is left out of both timings.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from reference_loop import ReferenceData, train_reference  # noqa: E402

from kdclaims import training  # noqa: E402
from kdclaims.precision import PRECISIONS  # noqa: E402
from kdclaims.profiles import get_profile  # noqa: E402
from kdclaims.data import Dataset, load_cifar100, write_synthetic_cifar100  # noqa: E402
from kdclaims.models import build_model, count_parameters, model_flops_per_image  # noqa: E402

ARCHS = ("resnet18", "vgg16_bn", "vit")
H100_BF16_DENSE_TFLOPS = 989.0  # H100/H200 SXM, dense bf16 tensor-core peak (no sparsity)
CIFAR100_TRAIN, CIFAR100_TEST, CIFAR100_CLASSES = 50_000, 10_000, 100
ALPHA = 0.5  # both sides distil: loss (1) with soft targets looked up per batch
WARMUP_BATCHES = 8  # the warm-up trains each side on this many batches


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--scale", choices=("smoke", "paper"), default=None,
                   help="model sizes and data: smoke (default on cpu) or paper (default on cuda)")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated, from " + ", ".join(ARCHS))
    p.add_argument("--epochs", type=int, default=None, help="epochs per timed member (default: 2 on cpu, 1 on cuda)")
    p.add_argument("--train-size", type=int, default=None,
                   help="training images (default: smoke 1,600 synthetic; paper 50,000 random)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs of each side (default: 5 on cpu, 3 on cuda)")
    p.add_argument("--precision", default=None, choices=tuple(PRECISIONS),
                   help="the fast path's precision (fp32, tf32, bf16; default: the profile's). "
                        "The reference loop is always fp32")
    p.add_argument("--concurrent", default="1",
                   help="members the fast path trains at once on the device, comma-separated (e.g. 1,4,8): one "
                        "fast row per value, each timed against the same reference (default 1)")
    p.add_argument("--processes", default="",
                   help="also time P processes on the device at once, each training one member (comma-separated, "
                        "e.g. 2,4): the other way to share a device; one fast row per value")
    p.add_argument("--channels-last", action="store_true",
                   help="fast side only: models in channels_last memory format (convolutions in NHWC)")
    p.add_argument("--compile", action="store_true",
                   help="fast side only: each model wrapped in torch.compile (compiled during the warm-up)")
    p.add_argument("--seed", type=int, default=1, help="member seed (data order and dropout); concurrent "
                                                       "members take the seeds after it")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the harness)")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                   help="the device's bf16 dense matrix peak in TFLOP/s, for the utilisation column "
                        f"(default {H100_BF16_DENSE_TFLOPS:g}: H100/H200 SXM)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    args.scale = args.scale or ("paper" if cuda else "smoke")
    args.epochs = args.epochs or (1 if cuda else 2)
    args.repeats = args.repeats or (3 if cuda else 5)
    args.precision = args.precision or get_profile(args.scale).precision
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown:
        p.error(f"unknown architecture(s) {', '.join(unknown)}: choose from {', '.join(ARCHS)}")
    try:
        args.concurrent = [int(k) for k in args.concurrent.split(",") if k.strip()]
    except ValueError:
        p.error(f"--concurrent {args.concurrent!r}: give whole numbers, e.g. 1,4,8")
    if not args.concurrent or min(args.concurrent) < 1:
        p.error("--concurrent: every value must be at least 1")
    try:
        args.processes = [int(k) for k in args.processes.split(",") if k.strip()]
    except ValueError:
        p.error(f"--processes {args.processes!r}: give whole numbers, e.g. 2,4")
    if args.processes and min(args.processes) < 1:
        p.error("--processes: every value must be at least 1")
    for name in ("epochs", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.train_size is not None and args.train_size < 1:
        p.error("--train-size must be at least 1")
    return args


# -- data ----------------------------------------------------------------------------------------


def smoke_dataset(train_size: int | None) -> Dataset:
    """The smoke profile's synthetic data, written to a temporary folder and read back by the real reader."""
    synthetic = dict(get_profile("smoke").dataset.synthetic)
    if train_size is not None:
        per_class = math.ceil(train_size / synthetic["num_classes"])
        synthetic["train_per_class"] = max(synthetic["train_per_class"], per_class)
    with tempfile.TemporaryDirectory(prefix="kdclaims-bench-") as folder:
        dataset = load_cifar100(write_synthetic_cifar100(folder, **synthetic))
    return _first(dataset, train_size)


def paper_shaped_dataset(train_size: int | None) -> Dataset:
    """Random uint8 images and labels of CIFAR-100's shape, in memory (throughput ignores the pixels)."""
    n = train_size or CIFAR100_TRAIN
    g = torch.Generator().manual_seed(0)
    return Dataset(
        train_images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, CIFAR100_CLASSES, (n,), generator=g),
        test_images=torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, CIFAR100_CLASSES, (1000,), generator=g),
        class_names=tuple(f"class_{i:03d}" for i in range(CIFAR100_CLASSES)),
        source="random (benchmark)", archive_md5=None, fingerprint="random-benchmark",
    )


def _first(dataset: Dataset, n: int | None) -> Dataset:
    if n is None or n >= dataset.train_labels.shape[0]:
        return dataset
    return Dataset(dataset.train_images[:n].clone(), dataset.train_labels[:n].clone(), dataset.test_images,
                   dataset.test_labels, dataset.class_names, dataset.source, dataset.archive_md5,
                   f"{dataset.fingerprint}[:{n}]")


def benchmark_dataset(args: argparse.Namespace) -> Dataset:
    """The data of this run (deterministic: a worker process rebuilds the very same)."""
    return smoke_dataset(args.train_size) if args.scale == "smoke" else paper_shaped_dataset(args.train_size)


def fast_model(initial: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """A fresh copy of M_0 on the device, as the fast side runs it (``--channels-last``, ``--compile``)."""
    model = copy.deepcopy(initial).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if args.compile else model


def warm_up_slice(prepared: training.PreparedData, recipe, n: int):
    """The warm-up's data (allocator, cuDNN/oneDNN kernels, lazy initialisation, torch.compile's graphs:
    a partial last batch too, so the timed epochs' own partial batch recompiles nothing) and recipe."""
    warm = min(n, WARMUP_BATCHES * recipe.batch_size + 7)
    data = dataclasses.replace(prepared, train_images=prepared.train_images[:warm],
                               train_labels=prepared.train_labels[:warm])
    return data, recipe.scaled_to(1), warm


def fast_members(models, data, recipe, seed, soft_logits, precision: str) -> None:
    """Members through the fast path: ``kdclaims.training.train_concurrently`` over each one's
    ``training_steps`` (one member: the plain loop), BatchNorm kept in fp32 under bf16 as ``train_members``
    does. Scoring on the test set is left out, as the reference loop does not score either."""
    steps = []
    for i, model in enumerate(models):
        if precision == "bf16":
            training.keep_batchnorm_fp32(model)
        steps.append(training.training_steps(model, data, recipe, seed + i, soft_logits, ALPHA, precision=precision))
    training.train_concurrently(steps, data.device)


# -- processes: P processes sharing the device, one member each ------------------------------------


def _process_worker(rank: int, arch: str, args: argparse.Namespace, rounds: int, start, done) -> None:
    """One of P processes: rebuild the run's data, M_0 and soft targets (all deterministic), warm up, say
    "ready", then train one member (seed ``args.seed + rank``) each time the start barrier opens."""
    try:
        torch.set_num_threads(args.threads)
        profile = get_profile(args.scale)
        dataset = benchmark_dataset(args)
        prepared = training.PreparedData.from_dataset(dataset, profile.dataset.image_size, args.device)
        torch.manual_seed(0)
        initial = build_model(arch, **profile.model_config(arch, dataset.num_classes))
        recipe = profile.recipe(arch).scaled_to(args.epochs)
        n = dataset.train_labels.shape[0]
        soft = training.noise_teacher_logits("gaussian", n, dataset.num_classes).to(args.device)
        warm_data, warm_recipe, warm = warm_up_slice(prepared, recipe, n)
        fast_members([fast_model(initial, args)], warm_data, warm_recipe, args.seed + rank, soft[:warm], args.precision)
        _sync(args.device)
        done.put(("ready", rank, None))
        for _ in range(rounds):
            model = fast_model(initial, args)
            start.wait()
            fast_members([model], prepared, recipe, args.seed + rank, soft, args.precision)
            _sync(args.device)
            done.put(("done", rank, None))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run with it
        import traceback

        done.put(("error", rank, traceback.format_exc()))


class ProcessPool:
    """P worker processes (spawned: each with its own CUDA context), timed together: ``run()`` opens the
    start barrier and returns the seconds until all P have trained their member."""

    TIMEOUT_S = 3600.0

    def __init__(self, count: int, arch: str, args: argparse.Namespace, rounds: int):
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        self.count = count
        self.start = context.Barrier(count + 1)
        self.done = context.Queue()
        self.workers = [context.Process(target=_process_worker, args=(rank, arch, args, rounds, self.start, self.done),
                                        daemon=True) for rank in range(count)]
        for worker in self.workers:
            worker.start()
        self._collect("ready")

    def _collect(self, what: str) -> None:
        for _ in range(self.count):
            kind, rank, detail = self.done.get(timeout=self.TIMEOUT_S)
            if kind == "error":
                self.close()
                raise RuntimeError(f"benchmark worker process {rank} failed:\n{detail}")
            assert kind == what, (kind, what)

    def run(self) -> float:
        started = time.perf_counter()
        self.start.wait()
        self._collect("done")
        return time.perf_counter() - started

    def close(self) -> None:
        for worker in self.workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()


# -- timing --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_arch(arch: str, args: argparse.Namespace, dataset: Dataset, image_size: int, model_config: dict,
               prepared: training.PreparedData, reference: ReferenceData) -> dict:
    device = args.device
    profile = get_profile(args.scale)
    recipe = profile.recipe(arch).scaled_to(args.epochs)
    torch.manual_seed(0)  # M_0, as the Workbench builds it
    initial = build_model(arch, **model_config)
    n = dataset.train_labels.shape[0]
    soft_cpu = training.noise_teacher_logits("gaussian", n, dataset.num_classes)
    soft_device = soft_cpu.to(device)

    def fresh() -> torch.nn.Module:
        return copy.deepcopy(initial).to(device)

    def fresh_fast() -> torch.nn.Module:
        return fast_model(initial, args)

    def run_reference(model, data=reference, rec=recipe):
        train_reference(model, data, rec, args.seed, soft_cpu, ALPHA, image_size=image_size, device=device)

    def run_fast(models, data=prepared, rec=recipe, soft=soft_device):
        fast_members(models, data, rec, args.seed, soft, args.precision)

    # Warm-up: one short epoch of each side (see warm_up_slice); the process pools warm up as they start.
    warm_fast, warm_recipe, warm = warm_up_slice(prepared, recipe, n)
    warm_ref = ReferenceData(reference.images[:warm], reference.labels[:warm], image_size)
    train_reference(fresh(), warm_ref, warm_recipe, args.seed, soft_cpu[:warm], ALPHA, image_size=image_size,
                    device=device)
    for k in args.concurrent:
        run_fast([fresh_fast() for _ in range(k)], warm_fast, warm_recipe, soft_device[:warm])
    pools = {count: ProcessPool(count, arch, args, args.repeats) for count in args.processes}

    ref_times, fast_times = [], {k: [] for k in args.concurrent}
    process_times = {count: [] for count in args.processes}
    try:
        for _ in range(args.repeats):  # interleaved: reference, then each fast variant, and again
            model = fresh()
            ref_times.append(timed(lambda: run_reference(model), device))
            for k in args.concurrent:
                models = [fresh_fast() for _ in range(k)]
                fast_times[k].append(timed(lambda: run_fast(models), device))
            for count, pool in pools.items():
                process_times[count].append(pool.run())
    finally:
        for pool in pools.values():
            pool.close()

    ref_s = statistics.median(ref_times)
    flops = model_flops_per_image(arch, **model_config)
    train_flops_per_member_epoch = 3 * flops * n
    fast = []
    variants = [(k, "streams", fast_times[k]) for k in args.concurrent]
    variants += [(count, "processes", process_times[count]) for count in args.processes]
    for k, how, times in variants:
        fast_s = statistics.median(times)
        paired = [r / (f / k) for r, f in zip(ref_times, times)]
        fast.append({
            "concurrent": k,
            "how": how if k > 1 or how == "processes" else "alone",
            "fast_s": times,
            "fast_member_epochs_per_s": k * args.epochs / fast_s,
            "ratio_fast_over_reference": (k * args.epochs / fast_s) / (args.epochs / ref_s),
            "paired_ratio_min": min(paired),
            "paired_ratio_max": max(paired),
            "fast_train_flops_per_s": train_flops_per_member_epoch * k * args.epochs / fast_s,
        })
    return {
        "arch": arch,
        "params": count_parameters(initial),
        "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_config.items()},
        "recipe": {"optimizer": recipe.optimizer, "batch_size": recipe.batch_size, "epochs": recipe.epochs},
        "train_images": n,
        "steps_per_epoch": math.ceil(n / recipe.batch_size),
        "forward_flops_per_image": flops,
        "reference_s": ref_times,
        "reference_member_epochs_per_s": args.epochs / ref_s,
        "reference_train_flops_per_s": train_flops_per_member_epoch * args.epochs / ref_s,
        "fast": fast,
    }


# -- report --------------------------------------------------------------------------------------


def measured_matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """TFLOP/s of a ``size``-cubed bf16 matrix product on ``device`` (random data; mean of ``repeats`` after
    three warm-ups): what the device's matrix units deliver in practice, beside the data-sheet peak."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = timed(lambda: [a @ b for _ in range(repeats)], device) / repeats
    return 2 * size ** 3 / seconds / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """One line per architecture and side: the reference, then the fast path at each --concurrent value."""
    cuda = args.device.type == "cuda"
    header = ["arch", "params", "images", "side", "members at once", "member-ep/s", "fast/ref", "paired fast/ref"]
    if cuda:
        header += ["TFLOP/s", "% of bf16 peak"]
    peak = args.peak_tflops * 1e12
    lines = [header]
    for r in rows:
        line = [r["arch"], f"{r['params']:,}", f"{r['train_images']:,}", "reference", "1",
                f"{r['reference_member_epochs_per_s']:.4g}", "", ""]
        if cuda:
            line += [f"{r['reference_train_flops_per_s'] / 1e12:.2f}",
                     f"{100 * r['reference_train_flops_per_s'] / peak:.1f}%"]
        lines.append(line)
        for f in r["fast"]:
            side = "fast" if f.get("how", "alone") == "alone" else f"fast, {f['how']}"
            line = [r["arch"], f"{r['params']:,}", f"{r['train_images']:,}", side, str(f["concurrent"]),
                    f"{f['fast_member_epochs_per_s']:.4g}", f"{f['ratio_fast_over_reference']:.2f}x",
                    f"{f['paired_ratio_min']:.2f}-{f['paired_ratio_max']:.2f}"]
            if cuda:
                line += [f"{f['fast_train_flops_per_s'] / 1e12:.2f}", f"{100 * f['fast_train_flops_per_s'] / peak:.1f}%"]
            lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |"  # noqa: E731
    print(fmt(lines[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines[1:]:
        print(fmt(line))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    profile = get_profile(args.scale)
    image_size = profile.dataset.image_size
    started = time.perf_counter()
    dataset = benchmark_dataset(args)
    prepared = training.PreparedData.from_dataset(dataset, image_size, device)
    reference = ReferenceData.from_dataset(dataset, image_size)

    print(f"command: python {' '.join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"device: {device} - {device_name(device)}")
    print(f"torch {torch.__version__}, python {platform.python_version()}; "
          f"CPU threads: {torch.get_num_threads()} (torch.set_num_threads({args.threads}), as the harness does)")
    print(f"scale: {args.scale} - models at the {args.scale} profile's size; data "
          f"{tuple(dataset.train_images.shape)} uint8 -> {image_size}x{image_size}, {dataset.num_classes} classes "
          f"({'synthetic, the smoke profile' if args.scale == 'smoke' else 'random, CIFAR-100 shape'})")
    print(f"work per member: {args.epochs} epoch(s) of the {args.scale} recipe, setup kd (alpha {ALPHA}); "
          f"precision: reference fp32, fast {args.precision}; "
          f"median of {args.repeats} interleaved runs per side after one warm-up")
    print("reference: benchmarks/reference_loop.py (DataLoader, shuffle, per-batch copy, one model, fp32, "
          "no compile); fast: kdclaims.training.training_steps, K members at once through train_concurrently "
          f"(K in {args.concurrent}; on CUDA a stream each)"
          + (f"; and P processes at once, one member each (P in {args.processes})" if args.processes else "")
          + (", channels_last" if args.channels_last else "") + (", torch.compile" if args.compile else ""))
    matmul_tflops = None
    if device.type == "cuda":
        matmul_tflops = measured_matmul_tflops(device)
        print(f"training FLOPs = 3 x forward FLOPs per image x images; bf16 dense matrix peak used: "
              f"{args.peak_tflops:g} TFLOP/s (--peak-tflops); an 8192^3 bf16 matrix product measured now: "
              f"{matmul_tflops:.0f} TFLOP/s ({100 * matmul_tflops / args.peak_tflops:.0f}% of that peak)")
    print()
    rows = []
    for arch in args.archs:
        config = profile.model_config(arch, dataset.num_classes)
        rows.append(bench_arch(arch, args, dataset, image_size, config, prepared, reference))
    print_table(rows, args)
    print()
    print("member-ep/s: member-epochs per second (one member trained for one epoch; K members at once count K); "
          "fast/ref: ratio of the member throughputs from the median times (>1: the fast path is faster); "
          "paired: min-max over the repeats of the same ratio within one interleaved round")
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({
            "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "scale": args.scale, "epochs": args.epochs,
            "repeats": args.repeats, "precision": args.precision, "peak_tflops": args.peak_tflops,
            "concurrent": args.concurrent, "processes": args.processes, "channels_last": args.channels_last, "compile": args.compile,
            "measured_matmul_tflops": matmul_tflops,
            "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
