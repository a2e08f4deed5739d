"""Backends: where the missing members of a population are trained.

``Workbench.population(spec)`` works out which members are missing (a cached member is never handed to a
backend), trains the teacher first where the setup distils from it, and hands the rest to its backend:

- ``local`` (the default): in this process, in seed order, through ``MemberTrainer.ensure_members``: one member
  at a time, or up to ``--concurrent-members`` members of a population at once on the one device. An error
  stops the run, as it always has; parallelism across processes comes from ``pytest -n`` (the cache's locks).
- ``ray``: each member is a Ray task (``kdclaims train --backend ray [--address ...]``, ``pytest claims/
  --backend ray``), on a laptop, a multi-GPU box, a Slurm allocation or Kubernetes alike. A task rebuilds
  the workbench in the worker from a ``WorkbenchSpec`` (profile, cache and data dirs, device) and calls
  ``ensure_members``; keys are content hashes, so it computes the same key, and the member's file lock
  keeps "train if missing" exactly-once even when a task is retried after a partial run. Members share a
  GPU through fractional requests (``gpus_per_member=0.25``) and run on CPUs where the cluster has no GPU.
  Where a worker cannot see the driver's cache directory (checked per task against a marker file the
  driver writes there), it trains into a cache of its own and returns the member file's bytes, which the
  driver verifies and stores. A task that fails, or whose worker dies, is resubmitted up to
  ``max_retries`` times; then the member is reported as failed and the rest of the population completes.

A backend is anything with a ``name`` and ``train_members(trainer, requests, progress) -> BackendReport``;
adding one is one ``register_backend`` call. It sees the workbench only through ``MemberTrainer``: keys,
the cache, "train these members of one population if missing" and "store this member file".
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import platform
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kdclaims.errors import ConfigError, KdclaimsError
from kdclaims.registry import Registry
from kdclaims.setups import TEACHER_SEED, get_setup
from kdclaims.spec import PopulationSpec, teacher_spec

if TYPE_CHECKING:
    from kdclaims.cache import Cache, MemberRecord

Request = tuple[PopulationSpec, int]  # (population, seed): one member

RAY_INSTALL_MESSAGE = "--backend ray needs Ray: pip install -e '.[ray]'"
DEFAULT_MAX_RETRIES = 2


@dataclass
class BackendReport:
    """What a backend did with the members it was handed."""

    backend: str
    done: list[Request] = field(default_factory=list)  # in the cache now (trained now, or found there)
    trained: set[Request] = field(default_factory=set)  # trained by this call (a worker found the rest cached)
    failed: dict[Request, str] = field(default_factory=dict)  # failed after every retry: the last error
    retried: dict[Request, list[str]] = field(default_factory=dict)  # the errors of the attempts that were retried
    submitted: int = 0  # members handed out, retries included (tasks, for the ray backend)
    records: dict[Request, "MemberRecord"] = field(default_factory=dict, repr=False)  # already in memory (local)
    # per member, for the ray backend: task_s (submit to stored, seen by the driver), worker_s (inside the task),
    # train_s (the training loop, from the member's metadata), pid, host, shared (trained into the shared cache)
    timings: dict[Request, dict] = field(default_factory=dict, repr=False)
    interrupted: bool = False

    @property
    def retries(self) -> int:
        return sum(len(errors) for errors in self.retried.values())

    def merge(self, other: "BackendReport") -> "BackendReport":
        self.done += [r for r in other.done if r not in self.done]
        self.trained |= other.trained
        self.failed.update(other.failed)
        for request, errors in other.retried.items():
            self.retried.setdefault(request, []).extend(errors)
        self.submitted += other.submitted
        self.records.update(other.records)
        self.timings.update(other.timings)
        self.interrupted = self.interrupted or other.interrupted
        for request in other.done:  # done later (a second round) overrides an earlier failure
            self.failed.pop(request, None)
        return self

    def summary(self) -> str:
        text = (f"{self.backend}: {len(self.done)} done ({len(self.trained)} trained now), {len(self.failed)} failed, "
                f"{self.retries} retried, {self.submitted} submitted")
        return text + (", interrupted" if self.interrupted else "")


class MemberTrainer(Protocol):
    """What a backend may use of the workbench that hands it members (``kdclaims.population.Workbench``)."""

    cache: "Cache"  # where the members are stored
    concurrent_members: int  # members of one population to train at once on this process's device
    device_request: str | None  # the device as asked ("auto", "cuda", "cpu"): what a worker resolves for itself

    def member_key(self, spec: PopulationSpec, seed: int) -> str: ...

    def ensure_members(self, spec: PopulationSpec, seeds: list[int], on_epoch=None) -> list["MemberRecord"]:
        """The members of one population, each trained here (together) first if it is not cached."""

    def adopt_member_file(self, key: str, data: bytes, where: str) -> None:
        """Store a member file trained elsewhere, verified in full, unless a sound copy is cached."""

    def spec(self):
        """A small, picklable description with ``cache_dir``, ``cpu_threads`` and ``build(cache_dir=...)``,
        which gives the same MemberTrainer in another process (same keys: they are content hashes)."""


@runtime_checkable
class Backend(Protocol):
    name: str

    def train_members(self, trainer: MemberTrainer, requests: list[Request], progress) -> BackendReport:
        """Make every member of ``requests`` exist in ``trainer.cache`` (none of them is cached yet, and
        their teachers are); report which are done, trained now, failed and retried. ``progress`` takes
        ``started(seed)``, ``member(seed)``, ``failed(seed, error)``, ``retrying(seed, attempt)``,
        ``epoch(epoch, epochs)`` and ``log(line)``."""
        ...


BACKENDS: Registry[Callable[..., Backend]] = Registry("backend")


def register_backend(name: str, factory: Callable[..., Backend]) -> Callable[..., Backend]:
    """Adding a backend is this one call: ``factory(**options)`` returns the backend (options it does not
    take are refused with a one-line error naming them)."""
    if not callable(factory):
        raise ConfigError(f"the factory of backend {name!r} is not callable")
    return BACKENDS.register(name, factory)


def get_backend(name: str, **options: Any) -> Backend:
    """The backend registered as ``name``, built with ``options`` (those that are None are left out)."""
    factory = BACKENDS.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in options if k not in params]
        if unknown:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in unknown)
            raise ConfigError(f"{flags} does not apply to --backend {name}"
                              + ("; use --backend ray" if name == "local" and "ray" in BACKENDS else ""))
    return factory(**options)


# ---------------------------------------------------------------------------------------------
# local
# ---------------------------------------------------------------------------------------------


def _is_teacher(request: Request) -> bool:
    spec, seed = request
    return seed == TEACHER_SEED and spec == teacher_spec(spec.arch)


class LocalBackend:
    """In this process, in the order given: ``MemberTrainer.ensure_members``, up to the trainer's
    ``concurrent_members`` members of one population at a time (concurrently on its device; 1: one by one)."""

    name = "local"
    trains_concurrently = True  # honours the workbench's concurrent_members

    def train_members(self, trainer: MemberTrainer, requests: list[Request], progress) -> BackendReport:
        report = BackendReport(self.name)
        for spec, seeds in _groups(requests, trainer.concurrent_members):
            for seed in seeds:
                progress.started(seed)
            records = trainer.ensure_members(spec, seeds, on_epoch=progress.epoch)
            for seed, record in zip(seeds, records):
                request = (spec, seed)
                report.submitted += 1
                report.done.append(request)
                report.records[request] = record
                if record.fresh:
                    report.trained.add(request)
                progress.member(seed)
        return report


def check_concurrent_members(backend: Backend, count) -> int:
    """``count`` members at once per device, if ``backend`` can do that (it says so with
    ``trains_concurrently = True``); otherwise, or for anything but a whole number >= 1, a ConfigError."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"--concurrent-members {count!r}: concurrent members must be a whole number of at least 1")
    if count > 1 and not getattr(backend, "trains_concurrently", False):
        raise ConfigError(f"--concurrent-members {count} applies to --backend local; the {backend.name} backend "
                          "trains one member per task (to share a GPU between members there, use --gpus-per-member, "
                          "e.g. 0.25)")
    return count


