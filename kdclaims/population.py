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
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

import kdclaims
from kdclaims import metrics
from kdclaims.cache import Cache, CorruptEntry, MemberRecord
from kdclaims.config import (CACHE_SCHEMA, INIT_SEED, NOISE_SEED, TEACHER_SEED, PopulationSpec, Profile,
                             default_cache_dir, default_data_dir, get_dataset, get_setup, hash_config, teacher_spec)
from kdclaims.data import Dataset, load_cifar100
from kdclaims.errors import ConfigError, DataError
from kdclaims.models import build_model
from kdclaims.training import Checkpointer, PreparedData, noise_teacher_logits, train_member


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
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
    return {"kdclaims": kdclaims.__version__, "torch": torch.__version__, "python": platform.python_version()}


@dataclass
class Population:
    spec: PopulationSpec
    seeds: tuple[int, ...]
    keys: tuple[str, ...]
    test_logits: torch.Tensor  # (S, N_test, C) float32
    test_accuracy: torch.Tensor  # (S,) float64
    test_loss: torch.Tensor  # (S,) float64
    members_meta: list[dict] = field(repr=False)
    trained_now: int = 0  # members this process trained for this call (0 when the cache was warm)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def values(self, metric: str, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One value per member (S,) of ``metric``, against the teacher's test logits where it compares."""
        return metrics.evaluate_metric(metric, self.test_logits, teacher_logits, labels)

    @property
    def wall_time_s(self) -> float:
        return float(sum(m.get("wall_time_s", 0.0) for m in self.members_meta))


