"""Populations: load every member of one setup from the cache, training only the missing ones.

A ``Workbench`` is one profile on one device with one cache. It owns the dataset (the real
CIFAR-100, or the smoke profile's synthetic copy in the same format, read through the same reader),
the shared initialisation M_0 of each architecture, the teacher of each architecture, and the keys
of every member. ``Workbench.population(spec)`` returns a ``Population``: the members' test logits
stacked as (S, N, C), with accuracy, loss and the metadata of each member.

Reliability (see README, "Reliability"): ``ensure_member`` trains a member at most once across
processes (the member's file lock), never uses a corrupt entry (it is moved to ``<cache>/quarantine/``
with a one-line warning and retrained), checks that the cache can take a new entry before it trains,
and checkpoints long members to ``<cache>/checkpoints/<key>.pt`` so that a killed run resumes them
mid-training; the checkpoint is deleted once the member is stored.

Backends (``kdclaims/backends.py``): ``population`` works out which members are missing (a cached member
is never handed out again), trains the teacher first where the setup distils from it, hands the missing
members to the workbench's backend (``local``: in this process, in seed order; ``ray``: as Ray tasks
across a cluster) and then loads every member from the cache. A ``WorkbenchSpec`` is the small,
picklable description a Ray worker rebuilds the same workbench from (same keys: they are content
hashes). A member that still fails after the backend's retries is left out of the population and
named in ``Population.failed_seeds``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import kdclaims
from kdclaims import metrics
from kdclaims.arrays import keep_freed_arrays_on_the_heap
from kdclaims.backends import BackendReport, check_concurrent_members, get_backend
from kdclaims.cache import Cache, CorruptEntry, KnownDataset, MemberRecord, verify_entry_bytes
from kdclaims.data import Dataset, DatasetSummary, load_dataset, read_dataset_summary
from kdclaims.datasets import check_data_dir, get_dataset
from kdclaims.errors import ConfigError, DataError, KdclaimsError
from kdclaims.paths import default_cache_dir, default_data_dir
from kdclaims.profiles import Profile
from kdclaims.setups import INIT_SEED, NOISE_SEED, TEACHER_SEED, get_setup
from kdclaims.spec import CACHE_SCHEMA, PopulationSpec, hash_config, teacher_spec

# torch, and the modules built on it (models, training, checkpoints), are imported where something trains:
# a warm run -- every member cached -- reads logits and evaluates claims in numpy and never loads torch,
# which takes seconds per process.
if TYPE_CHECKING:
    import torch

    from kdclaims.checkpoint import Checkpointer
    from kdclaims.training import PreparedData

_AUTO_DEVICES = (None, "", "auto")


def resolve_device(name: str | None) -> torch.device:
    import torch

    if name in _AUTO_DEVICES:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available: use --device cpu")
    return device


def cpu_threads() -> int:
    """Threads per training process on the CPU: ``$KDCLAIMS_CPU_THREADS``, default 1.

    Small models gain little from intra-op threads, and oversubscribed OpenMP threads (two xdist
    workers, or any other busy process, on two cores) made one ResNet member 60x slower in our
    measurements. Parallelism comes from training members in parallel processes instead.
    """
    try:
        return max(1, int(os.environ.get("KDCLAIMS_CPU_THREADS", "1")))
    except ValueError:
        raise ConfigError("KDCLAIMS_CPU_THREADS must be a positive integer") from None


def checkpoint_every_from_env() -> int | None:
    """``$KDCLAIMS_CHECKPOINT_EVERY``: checkpoint every N epochs (0: never); unset: about once a minute."""
    text = os.environ.get("KDCLAIMS_CHECKPOINT_EVERY", "").strip()
    if not text:
        return None
    try:
        value = int(text)
        if value < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"KDCLAIMS_CHECKPOINT_EVERY={text!r} is invalid: give a number of epochs "
                          "(0 turns checkpoints off), or leave it unset for about once a minute") from None
    return value


def versions() -> dict:
    import torch

    return {"kdclaims": kdclaims.__version__, "torch": torch.__version__, "python": platform.python_version()}


@dataclass
class Population:
    """A population's members as numpy arrays (no torch needed to read or evaluate them); ``test_logits``,
    ``test_accuracy`` and ``test_loss`` are torch views of the same memory, for torch code (they import torch)."""

    spec: PopulationSpec
    seeds: tuple[int, ...]
    keys: tuple[str, ...]
    test_logits_array: np.ndarray  # (S, N_test, C) float32
    test_accuracy_array: np.ndarray  # (S,) float64
    test_loss_array: np.ndarray  # (S,) float64
    members_meta: list[dict] = field(repr=False)
    trained_now: int = 0  # members trained for this call, here or by the backend's workers (0 when cached)
    # seeds that failed after the backend's retries: left out of seeds/keys/logits (empty when complete)
    failed_seeds: tuple[int, ...] = ()
    failures: dict = field(default_factory=dict, repr=False)  # seed -> the last error, for the failed seeds
    report: object = field(default=None, repr=False)  # the backend's BackendReport for this call (None: loaded)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def test_logits(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.test_logits_array)

    @property
    def test_accuracy(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.test_accuracy_array)

    @property
    def test_loss(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.test_loss_array)

    def values(self, metric: str, teacher_logits, labels) -> np.ndarray:
        """One float64 value per member (S,) of ``metric``, against the teacher's test logits where it compares
        (numpy arrays or torch tensors; see ``kdclaims.metrics``)."""
        return metrics.evaluate_metric(metric, self.test_logits_array, teacher_logits, labels)

    @property
    def wall_time_s(self) -> float:
        """Device time spent training the members (each member's share where several shared the device)."""
        return float(sum(m.get("device_time_s", m.get("wall_time_s", 0.0)) for m in self.members_meta))


class PopulationIncomplete(UserWarning):
    """Some members of a population failed after the backend's retries; the rest were used."""


@dataclass(frozen=True)
class WorkbenchSpec:
    """What a worker needs to rebuild a ``Workbench`` that computes the same member keys: small and picklable.

    ``device`` is the device as requested (``auto`` picks CUDA where the worker has it), not the driver's
    resolved one; ``data_dir`` is the driver's resolved data directory (the real CIFAR-100 must be at that
    path on every worker; the smoke profile's synthetic data is regenerated, identically, under the cache).
    """

    profile: Profile
    cache_dir: str
    data_dir: str
    device: str | None = None
    checkpoint_every: int | None = None
    cpu_threads: int = 1
    concurrent_members: int = 1

    def build(self, cache_dir: Path | str | None = None, data_dir: Path | str | None = None) -> "Workbench":
        """The workbench, on this spec's cache (or on ``cache_dir``: a worker without the shared cache)."""
        return Workbench(self.profile, cache_dir or self.cache_dir, data_dir or self.data_dir, self.device,
                         progress=False, checkpoint_every=self.checkpoint_every,
                         concurrent_members=self.concurrent_members)


class Workbench:
    def __init__(self, profile: Profile, cache_dir: Path | str | None = None, data_dir: Path | str | None = None,
                 device: str | None = None, progress: bool = True, console=None,
                 checkpoint_every: int | None | str = "env", backend=None, concurrent_members: int = 1):
        """``backend``: a backend instance (``kdclaims.backends``), a registered name, or None for ``local``.

        ``concurrent_members``: how many members of one population the local backend trains at once on
        this device (``kdclaims.training.train_members``). It changes the speed, never the result (each
        member computes what it would alone), so it is not part of any key; each member records it.
        """
        self.profile = profile
        keep_freed_arrays_on_the_heap()  # the metrics' temporaries: see kdclaims.arrays
        self.backend = get_backend(backend or "local") if backend is None or isinstance(backend, str) else backend
        self.concurrent_members = check_concurrent_members(self.backend, concurrent_members)
        self.cache = Cache(cache_dir or default_cache_dir())
        # epochs between checkpoints; None: about once a minute (DEFAULT_CHECKPOINT_INTERVAL_S); 0: never
        self.checkpoint_every = checkpoint_every_from_env() if checkpoint_every == "env" else checkpoint_every
        self.quarantined: list[Path] = []  # corrupt entries this workbench moved aside (and retrained)
        check_data_dir(profile.dataset, data_dir, profile.name)
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir(self.cache.root)
        self.device_request = device  # as asked ("auto", "cuda", ...): what a worker resolves for itself
        self._device = None
        self._cpu_threads = cpu_threads()  # a bad $KDCLAIMS_CPU_THREADS fails now, not at the first member trained
        if device not in (*_AUTO_DEVICES, "cpu"):
            self.device  # a GPU asked for by name is checked now (this imports torch); "auto" and "cpu" cannot fail
        self.progress = progress
        self.console = console
        # Where progress records go besides the bar (``kdclaims.progress.ProgressChannel``: the pytest
        # plugin's run-wide view); None: nowhere.
        self.progress_sink = None
        self._teachers: dict[str, MemberRecord] = {}
        self._initial_models: dict[str, torch.nn.Module] = {}
        self._populations: dict[tuple[PopulationSpec, int | None], Population] = {}  # by (spec, member limit)
        self._member_values: dict[tuple[PopulationSpec, str, int | None], np.ndarray] = {}
        self._member_keys: dict[tuple[PopulationSpec, int], str] = {}

    @property
    def device(self) -> torch.device:
        """The device members train on, resolved (and torch's CPU threads set) when first needed: a warm run
        never asks, so never imports torch."""
        if self._device is None:
            import torch

            self._device = resolve_device(self.device_request)
            if self._device.type == "cpu":
                torch.set_num_threads(self._cpu_threads)
        return self._device

    def spec(self) -> WorkbenchSpec:
        """The picklable description a worker rebuilds this workbench from (see ``WorkbenchSpec``)."""
        # A dataset made by kdclaims reads no data dir (and a worker's Workbench refuses one).
        data_dir = str(self.data_dir) if get_dataset(self.profile.dataset.kind).uses_data_dir else None
        return WorkbenchSpec(self.profile, str(self.cache.root), data_dir, self.device_request,
                             self.checkpoint_every, cpu_threads(), self.concurrent_members)

    # -- data ------------------------------------------------------------------------------------

    def dataset_path(self) -> Path:
        """Where this profile's dataset is, as its kind's registered locator finds (or makes) it."""
        spec = self.profile.dataset
        try:
            return get_dataset(spec.kind)(spec, self.data_dir, self.cache.root)
        except OSError as exc:  # a locator that writes (the synthetic data goes under the cache) could not
            if exc.errno in (None, 0):
                raise DataError(f"cannot prepare the {spec.kind} dataset in {self.data_dir}: {exc}") from exc
            raise self.cache._os_error(Path(exc.filename) if exc.filename else self.data_dir, exc) from exc

    def check_data(self) -> Path:
        """Fail fast, before any training, when the profile's data is not there."""
        return self.dataset_path()

    @cached_property
    def dataset(self) -> Dataset:
        """The whole dataset, images included: only training (``data``) reads it. Everything else reads
        ``dataset_summary``, which a warm run gets without loading this."""
        dataset = load_dataset(self.dataset_path(), summaries_dir=self.cache.datasets_dir)
        summary = self.__dict__.get("dataset_summary")
        # This run's member keys came from the summary: a summary read from the cache that the dataset
        # contradicts (a forged sidecar, or the file replaced since) must stop it; the load rewrote the sidecar.
        if summary is not None and summary != dataset.to_summary():
            raise DataError(f"the dataset summary recorded in {self.cache.datasets_dir} does not match "
                            f"{dataset.source} (rewritten now from the dataset itself): run again")
        return dataset

    @cached_property
    def dataset_summary(self) -> DatasetSummary:
        """What everything but training reads of the dataset (member keys, model configs, test labels, the
        evaluation's record of it): the summary a full load recorded in the cache for these exact bytes, else
        the dataset's own, loaded in full (which records it for the next run)."""
        if "dataset" not in self.__dict__:
            summary = read_dataset_summary(self.dataset_path(), self.cache.datasets_dir)
            if summary is not None:
                return summary
        return self.dataset.to_summary()

    @cached_property
    def known_dataset(self) -> KnownDataset:
        """What every load checks a cached member against: its shapes, and its accuracy, loss and finite flag
        recomputed from its logits and these test labels (a forged or damaged entry is quarantined)."""
        summary = self.dataset_summary
        return KnownDataset(summary.test_labels_array, summary.num_classes, summary.num_train)

    @cached_property
    def data(self) -> PreparedData:
        from kdclaims.training import PreparedData

        return PreparedData.from_dataset(self.dataset, self.image_size, self.device)

    @property
    def image_size(self) -> int:
        """The size the models see: the profile's, or the stored one when the profile leaves it open."""
        return self.profile.dataset.image_size or int(self.dataset_summary.image_shape[-1])

    def model_config(self, arch: str) -> dict:
        """``arch``'s build keywords under this profile, with the class count, image size and channels of the data."""
        return self.profile.model_config(arch, self.dataset_summary.num_classes, self.image_size,
                                         int(self.dataset_summary.image_shape[0]))

    # -- keys ------------------------------------------------------------------------------------

    def soft_target_config(self, spec: PopulationSpec) -> dict | None:
        """What the soft targets are, for the key: the teacher's own key, or the noise's name and seed."""
        setup = get_setup(spec.setup)
        if setup.uses_teacher:
            return {"kind": "teacher", "teacher_key": self.member_key(teacher_spec(spec.arch), TEACHER_SEED)}
        if setup.noise is not None:
            return {"kind": setup.noise_name, "seed": NOISE_SEED}
        return None  # no KD term

    def member_config(self, spec: PopulationSpec, seed: int) -> dict:
        """Everything that changes what a member computes; its hash is the cache key."""
        return {
            "schema": CACHE_SCHEMA,
            "arch": spec.arch,
            "model": self.model_config(spec.arch),
            "recipe": dataclasses.asdict(self.profile.recipe(spec.arch)),
            "setup": spec.setup,
            "alpha": spec.alpha,
            "temperature": spec.temperature,
            "soft_targets": self.soft_target_config(spec),
            "data": {"fingerprint": self.dataset_summary.fingerprint, "image_size": self.image_size},
            "init_seed": INIT_SEED,
            "seed": seed,
            "precision": self.profile.precision,
        }

    def member_key(self, spec: PopulationSpec, seed: int) -> str:
        """The hash of ``member_config``, computed once per member: a warm run asks for each key several times
        (what is missing, the population, its teacher), and building a config costs ~1 ms."""
        if (spec, seed) not in self._member_keys:
            self._member_keys[(spec, seed)] = hash_config(self.member_config(spec, seed))
        return self._member_keys[(spec, seed)]

    # -- training --------------------------------------------------------------------------------

    def initial_model(self, arch: str) -> torch.nn.Module:
        """M_0: the architecture initialised from seed 0, shared by the teacher and every student."""
        if arch not in self._initial_models:
            import torch

            from kdclaims.models import build_model

            torch.manual_seed(INIT_SEED)
            config = self.model_config(arch)
            self._initial_models[arch] = build_model(arch, **config)
        return self._initial_models[arch]

    def teacher(self, arch: str) -> MemberRecord:
        if arch not in self._teachers:
            self._teachers[arch] = self.ensure_member(teacher_spec(arch), TEACHER_SEED)
        return self._teachers[arch]

    def soft_logits(self, spec: PopulationSpec) -> torch.Tensor | None:
        """The (N_train, C) soft targets of loss (1) for ``spec``'s setup, or None when it has no KD term."""
        setup = get_setup(spec.setup)
        if setup.uses_teacher:
            return self.teacher(spec.arch).train_logits
        if setup.noise is not None:
            from kdclaims.training import noise_teacher_logits

            return noise_teacher_logits(setup.noise_name, self.dataset_summary.num_train,
                                        self.dataset_summary.num_classes)
        return None

    def _load_or_quarantine(self, key: str) -> MemberRecord | None:
        """The cached member; a corrupt entry is moved aside (never used, kept as evidence) and None returned."""
        try:
            return self.cache.load(key, self.known_dataset)
        except CorruptEntry as exc:
            moved = self.cache.quarantine(self.cache.member_path(key), exc.problem, "retraining it")
            self.quarantined.append(moved)
            return None

    def checkpointer(self, key: str) -> Checkpointer | None:
        if self.checkpoint_every == 0:
            return None
        from kdclaims.checkpoint import Checkpointer

        return Checkpointer(self.cache.checkpoint_path(key), key, every_epochs=self.checkpoint_every,
                            quarantine_dir=self.cache.quarantine_dir)

    def ensure_member(self, spec: PopulationSpec, seed: int, on_epoch=None) -> MemberRecord:
        """The cached member, trained first if missing. The lock makes that happen once across processes.

        A corrupt entry is quarantined and retrained; a member interrupted earlier resumes from its
        checkpoint. The returned record's ``fresh`` says whether this call trained it.
        """
        return self.ensure_members(spec, [seed], on_epoch)[0]

    def ensure_members(self, spec: PopulationSpec, seeds: list[int], on_epoch=None) -> list[MemberRecord]:
        """``ensure_member`` for several members of one population at once: the missing ones train
        concurrently on this workbench's device (``kdclaims.training.train_members``), each computing
        what it would compute alone. Their locks are taken in key order, the same in every process, so
        two processes asking for overlapping members wait for each other instead of deadlocking.
        """
        keys = [self.member_key(spec, seed) for seed in seeds]
        records: dict[str, MemberRecord] = {}
        for key in keys:
            try:
                record = self.cache.load(key, self.known_dataset)
            except CorruptEntry:
                record = None  # dealt with under the lock, where no other process is replacing it
            if record is not None:
                records[key] = record
        # once each: a seed asked for twice must not take its own lock twice
        missing = list({key: (seed, key) for seed, key in zip(seeds, keys) if key not in records}.values())
        if missing:
            soft = self.soft_logits(spec)  # before taking the members' locks: the teacher has its own
            self.cache.check_writable()  # fail before training, not after it
            with contextlib.ExitStack() as locks:
                for _, key in sorted(missing, key=lambda item: item[1]):
                    locks.enter_context(self.cache.member_lock(key))
                to_train = []
                for seed, key in missing:
                    record = self._load_or_quarantine(key)  # another process may have trained it while we waited
                    if record is not None:
                        records[key] = record
                    else:
                        to_train.append((seed, key))
                if to_train:
                    records.update(self._train_and_store(spec, to_train, soft, on_epoch))
        if TEACHER_SEED in seeds and spec == teacher_spec(spec.arch):  # kept: every KD student reads it
            self._teachers[spec.arch] = records[keys[seeds.index(TEACHER_SEED)]]
        return [records[key] for key in keys]

    def adopt_member_file(self, key: str, data: bytes, where: str) -> None:
        """Store a member file trained elsewhere (by a Ray worker without this cache, or the driver's teacher
        sent to such a worker) unless a sound copy is cached: verified in full first (``where`` names it in
        the error), stored once under the member's lock, a corrupt copy quarantined and replaced."""
        if self.cache.has(key) and self._load_or_quarantine(key) is not None:
            return
        verify_entry_bytes(key, data, where)
        with self.cache.member_lock(key):
            if self._load_or_quarantine(key) is None:
                self.cache.store_bytes(key, data)

    def _train_and_store(self, spec: PopulationSpec, members: list[tuple[int, str]], soft, on_epoch) -> dict:
        """Train ``members`` ((seed, key) pairs whose locks the caller holds) together and store each."""
        import torch

        from kdclaims.training import MemberJob, train_members

        jobs = [MemberJob(copy.deepcopy(self.initial_model(spec.arch)).to(self.device), seed, self.checkpointer(key),
                          keep_train_logits=(seed == TEACHER_SEED), on_epoch=on_epoch)
                for seed, key in members]
        trained = train_members(jobs, self.data, self.profile.recipe(spec.arch), soft, spec.alpha or 0.0,
                                spec.temperature, precision=self.profile.precision)
        records = {}
        for (seed, key), job, member in zip(members, jobs, trained):
            tensors = {"test_logits": member.test_logits}
            if member.train_logits is not None:
                tensors["train_logits"] = member.train_logits
            meta = {
                "config": self.member_config(spec, seed),
                "population": spec.name,
                "seed": seed,
                "profile": self.profile.name,
                "test_accuracy": member.test_accuracy,
                "test_loss": member.test_loss,
                "finite": bool(torch.isfinite(member.test_logits).all()),
                "wall_time_s": member.wall_time_s,  # of the whole group trained together
                "concurrent": member.concurrent,  # members that shared the device with it, itself included
                "device_time_s": member.wall_time_s / member.concurrent,  # its share of the device
                "resumed_from_epoch": member.resumed_from_epoch,
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "versions": versions(),
                "pid": os.getpid(),
                "host": platform.node(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            record = self.cache.store(key, tensors, meta)
            if job.checkpoint is not None:
                job.checkpoint.remove()  # only now: a crash before the store resumes from it
            record.fresh = True
            records[key] = record
        return records

    def missing_seeds(self, spec: PopulationSpec, members: int | None = None) -> list[int]:
        """The seeds of ``spec``'s first ``members`` (default: all the profile's) that the cache lacks."""
        return [s for s in self.profile.seeds[:members] if not self.cache.has(self.member_key(spec, s))]

    def member_seeds(self, spec: PopulationSpec, members: int | None = None) -> tuple[int, ...]:
        """The seeds a population limited to ``members`` is built from: the profile's first ``members`` seeds,
        then every later seed already cached (it costs nothing: a sequential look uses it). None: all seeds."""
        if members is None:
            return tuple(self.profile.seeds)
        beyond = self.profile.seeds[members:]
        return tuple(self.profile.seeds[:members]) + tuple(s for s in beyond
                                                           if self.cache.has(self.member_key(spec, s)))

    def train_members(self, requests: list[tuple[PopulationSpec, int]], name: str | None = None):
        """Hand the members of ``requests`` that are not cached to the backend; the teachers they distil from
        are trained first (a KD student needs its teacher's training-set logits). Returns the backend's
        ``BackendReport`` (members done, trained now, failed after retries, retried). Nothing cached is
        ever handed out; a teacher that fails raises a KdclaimsError, since no student can train without it.
        """
        requests = [(spec, seed) for spec, seed in dict.fromkeys(requests)
                    if not self.cache.has(self.member_key(spec, seed))]
        report = BackendReport(self.backend.name)
        if not requests:
            return report
        archs = dict.fromkeys(spec.arch for spec, _ in requests if get_setup(spec.setup).uses_teacher)
        teachers = [(teacher_spec(arch), TEACHER_SEED) for arch in archs
                    if not self.cache.has(self.member_key(teacher_spec(arch), TEACHER_SEED))]
        requests = [r for r in requests if r not in teachers]
        names = {spec.name for spec, _ in requests}
        label = name or (names.pop() if len(names) == 1 else f"{len(requests)} members")
        with self._progress(label, len(teachers) + len(requests)) as progress:
            if teachers:
                progress.member_label = lambda seed: f"teacher of {', '.join(sorted({s.arch for s, _ in teachers}))}"
                report.merge(self.backend.train_members(self, teachers, progress))
                if report.failed:
                    (spec, _), error = next(iter(report.failed.items()))
                    raise KdclaimsError(f"the teacher of {spec.arch} (seed {TEACHER_SEED}) failed on the "
                                        f"{self.backend.name} backend, so no student distilled from it can train: "
                                        f"{error}")
            if requests:
                progress.member_label = lambda seed: f"{label} seed {seed}"
                report.merge(self.backend.train_members(self, requests, progress))
        return report

    def population(self, spec: PopulationSpec, members: int | None = None) -> Population:
        """``spec``'s population, its missing members trained first. ``members`` (a sequential look): train only
        the profile's first ``members`` seeds and use the later ones only where already cached
        (``member_seeds``); the cache keys are the same either way."""
        if (spec, members) in self._populations:
            return self._populations[(spec, members)]
        if not self.profile.seeds:
            raise ConfigError("the population is empty: give at least two seeds (--seeds 2 or more)")
        wanted = self.member_seeds(spec, members)
        required = self.profile.seeds[:members]  # cached-beyond members that fail to load are simply left out
        missing = self.missing_seeds(spec, members)
        if TEACHER_SEED in missing:
            raise ConfigError("seed 0 is the teacher and cannot be a student seed")
        self._emit({"event": "population", "name": spec.name, "to_train": len(missing),
                    "cached": len(wanted) - len(missing)})
        report = self.train_members([(spec, seed) for seed in missing], name=spec.name)
        records: dict[int, MemberRecord] = {}
        failed = {seed: report.failed[(spec, seed)] for seed in wanted if (spec, seed) in report.failed}
        for attempt in range(2):  # a second round only for entries found corrupt while loading them
            for seed in wanted:
                if seed in records or seed in failed:
                    continue
                record = report.records.get((spec, seed)) or self._load_or_quarantine(self.member_key(spec, seed))
                if record is not None:
                    records[seed] = record
            lost = [seed for seed in required if seed not in records and seed not in failed]
            if not lost:
                break
            if attempt == 0:  # quarantined (corrupt) or removed meanwhile: train them again
                report.merge(again := self.train_members([(spec, seed) for seed in lost], name=spec.name))
                failed.update({seed: again.failed[(spec, seed)] for seed in lost if (spec, seed) in again.failed})
            else:
                failed.update({seed: "not in the cache after training" for seed in lost})
        seeds = tuple(seed for seed in wanted if seed in records)
        if failed:
            named = ", ".join(str(seed) for seed in sorted(failed))
            first = failed[min(failed)]
            if len(seeds) < 2:
                raise KdclaimsError(f"population {spec.name}: {len(failed)} member(s) failed on the "
                                    f"{self.backend.name} backend after retries (seeds {named}; seed {min(failed)}: "
                                    f"{first}), leaving {len(seeds)}: a z-test needs at least 2; fix the cause and "
                                    "run again (finished members are kept in the cache)")
            warnings.warn(f"kdclaims: population {spec.name} is built from {len(seeds)} of "
                          f"{len(wanted)} members: seeds {named} failed on the {self.backend.name} "
                          f"backend after retries (seed {min(failed)}: {first}); run again to retry them",
                          PopulationIncomplete, stacklevel=2)
        chosen = [records[seed] for seed in seeds]
        population = Population(
            spec=spec,
            seeds=seeds,
            keys=tuple(r.key for r in chosen),
            test_logits_array=np.stack([r.test_logits_array for r in chosen]),
            test_accuracy_array=np.array([r.meta["test_accuracy"] for r in chosen], dtype=np.float64),
            test_loss_array=np.array([r.meta["test_loss"] for r in chosen], dtype=np.float64),
            members_meta=[r.meta for r in chosen],
            # what was trained for this call (here or by the backend's workers), not what was missing
            trained_now=sum((spec, seed) in report.trained for seed in seeds),
            failed_seeds=tuple(sorted(failed)),
            failures=dict(sorted(failed.items())),
            report=report,
        )
        # A sequential look supersedes the same population's earlier looks: keep one (its logits are the memory)
        for stale in [key for key in self._populations if key[0] == spec and key[1] != members]:
            del self._populations[stale]
        for stale in [key for key in self._member_values if key[0] == spec and key[2] != members]:
            del self._member_values[stale]
        self._populations[(spec, members)] = population
        self._emit({"event": "population_done", "name": spec.name, "trained": population.trained_now})
        return population

    def member_values(self, spec: PopulationSpec, metric: str, members: int | None = None) -> np.ndarray:
        """One float64 value per member of ``spec``'s population (limited as ``population``'s ``members``) on
        ``metric``, against its teacher's test logits (or the test labels), computed once per workbench: many
        claims, and the run's population records, ask for the same ones. Read-only (shared by every caller)."""
        key = (spec, metric, members)
        if key not in self._member_values:
            values = self.population(spec, members).values(metric, self.teacher(spec.arch).test_logits_array,
                                                  self.dataset_summary.test_labels_array)
            values.flags.writeable = False
            self._member_values[key] = values
        return self._member_values[key]

    def _emit(self, record: dict) -> None:
        if self.progress_sink is not None:
            self.progress_sink(record)

    def _progress(self, name: str, to_train: int):
        return _MemberProgress(name, to_train, enabled=self.progress and to_train > 0, console=self.console,
                               sink=self.progress_sink)


class _MemberProgress:
    """A rich progress bar over the members still to train: done, running, failed and queued, and within a
    member trained in this process its epoch. A backend reports through ``started``, ``member``,
    ``failed``, ``retrying`` and ``epoch``; ``counts`` is what the bar shows. Each event also goes to
    ``sink`` (the run-wide view of ``kdclaims.progress``), naming the member by ``member_label(seed)``."""

    def __init__(self, name: str, total: int, enabled: bool, console=None, sink=None):
        self.name, self.total, self.enabled, self.console, self.sink = name, total, enabled, console, sink
        self.member_label = lambda seed: f"{name} seed {seed}"
        self._in_flight: int | None = None  # the seed the last epoch report belongs to
        self._progress = None
        self.done = self.running = self.failed_count = self.retries = 0
        self.detail = ""

    @property
    def queued(self) -> int:
        return max(0, self.total - self.done - self.running - self.failed_count)

    def counts(self) -> dict:
        return {"done": self.done, "running": self.running, "failed": self.failed_count, "queued": self.queued}

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = self.console or Console(file=sys.__stderr__)
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
            self._progress.start()
            self._task = self._progress.add_task(f"training {self.name}", total=self.total, status=self._status())
        return self

    def _status(self) -> str:
        c = self.counts()
        text = f"done {c['done']} · running {c['running']} · failed {c['failed']} · queued {c['queued']}"
        if self.retries:
            text += f" · retried {self.retries}"
        return f"{text} · {self.detail}" if self.detail else text

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done + self.failed_count, status=self._status())

    def _emit(self, event: str, seed, **fields) -> None:
        if self.sink is not None:
            self.sink({"event": event, "member": self.member_label(seed), **fields})

    def started(self, seed: int | None = None, count: int = 1) -> None:
        self.running += count
        self._in_flight = seed
        self._emit("started", seed)
        self._refresh()

    def epoch(self, epoch: int, epochs: int) -> None:
        self._emit("epoch", self._in_flight, epoch=epoch, epochs=epochs)
        if self._progress is not None:
            self.detail = f"epoch {epoch}/{epochs}"
            self._refresh()

    def member(self, seed: int) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.detail = f"seed {seed} done"
        self._emit("done", seed)
        self._refresh()

    def failed(self, seed: int, error: str = "") -> None:
        self.running = max(0, self.running - 1)
        self.failed_count += 1
        self._emit("failed", seed)
        self.detail = f"seed {seed} failed"
        self._refresh()

    def retrying(self, seed: int, attempt: int) -> None:
        """The member goes back to the queue, to be started again."""
        self.running = max(0, self.running - 1)
        self.retries += 1
        self.detail = f"seed {seed}: retry {attempt}"
        self._refresh()

    def log(self, message: str) -> None:
        """A line above the bar (or on stderr when there is none)."""
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=sys.__stderr__, flush=True)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False
