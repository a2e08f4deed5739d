"""What a run will cost before it starts: members to train, members cached, device-hours, cache size.

``plan(profile, ...)`` counts, for each architecture, the members of the paper's populations (the ten
setups of Tables 1-3 over the profile's seeds, plus the architecture's teacher), how many of them the
cache already holds (by the same keys a run uses: ``Workbench.member_key``), and how many are left to
train. The time per member comes from, in this order of preference:

1. ``per_member_seconds`` (``--per-member-seconds``), when given;
2. the median ``device_time_s`` (``wall_time_s`` / members trained together) recorded by the members of that architecture already in the cache;
3. only when asked (``measure=True``, ``--measure``): a quick measurement of the fast path
   (``kdclaims.training.train_model``) on the current device, on the profile's data (or data of its
   shape) at the profile's model size: one epoch, or, when an epoch would take long (a paper-size model
   on a CPU), its first steps extrapolated to the epoch; times the recipe's epochs. Without it, and
   with nothing cached, that time is unknown; planning then trains nothing and answers in seconds.

Beside it, every plan estimates accelerator hours from arithmetic alone: a member's training FLOPs
are about 3 x the forward FLOPs of one image (``kdclaims.models.model_flops_per_image``, at the
profile's model size) x training images x epochs (forward, and a backward of twice its cost), run at
``device_tflops`` (``--device-tflops``; default ``GPU_PEAK_TFLOPS`` x ``GPU_UTILISATION``, an
H100/H200's dense bf16 peak at the share of it small CIFAR models typically reach).

Without the profile's data (CIFAR-100 absent for the paper profile) member keys cannot be computed, so
the cached counts are unknown (reported as 0, with the data's error message saying how to fetch it);
the plan is still made, on data of CIFAR-100's shape.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

from kdclaims.errors import ConfigError, DataError
from kdclaims.paths import default_cache_dir
from kdclaims.profiles import Profile, get_profile
from kdclaims.setups import TEACHER_SEED
from kdclaims.spec import PopulationSpec, teacher_spec

HEADER_BYTES_ESTIMATE = 4096  # safetensors header + kdclaims metadata JSON of one member, about
CIFAR100_SHAPE = {"train": 50_000, "test": 10_000, "classes": 100}
# A measured epoch longer than this is extrapolated from its first steps (a GPU can afford a whole epoch).
MEASURE_SECONDS = {"cpu": 5.0, "cuda": 60.0}
MIN_MEASURE_STEPS = 3
GPU_PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16 tensor-core peak, TFLOP/s (NVIDIA's data sheets)
GPU_UTILISATION = 0.3  # the share of that peak a small CIFAR model trained alone sustains, about
DEFAULT_DEVICE_TFLOPS = GPU_PEAK_TFLOPS * GPU_UTILISATION
TRAINING_FLOPS_PER_FORWARD = 3  # forward + backward (about twice the forward) per image


def training_flops_per_member(profile: Profile, arch: str, train_images: int, num_classes: int) -> int:
    """FLOPs to train one member of ``arch`` under ``profile``: 3 x forward FLOPs of one image at the
    profile's model size x ``train_images`` x the recipe's epochs."""
    from kdclaims.models import model_flops_per_image

    forward = model_flops_per_image(arch, **profile.model_config(arch, num_classes))
    return TRAINING_FLOPS_PER_FORWARD * forward * train_images * profile.recipe(arch).epochs


def device_tflops_assumption(device_tflops: float) -> str:
    """The throughput the accelerator estimate assumes, in words (printed beside the estimate)."""
    if device_tflops == DEFAULT_DEVICE_TFLOPS:
        return (f"{device_tflops:.1f} TFLOP/s sustained = H100/H200 bf16 dense peak {GPU_PEAK_TFLOPS:g} TFLOP/s "
                f"x {GPU_UTILISATION:g} utilisation (default; --device-tflops to change)")
    return f"{device_tflops:g} TFLOP/s sustained (--device-tflops)"


def paper_populations(arch: str, setups="paper") -> list[PopulationSpec]:
    """The populations of ``arch``: ``"paper"`` gives the ten setups of the paper's tables; otherwise an
    iterable of ``PopulationSpec``, ``(setup, alpha)`` pairs or setup names."""
    if setups == "paper":
        from kdclaims.kinds import paper_arms

        return [arm.population(arch) for arm in paper_arms()]
    specs = []
    for item in setups:
        if isinstance(item, PopulationSpec):
            specs.append(dataclasses.replace(item, arch=arch))
        elif isinstance(item, str):
            specs.append(PopulationSpec(arch, item))
        else:
            specs.append(PopulationSpec(arch, *item))
    return specs


def _trainable_archs() -> list[str]:
    from kdclaims.architectures import RECIPES

    return list(RECIPES)


def _dir_bytes(root: Path) -> int:
    if not root.is_dir():
        return 0
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def _member_meta(cache, key: str) -> dict | None:
    """The metadata of a cached member from its header only (cheap: the tensors are not read or verified)."""
    from kdclaims.cache import read_meta

    try:
        return read_meta(cache.member_path(key))
    except (ValueError, OSError):
        return None


def measure_per_member_seconds(profile: Profile, arch: str, device, data=None,
                               measure_seconds: float | None = None, concurrent_members: int = 1) -> tuple[float, str]:
    """Seconds to train one member of ``arch`` with the fast path, measured now; and how it was measured.
    With ``concurrent_members`` K > 1, K members train together (as ``--concurrent-members K`` would) and
    the time per member is the group's time / K.

    ``data``: the profile's ``PreparedData`` when it is available, else None (random uint8 data of
    CIFAR-100's shape at the profile's image size is used). One warm-up step first; then one epoch,
    or its first steps when the epoch would take longer than ``measure_seconds``, extrapolated.
    """
    import torch

    from kdclaims.models import build_model
    from kdclaims.training import PreparedData, noise_teacher_logits, train_concurrently, train_model, training_steps

    device = torch.device(device)
    if measure_seconds is None:
        measure_seconds = MEASURE_SECONDS.get(device.type, MEASURE_SECONDS["cpu"])
    recipe = profile.recipe(arch)
    batch = recipe.batch_size
    if data is None:
        g = torch.Generator().manual_seed(0)
        n_train, classes, size = CIFAR100_SHAPE["train"], CIFAR100_SHAPE["classes"], 32
        steps_per_epoch = math.ceil(n_train / batch)
        # A whole epoch's worth on a GPU; on a CPU only what a few seconds of steps can use.
        n_make = n_train if device.type == "cuda" else min(n_train, 64 * batch)
        images = torch.randint(0, 256, (n_make, 3, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, classes, (n_make,), generator=g)
        mean = torch.full((1, 3, 1, 1), 0.5)
        std = torch.full((1, 3, 1, 1), 0.29)
        data = PreparedData(images.to(device), labels.to(device), images[:1].to(device), labels[:1].to(device),
                            mean.to(device), std.to(device), profile.dataset.image_size or size, classes, "random")
        origin = "data of CIFAR-100's shape"
    else:
        n_train, classes = data.train_images.shape[0], data.num_classes
        steps_per_epoch = math.ceil(n_train / batch)
        origin = "the profile's data"

    def subset(steps: int):
        k = min(data.train_images.shape[0], steps * batch)
        return dataclasses.replace(data, train_images=data.train_images[:k], train_labels=data.train_labels[:k])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one_epoch = recipe.scaled_to(1)
    extra = {"precision": profile.precision}
    soft = noise_teacher_logits("gaussian", data.train_images.shape[0], classes).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        initial = build_model(arch, **profile.model_config(arch, classes, data.image_size, data.train_images.shape[1]))
        # Warm-up: one step (lazy initialisation, kernels).
        train_model(_copy(initial, device), subset(1), one_epoch, 1, soft[:batch], 0.5, **extra)
        available = min(steps_per_epoch, math.ceil(data.train_images.shape[0] / batch))

        def timed(steps: int) -> float:
            """Seconds per member for ``steps`` steps (``concurrent_members`` members taking turns)."""
            part = subset(steps)
            models = [_copy(initial, device) for _ in range(concurrent_members)]
            sync()
            start = time.perf_counter()
            train_concurrently([training_steps(model, part, one_epoch, 1 + i, soft[:part.train_images.shape[0]], 0.5,
                                               **extra) for i, model in enumerate(models)], device)
            sync()
            return (time.perf_counter() - start) / concurrent_members

        # A few steps first; then the whole epoch if it fits the budget, else as many steps as fit.
        steps = min(MIN_MEASURE_STEPS, available)
        elapsed = timed(steps)
        affordable = int(measure_seconds / max(elapsed * concurrent_members / steps, 1e-9))
        more = min(available, affordable)
        if more > steps:
            steps, elapsed = more, timed(more)
    per_step = elapsed / steps
    per_member = per_step * steps_per_epoch * recipe.epochs
    if steps >= steps_per_epoch:
        how = f"measured: 1 epoch on {device} ({origin}) x {recipe.epochs} epochs"
    else:
        how = (f"measured: {steps} of {steps_per_epoch} steps of 1 epoch on {device} ({origin}), "
               f"extrapolated x {recipe.epochs} epochs")
    if concurrent_members > 1:
        how += f", {concurrent_members} members at a time (their time / {concurrent_members})"
    return per_member, how


def _copy(model, device):
    import copy

    return copy.deepcopy(model).to(device)


def plan(profile: Profile | str, cache_dir=None, data_dir=None, archs=None, setups="paper", device=None,
         per_member_seconds: float | None = None, measure: bool = False, concurrent_members: int = 1,
         device_tflops: float | None = None) -> dict:
    """What training ``profile``'s populations will cost; a plain-JSON dict (see the module docstring).

    Without ``measure`` nothing is trained: an architecture with no cached wall times and no
    ``per_member_seconds`` then gets no measured time (None), only the FLOP-based accelerator estimate
    at ``device_tflops`` (default ``DEFAULT_DEVICE_TFLOPS``). ``concurrent_members``: members trained at
    once on the device (``--concurrent-members``), for the measurement.
    """
    from kdclaims.cache import SUFFIX
    from kdclaims.population import Workbench

    if isinstance(profile, str):
        profile = get_profile(profile)
    if per_member_seconds is not None and not (per_member_seconds > 0 and math.isfinite(per_member_seconds)):
        raise ConfigError(f"--per-member-seconds {per_member_seconds} must be a positive number")
    if device_tflops is None:
        device_tflops = DEFAULT_DEVICE_TFLOPS
    if not (isinstance(device_tflops, (int, float)) and device_tflops > 0 and math.isfinite(device_tflops)):
        raise ConfigError(f"--device-tflops {device_tflops} must be a positive number (TFLOP/s)")
    archs = list(archs) if archs else _trainable_archs()
    bench = Workbench(profile, cache_dir or default_cache_dir(), data_dir, device=device, progress=False,
                      concurrent_members=concurrent_members)
    cache = bench.cache

    data_note = None
    try:
        bench.check_data()
        summary = bench.dataset_summary  # the cached summary where there is one: no unpickling, no torch
        shape = {"train": summary.train.count, "test": summary.test.count, "classes": summary.num_classes}
        keys_known = True
    except DataError as exc:
        data_note = str(exc)
        shape = dict(CIFAR100_SHAPE)
        keys_known = False

    rows = []
    for arch in archs:
        specs = paper_populations(arch, setups)
        members = [(teacher_spec(arch), TEACHER_SEED)] + [(spec, seed) for spec in specs for seed in profile.seeds]
        populations = [{"name": f"{arch}/teacher", "total": 1, "cached": 0}] + [
            {"name": spec.name, "total": len(profile.seeds), "cached": 0} for spec in specs]
        cached_keys: list[str] = []
        if keys_known:
            seen = set()
            for i, (spec, seed) in enumerate(members):
                key = bench.member_key(spec, seed)
                if key in seen:
                    continue
                seen.add(key)
                if cache.has(key):
                    cached_keys.append(key)
                    populations[0 if seed == TEACHER_SEED else 1 + (i - 1) // len(profile.seeds)]["cached"] += 1
            total = len(seen)
        else:
            total = len(members)
        cached = len(cached_keys)
        to_train = total - cached
        metas = [m for m in (_member_meta(cache, k) for k in cached_keys) if m is not None]
        # each member's share of the device: members trained concurrently record the group's wall time
        walls = [float(m.get("device_time_s", m.get("wall_time_s"))) for m in metas
                 if isinstance(m.get("device_time_s", m.get("wall_time_s")), (int, float))]

        if per_member_seconds is not None:
            per_member, source = float(per_member_seconds), "given: --per-member-seconds"
        elif walls:
            per_member = statistics.median(walls)
            devices = sorted({str(m.get("device")) for m in metas if m.get("device")})
            source = f"median device time of {len(walls)} cached member(s) on {', '.join(devices) or '?'}"
        elif measure and to_train:
            per_member, source = measure_per_member_seconds(profile, arch, bench.device,
                                                            bench.data if keys_known else None,
                                                            concurrent_members=concurrent_members)
        else:
            per_member, source = None, "not measured (--measure trains one briefly)" if to_train else "nothing to train"
        flops_per_member = training_flops_per_member(profile, arch, shape["train"], shape["classes"])
        accelerator_s = flops_per_member / (device_tflops * 1e12)

        # Bytes the new members will add: cached students' mean file size, else the logits they hold.
        student_sizes = [cache.member_path(k).stat().st_size for k, m in zip(cached_keys, metas)
                         if m.get("seed") != TEACHER_SEED and cache.member_path(k).is_file()]
        student_bytes = (statistics.fmean(student_sizes) if student_sizes
                         else shape["test"] * shape["classes"] * 4 + HEADER_BYTES_ESTIMATE)
        teacher_cached = keys_known and cache.has(bench.member_key(teacher_spec(arch), TEACHER_SEED))
        teacher_bytes = 0 if teacher_cached else \
            (shape["test"] + shape["train"]) * shape["classes"] * 4 + HEADER_BYTES_ESTIMATE
        students_to_train = to_train - (0 if teacher_cached else 1)
        new_bytes = int(round(student_bytes * students_to_train + teacher_bytes))

        rows.append({
            "arch": arch,
            "total": total,
            "cached": cached,
            "to_train": to_train,
            "per_member_s": per_member,
            "per_member_source": source,
            "device_hours": None if per_member is None else per_member * to_train / 3600.0,
            "training_flops_per_member": flops_per_member,
            "accelerator_per_member_s": accelerator_s,
            "accelerator_hours": accelerator_s * to_train / 3600.0,
            "epochs": profile.recipe(arch).epochs,
            "new_bytes_estimate": new_bytes,
            "populations": populations,
        })

    members_bytes = sum(p.stat().st_size for p in cache.entries())
    cache_bytes = _dir_bytes(cache.root)
    new_total = sum(r["new_bytes_estimate"] for r in rows)
    hours = [r["device_hours"] for r in rows]
    return {
        "profile": profile.name,
        "seeds": len(profile.seeds),
        "archs": archs,
        "device": str(bench.device),
        "concurrent_members": concurrent_members,
        "cache_dir": str(cache.root),
        "data_available": keys_known,
        "data_note": data_note,
        "cached_known": keys_known,
        "rows": rows,
        "total": sum(r["total"] for r in rows),
        "cached": sum(r["cached"] for r in rows),
        "to_train": sum(r["to_train"] for r in rows),
        "device_hours": None if any(h is None for h in hours) else sum(hours),
        "device_tflops": device_tflops,
        "device_tflops_assumption": device_tflops_assumption(device_tflops),
        "accelerator_hours": sum(r["accelerator_hours"] for r in rows),
        "cache_bytes": cache_bytes,
        "cache_member_bytes": members_bytes,
        "cache_member_files": len(cache.entries()),
        "new_bytes_estimate": new_total,
        "cache_bytes_after_estimate": cache_bytes + new_total,
        "member_file_suffix": SUFFIX,
    }


# ---------------------------------------------------------------------------------------------
# plan --sequential (issue #19)
# ---------------------------------------------------------------------------------------------

def shipped_expected_members(looks, spending: str) -> dict | None:
    """The catalogue simulation's expected members for this design (looks and spending), as shipped in
    ``kdclaims/sequential_expected.json`` by ``benchmarks/sequential_catalogue_sim.py --write-expected``;
    None when no figure was computed for it."""
    import json

    from kdclaims.sequential_run import EXPECTED_FILE

    if not EXPECTED_FILE.is_file():
        return None
    for design in json.loads(EXPECTED_FILE.read_text()).get("designs", []):
        if list(design["looks"]) == list(looks) and design["spending"] == spending:
            return design
    return None


def sequential_plan(profile: Profile, fixed: dict) -> dict:
    """The sequential design's plan beside the fixed design's (``fixed``: :func:`plan`'s result).

    ``efficacy_z``: the error-spending efficacy boundary at each look for information proportional to
    the members at the looks (t_k = looks_k / N; the run follows the information it observes).
    ``expected_members``: from the catalogue simulation under the paper's Tables 1-3, shipped per
    design (None where none was computed: another looks or spending, or another seed count);
    ``max_members``: every population grows to N (the sequential design never trains more than the
    fixed one); ``fixed_members``: the fixed design's. Device- and GPU-hours are those counts times
    the time per member (all members, cached ones included, so the three compare like with like).
    """
    from kdclaims.sequential import spending_boundaries
    from kdclaims.sequential_run import Design

    design = Design.from_profile(profile)
    fractions = [k / design.max_members for k in design.looks]
    efficacy_z = [float(b) for b in spending_boundaries(fractions, alpha=design.alpha, spending=design.spending,
                                                        final=True)]
    shipped = shipped_expected_members(design.looks, design.spending)
    rows = []
    for row in fixed["rows"]:
        expected = None if shipped is None else shipped["expected_members_per_arch"].get(row["arch"])
        per_member, accelerator = row["per_member_s"], row["accelerator_per_member_s"]

        def hours(members, seconds):
            return None if members is None or seconds is None else members * seconds / 3600.0

        rows.append({"arch": row["arch"], "fixed_members": row["total"], "max_members": row["total"],
                     "expected_members": expected,
                     "fixed_device_hours": hours(row["total"], per_member),
                     "max_device_hours": hours(row["total"], per_member),
                     "expected_device_hours": hours(expected, per_member),
                     "fixed_accelerator_hours": hours(row["total"], accelerator),
                     "max_accelerator_hours": hours(row["total"], accelerator),
                     "expected_accelerator_hours": hours(expected, accelerator)})

    def total(key):
        values = [r[key] for r in rows]
        return None if any(v is None for v in values) else sum(values)

    info = design.as_dict()
    return {
        "looks": list(design.looks), "spending": design.spending, "spending_name": info["spending_name"],
        "alpha": design.alpha, "information_fractions": fractions, "efficacy_z": efficacy_z,
        "futility_rule": f"comparisons: {info['rules']['futility']}; rankings and trends: {info['rules']['pair_futility']}",
        "rules": info["rules"],
        "expected_members": total("expected_members"), "max_members": total("max_members"),
        "fixed_members": total("fixed_members"),
        "expected_members_source": (
            f"catalogue simulation under the paper's Tables 1-3 ({shipped['trials']} trials, seed {shipped['seed']}; "
            f"{shipped['generated']}; regenerate: {shipped['command']})" if shipped is not None else
            "no catalogue simulation shipped for this design (looks and spending); run "
            f"python benchmarks/sequential_catalogue_sim.py --looks {','.join(map(str, design.looks))} "
            f"--spending {design.spending} --write-expected"),
        "expected_device_hours": total("expected_device_hours"), "max_device_hours": total("max_device_hours"),
        "fixed_device_hours": total("fixed_device_hours"),
        "expected_accelerator_hours": total("expected_accelerator_hours"),
        "max_accelerator_hours": total("max_accelerator_hours"),
        "fixed_accelerator_hours": total("fixed_accelerator_hours"),
        "sequential_rows": rows,
    }