def _groups(requests: list[Request], size: int) -> list[tuple[PopulationSpec, list[int]]]:
    """Consecutive members of the same population, at most ``size`` at a time, in the order given."""
    groups: list[tuple[PopulationSpec, list[int]]] = []
    for spec, seed in requests:
        if groups and groups[-1][0] == spec and len(groups[-1][1]) < size:
            groups[-1][1].append(seed)
        else:
            groups.append((spec, [seed]))
    return groups


# ---------------------------------------------------------------------------------------------
# ray
# ---------------------------------------------------------------------------------------------


def import_ray():
    """Ray, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_INSTALL_MESSAGE) from None
    return ray


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is invalid: use 1 or 0")


class RayBackend:
    """Members as Ray tasks. ``address``: a running cluster (``auto``, ``host:6379``, ``ray://...``); None
    connects to ``$RAY_ADDRESS`` or starts a local cluster (of ``num_cpus`` CPUs). Ray is initialised on the
    first member to train (never when everything is cached), and only if it is not initialised already.

    ``gpus_per_member``: the GPU fraction each member asks for where the cluster has GPUs (default 1; 0.25
    puts four members on a GPU); on a cluster without GPUs each member asks for one CPU. ``max_retries``:
    how many times a failed member is resubmitted (the driver resubmits, so each retry and its cause is in
    the report). ``return_artefacts``: True makes every worker train into a cache of its own and return
    the member file's bytes for the driver to store (default: only workers that cannot see the driver's
    cache directory do; ``$KDCLAIMS_RAY_RETURN_ARTEFACTS=1`` forces it). ``max_in_flight``: members
    submitted at once (default: as many as the cluster's resources fit, re-read as nodes come and go).
    ``task_hook``: a picklable ``hook(spec, seed)`` run in the worker before each member (instrumentation).
    """

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_member: float | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, num_cpus: int | None = None,
                 return_artefacts: bool | None = None, max_in_flight: int | None = None,
                 task_hook: Callable[[PopulationSpec, int], None] | None = None,
                 init_options: dict | None = None):
        self.ray = import_ray()
        if gpus_per_member is not None:
            gpus_per_member = float(gpus_per_member)
            if not (gpus_per_member > 0) or (gpus_per_member > 1 and not gpus_per_member.is_integer()):
                raise ConfigError(f"--gpus-per-member {gpus_per_member:g} is invalid: give a fraction in (0, 1] "
                                  "(0.25: four members share a GPU) or a whole number of GPUs")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"--max-retries {max_retries!r} is invalid: give a whole number >= 0")
        if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
            raise ConfigError(f"max_in_flight {max_in_flight!r} is invalid: give a whole number >= 1")
        self.address = address or None
        self.gpus_per_member = gpus_per_member
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        env = _env_flag("KDCLAIMS_RAY_RETURN_ARTEFACTS")
        self.return_artefacts = bool(return_artefacts if return_artefacts is not None else env)
        self.max_in_flight = max_in_flight
        self.task_hook = task_hook
        self.init_options = dict(init_options or {})
        self._remote = None
        self._capacity_cache: tuple[float, int] | None = None
        self._gpu_note_shown = False

    # -- cluster ---------------------------------------------------------------------------------

    def ensure_initialized(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        options = dict(self.init_options)
        options.setdefault("ignore_reinit_error", True)
        if self.address is None and self.num_cpus is not None:
            options.setdefault("num_cpus", self.num_cpus)
        try:
            ray.init(address=self.address, **options)
        except ConnectionError as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {self.address or '$RAY_ADDRESS'}: {exc}; start one "
                              "with `ray start --head` or give --address of a running one") from exc

    def _task(self):
        if self._remote is None:
            # max_retries=0: the driver resubmits failed members itself, so that every retry is visible
            self._remote = self.ray.remote(max_retries=0)(run_member_task)
        return self._remote

    def resources(self, trainer: MemberTrainer, progress=None) -> dict:
        """The Ray resources one member asks for: a GPU fraction where the cluster has GPUs, else one CPU."""
        total = self.ray.cluster_resources()
        wants_gpu = trainer.device_request in (None, "", "auto") or str(trainer.device_request).startswith("cuda")
        if total.get("GPU", 0) > 0 and wants_gpu:
            return {"num_cpus": 1, "num_gpus": self.gpus_per_member or 1}
        if self.gpus_per_member and not self._gpu_note_shown and progress is not None:
            self._gpu_note_shown = True
            progress.log("kdclaims: the Ray cluster has no GPUs (or --device cpu): members run on one CPU each, "
                         "--gpus-per-member is ignored")
        return {"num_cpus": 1}

    def capacity(self, resources: dict) -> int:
        """How many members to keep submitted: what the cluster's resources fit (re-read every few seconds)."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        now = time.monotonic()
        if self._capacity_cache is not None and now - self._capacity_cache[0] < 2.0:
            return self._capacity_cache[1]
        total = self.ray.cluster_resources()
        slots = int(total.get("CPU", 0) // resources.get("num_cpus", 1))
        if resources.get("num_gpus"):
            slots = min(slots, int(total.get("GPU", 0) / resources["num_gpus"] + 1e-9))
        slots = max(1, slots)
        self._capacity_cache = (now, slots)
        return slots

    # -- training --------------------------------------------------------------------------------

    def train_members(self, trainer: MemberTrainer, requests: list[Request], progress) -> BackendReport:
        ray = self.ray
        report = BackendReport(self.name)
        if not requests:
            return report
        trainer.cache.check_writable()  # the driver stores returned members; fail before training anything
        self.ensure_initialized()
        wspec = trainer.spec()
        resources = self.resources(trainer, progress)
        task = self._task().options(**resources)
        keys = {request: trainer.member_key(*request) for request in requests}
        teachers: dict[str, Any] = {}  # arch -> ObjectRef of the teacher's member file (a worker without the cache)
        for spec, _ in requests:
            if get_setup(spec.setup).uses_teacher and spec.arch not in teachers:
                path = trainer.cache.member_path(trainer.member_key(teacher_spec(spec.arch), TEACHER_SEED))
                teachers[spec.arch] = ray.put(path.read_bytes())
        probe = None if self.return_artefacts else _write_probe(trainer.cache.root)
        queue: deque[Request] = deque(requests)
        inflight: dict[Any, tuple[Request, float]] = {}
        attempts: dict[Request, int] = {}

        def submit(request: Request) -> None:
            spec, seed = request
            ref = task.remote(wspec, spec, seed, keys[request], probe, self.return_artefacts,
                              teachers.get(spec.arch) if get_setup(spec.setup).uses_teacher else None,
                              self.task_hook)
            inflight[ref] = (request, time.perf_counter())
            report.submitted += 1
            progress.started(seed)

        def collect(ref, retry: bool = True) -> None:
            request, submitted_at = inflight.pop(ref)
            spec, seed = request
            try:
                out = ray.get(ref)
                if out.get("data") is not None:  # a worker without the shared cache: the driver stores it
                    trainer.adopt_member_file(keys[request], out["data"],
                                              f"{spec.name} seed {seed} returned by a Ray worker")
            except Exception as exc:  # a task error, a dead worker or node, a returned member that fails checks
                error = describe_error(exc)
                attempts[request] = attempts.get(request, 0) + 1
                if retry and attempts[request] <= self.max_retries:
                    report.retried.setdefault(request, []).append(error)
                    progress.retrying(seed, attempts[request])
                    progress.log(f"kdclaims: {spec.name} seed {seed} failed ({error}); retry "
                                 f"{attempts[request]} of {self.max_retries}")
                    queue.appendleft(request)
                else:
                    report.failed[request] = error
                    progress.failed(seed, error)
                    progress.log(f"kdclaims: {spec.name} seed {seed} failed"
                                 + (f" after {self.max_retries} retries" if retry else "") + f": {error}")
                return
            report.done.append(request)
            if out.get("fresh"):
                report.trained.add(request)
            report.timings[request] = {"task_s": time.perf_counter() - submitted_at, "worker_s": out.get("worker_s"),
                                       "train_s": out.get("train_s"), "pid": out.get("pid"), "host": out.get("host"),
                                       "shared": out.get("shared")}
            progress.member(seed)

        try:
            while queue or inflight:
                capacity = self.capacity(resources)
                while queue and len(inflight) < capacity:
                    submit(queue.popleft())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
                for ref in ready:
                    collect(ref)
        except KeyboardInterrupt:
            report.interrupted = True
            if inflight:  # keep what finished meanwhile (a returned member is stored only by the driver)
                with contextlib.suppress(Exception):
                    ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
                    for ref in ready:
                        collect(ref, retry=False)
            for ref in list(inflight):
                with contextlib.suppress(Exception):
                    # force: kill the worker process. A task interrupted softly can be stopped half-way
                    # through `import torch`, leaving that worker unable to train anything afterwards.
                    ray.cancel(ref, force=True)
            progress.log(f"kdclaims: interrupted: {len(report.done)} member(s) finished and are in the cache "
                         f"{trainer.cache.root}; {len(inflight)} running cancelled, {len(queue)} not started; "
                         "run the same command again to resume")
            raise
        finally:
            if probe is not None:
                with contextlib.suppress(OSError):
                    Path(probe[0]).unlink()
        return report

def describe_error(exc: BaseException) -> str:
    """One line for a failed task: the worker's own exception where there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if "RayTaskError(" in name:
        name = name.split("(", 1)[1].rstrip(")")
    return f"{name}: {text[:300]}" if text else name


# ---------------------------------------------------------------------------------------------
# in the worker
# ---------------------------------------------------------------------------------------------


def _write_probe(cache_root: Path) -> tuple[str, str]:
    """A marker file in the driver's cache: a worker that reads it back shares the driver's cache."""
    cache_root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    path = cache_root / f".ray-probe-{token}"
    path.write_text(token)
    return str(path), token


def _sees_probe(probe: tuple[str, str] | None) -> bool:
    if probe is None:
        return False
    try:
        return Path(probe[0]).read_text() == probe[1]
    except OSError:
        return False


def worker_cache_dir(driver_cache: str) -> Path:
    """Where a worker without the driver's cache trains: ``$KDCLAIMS_RAY_WORKER_CACHE`` or a temporary folder."""
    base = os.environ.get("KDCLAIMS_RAY_WORKER_CACHE") or Path(tempfile.gettempdir()) / f"kdclaims-ray-{os.getuid()}"
    return Path(base) / hashlib.sha256(driver_cache.encode()).hexdigest()[:16]


_WORKBENCHES: dict[tuple[str, str], MemberTrainer] = {}  # per worker process: the dataset is loaded once


def _worker_bench(wspec, cache_dir: str) -> MemberTrainer:
    memo = (repr(wspec), cache_dir)
    if memo not in _WORKBENCHES:
        _WORKBENCHES.clear()  # one at a time: a worker serves one run, and a dataset can be large
        _WORKBENCHES[memo] = wspec.build(cache_dir=cache_dir)
    return _WORKBENCHES[memo]


def run_member_task(wspec, spec: PopulationSpec, seed: int, key: str,
                    probe: tuple[str, str] | None, force_return: bool, teacher_file: bytes | None,
                    hook: Callable[[PopulationSpec, int], None] | None) -> dict:
    """One member, in a Ray worker: rebuild the workbench, ``ensure_members``, report (and, without the shared
    cache, return the member file's bytes)."""
    started = time.perf_counter()
    import torch

    os.environ["KDCLAIMS_CPU_THREADS"] = str(wspec.cpu_threads)  # as on the driver (default 1 thread)
    torch.set_num_threads(wspec.cpu_threads)
    shared = not force_return and _sees_probe(probe)
    cache_dir = wspec.cache_dir if shared else str(worker_cache_dir(wspec.cache_dir))
    bench = _worker_bench(wspec, cache_dir)
    if teacher_file is not None and not shared:  # its students distil from the driver's very teacher
        bench.adopt_member_file(bench.member_key(teacher_spec(spec.arch), TEACHER_SEED), teacher_file,
                                f"the teacher of {spec.arch} sent by the driver")
    if hook is not None:
        hook(spec, seed)
    computed = bench.member_key(spec, seed)
    if computed != key:
        raise KdclaimsError(f"this worker ({platform.node()}) computes key {computed[:12]} for {spec.name} seed "
                            f"{seed}, the driver {key[:12]}: its kdclaims, torch, dataset or registrations differ "
                            "from the driver's; install the same on every node")
    record = bench.ensure_members(spec, [seed])[0]
    out = {"key": key, "fresh": bool(record.fresh), "pid": os.getpid(), "host": platform.node(), "shared": shared,
           "train_s": float(record.meta.get("wall_time_s", 0.0)) if record.fresh else 0.0, "data": None}
    if not shared:
        path = bench.cache.member_path(key)
        out["data"] = path.read_bytes()
        if not _is_teacher((spec, seed)):  # the driver keeps it; a teacher stays for this node's students
            with contextlib.suppress(OSError):
                path.unlink()
    out["worker_s"] = time.perf_counter() - started
    return out


register_backend("local", LocalBackend)
register_backend("ray", RayBackend)