class Workbench:
    def __init__(self, profile: Profile, cache_dir: Path | str | None = None, data_dir: Path | str | None = None,
                 device: str | None = None, progress: bool = True, console=None,
                 checkpoint_every: int | None | str = "env"):
        self.profile = profile
        self.cache = Cache(cache_dir or default_cache_dir())
        # epochs between checkpoints; None: about once a minute (DEFAULT_CHECKPOINT_INTERVAL_S); 0: never
        self.checkpoint_every = checkpoint_every_from_env() if checkpoint_every == "env" else checkpoint_every
        self.quarantined: list[Path] = []  # corrupt entries this workbench moved aside (and retrained)
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir(self.cache.root)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        self.progress = progress
        self.console = console
        self._teachers: dict[str, MemberRecord] = {}
        self._initial_models: dict[str, torch.nn.Module] = {}
        self._populations: dict[PopulationSpec, Population] = {}

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
        return load_cifar100(self.dataset_path())

    @cached_property
    def data(self) -> PreparedData:
        return PreparedData.from_dataset(self.dataset, self.profile.dataset.image_size, self.device)

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
            "model": self.profile.model_config(spec.arch, self.dataset.num_classes),
            "recipe": dataclasses.asdict(self.profile.recipe(spec.arch)),
            "setup": spec.setup,
            "alpha": spec.alpha,
            "temperature": spec.temperature,
            "soft_targets": self.soft_target_config(spec),
            "data": {"fingerprint": self.dataset.fingerprint, "image_size": self.profile.dataset.image_size},
            "init_seed": INIT_SEED,
            "seed": seed,
            "precision": self.profile.precision,
        }

    def member_key(self, spec: PopulationSpec, seed: int) -> str:
        return hash_config(self.member_config(spec, seed))

    # -- training --------------------------------------------------------------------------------

    def initial_model(self, arch: str) -> torch.nn.Module:
        """M_0: the architecture initialised from seed 0, shared by the teacher and every student."""
        if arch not in self._initial_models:
            torch.manual_seed(INIT_SEED)
            config = self.profile.model_config(arch, self.dataset.num_classes)
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
            return noise_teacher_logits(setup.noise_name, self.dataset.train_labels.shape[0],
                                        self.dataset.num_classes)
        return None

    def _load_or_quarantine(self, key: str) -> MemberRecord | None:
        """The cached member; a corrupt entry is moved aside (never used, kept as evidence) and None returned."""
        try:
            return self.cache.load(key)
        except CorruptEntry as exc:
            moved = self.cache.quarantine(self.cache.member_path(key), exc.problem, "retraining it")
            self.quarantined.append(moved)
            return None

    def checkpointer(self, key: str) -> Checkpointer | None:
        if self.checkpoint_every == 0:
            return None
        return Checkpointer(self.cache.checkpoint_path(key), key, every_epochs=self.checkpoint_every,
                            quarantine_dir=self.cache.quarantine_dir)

    def ensure_member(self, spec: PopulationSpec, seed: int, on_epoch=None) -> MemberRecord:
        """The cached member, trained first if missing. The lock makes that happen once across processes.

        A corrupt entry is quarantined and retrained; a member interrupted earlier resumes from its
        checkpoint. The returned record's ``fresh`` says whether this call trained it.
        """
        key = self.member_key(spec, seed)
        try:
            record = self.cache.load(key)
        except CorruptEntry:
            record = None  # dealt with under the lock, where no other process is replacing it
        if record is not None:
            return record
        soft = self.soft_logits(spec)  # before taking this member's lock: the teacher has its own
        self.cache.check_writable()  # fail before training, not after it
        with self.cache.member_lock(key):
            record = self._load_or_quarantine(key)  # another process may have trained it while we waited
            if record is not None:
                return record
            model = copy.deepcopy(self.initial_model(spec.arch)).to(self.device)
            checkpoint = self.checkpointer(key)
            trained = train_member(model, self.data, self.profile.recipe(spec.arch), seed, soft, spec.alpha or 0.0,
                                   spec.temperature, keep_train_logits=(seed == TEACHER_SEED), on_epoch=on_epoch,
                                   checkpoint=checkpoint)
            tensors = {"test_logits": trained.test_logits}
            if trained.train_logits is not None:
                tensors["train_logits"] = trained.train_logits
            meta = {
                "config": self.member_config(spec, seed),
                "population": spec.name,
                "seed": seed,
                "profile": self.profile.name,
                "test_accuracy": trained.test_accuracy,
                "test_loss": trained.test_loss,
                "finite": bool(torch.isfinite(trained.test_logits).all()),
                "wall_time_s": trained.wall_time_s,
                "resumed_from_epoch": trained.resumed_from_epoch,
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "versions": versions(),
                "pid": os.getpid(),
                "host": platform.node(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            record = self.cache.store(key, tensors, meta)
            if checkpoint is not None:
                checkpoint.remove()  # only now: a crash before the store resumes from it
            record.fresh = True
            return record

    def missing_seeds(self, spec: PopulationSpec) -> list[int]:
        return [s for s in self.profile.seeds if not self.cache.has(self.member_key(spec, s))]

    def population(self, spec: PopulationSpec) -> Population:
        if spec in self._populations:
            return self._populations[spec]
        if not self.profile.seeds:
            raise ConfigError("the population is empty: give at least two seeds (--seeds 2 or more)")
        missing = set(self.missing_seeds(spec))
        if TEACHER_SEED in missing:
            raise ConfigError("seed 0 is the teacher and cannot be a student seed")
        records: list[MemberRecord] = []
        with self._progress(spec, len(missing)) as advance:
            for seed in self.profile.seeds:
                records.append(self.ensure_member(spec, seed, on_epoch=advance.epoch if seed in missing else None))
                if seed in missing:
                    advance.member(seed)
        population = Population(
            spec=spec,
            seeds=tuple(self.profile.seeds),
            keys=tuple(r.key for r in records),
            test_logits=torch.stack([r.test_logits for r in records]),
            test_accuracy=torch.tensor([r.meta["test_accuracy"] for r in records], dtype=torch.float64),
            test_loss=torch.tensor([r.meta["test_loss"] for r in records], dtype=torch.float64),
            members_meta=[r.meta for r in records],
            trained_now=sum(r.fresh for r in records),  # what this process trained, not what was missing
        )
        self._populations[spec] = population
        return population

    def _progress(self, spec: PopulationSpec, to_train: int):
        return _MemberProgress(spec.name, to_train, enabled=self.progress and to_train > 0, console=self.console)


class _MemberProgress:
    """A rich progress bar over the members a population still has to train (epochs shown within)."""

    def __init__(self, name: str, total: int, enabled: bool, console=None):
        self.name, self.total, self.enabled, self.console = name, total, enabled, console
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = self.console or Console(file=sys.__stderr__)
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
            self._progress.start()
            self._task = self._progress.add_task(f"training {self.name}", total=self.total, status="")
        return self

    def epoch(self, epoch: int, epochs: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=f"epoch {epoch}/{epochs}")

    def member(self, seed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, status=f"seed {seed} done")

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False
