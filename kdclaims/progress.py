"""Progress of a pytest run across xdist workers: one live line on the controller.

Workers (and a run without ``-n``) append small JSON records, one per line, to a file of their own in a
run-scoped directory that the controller names (``<results dir>/progress/<run id>``, handed to each
worker through ``config.workerinput``); a controller thread polls the directory, folds the records into a
:class:`RunProgress` and shows it: on a terminal, one live rich line (members trained / total,
populations done / total, the member in flight on each worker, elapsed, ETA); otherwise, for CI logs,
one line per finished population. Files, not sockets: xdist gives workers no channel to the controller
during a test, and an append-only file per writer needs no locking.

Records (``event`` and its fields):

* ``plan``: ``populations`` (names) and ``teachers`` (architectures) the collected claims need;
* ``population``: ``name``, ``to_train`` (its members not cached), ``cached``;
* ``started`` / ``epoch`` / ``done`` / ``failed``: ``worker``, ``member`` (e.g. "resnet18/kd-a0.5 seed 3"
  or "teacher of resnet18"), ``epoch`` and ``epochs`` for ``epoch``;
* ``population_done``: ``name``, ``trained``;
* ``look`` (``--sequential``): ``group``, ``look`` (1-based), ``looks``, ``members`` (per population at this
  look), ``populations`` (the ones still growing).

Imports no torch (the controller of an xdist run never needs it).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL_SECONDS = 0.5


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class RunProgress:
    """What the controller knows of a run, from the workers' records (see the module docstring)."""

    started_at: float = field(default_factory=time.monotonic)
    populations: set[str] = field(default_factory=set)
    teachers: set[str] = field(default_factory=set)
    seeds_per_population: int = 0
    populations_done: set[str] = field(default_factory=set)
    # population -> its members found cached that this run did not train (a population is announced again at
    # each look of --sequential, and by each worker that loads it: the count is kept per population, not summed)
    cached_by_population: dict[str, int] = field(default_factory=dict)
    # members by name: a worker that waited on another's lock reports the member it then found cached too
    members_done: set[str] = field(default_factory=set)
    members_failed: set[str] = field(default_factory=set)
    in_flight: dict[str, str] = field(default_factory=dict)  # worker -> member (and its epoch)
    looks: dict[str, str] = field(default_factory=dict)  # --sequential: group -> its current look, in words
    finished_lines: list[str] = field(default_factory=list)  # one per finished population, in order

    @property
    def cached(self) -> int:
        return sum(self.cached_by_population.values())

    @property
    def trained(self) -> int:
        return len(self.members_done)

    @property
    def failed(self) -> int:
        return len(self.members_failed - self.members_done)

    @property
    def members_total(self) -> int:
        """Every member the collected claims need, cached or not: their populations' seeds and the teachers."""
        return len(self.populations) * self.seeds_per_population + len(self.teachers)

    def eta_seconds(self, now: float) -> float | None:
        """Remaining members x the wall time per member trained so far (None before the first one ends).
        Under -n the wall time per member already reflects the workers training side by side."""
        if not self.trained:
            return None
        remaining = max(0, self.members_total - self.cached - self.trained - self.failed)
        return remaining * (now - self.started_at) / self.trained

    def apply(self, record: dict) -> None:
        event = record.get("event")
        worker = str(record.get("worker", "main"))
        if event == "plan":
            self.populations.update(record.get("populations", ()))
            self.teachers.update(record.get("teachers", ()))
            self.seeds_per_population = int(record.get("seeds", self.seeds_per_population))
        elif event == "population":
            name = str(record.get("name"))
            trained_here = sum(member.startswith(f"{name} seed ") for member in self.members_done)
            self.cached_by_population[name] = max(self.cached_by_population.get(name, 0),
                                                  int(record.get("cached", 0)) - trained_here)
        elif event == "started":
            self.in_flight[worker] = str(record["member"])
        elif event == "epoch":
            self.in_flight[worker] = f"{record['member']} epoch {record['epoch']}/{record['epochs']}"
        elif event in ("done", "failed"):
            self.in_flight.pop(worker, None)
            (self.members_done if event == "done" else self.members_failed).add(str(record["member"]))
        elif event == "look":
            group = str(record["group"])
            self.looks[group] = (f"{group} look {record['look']}/{record['looks']} ({record['members']} members, "
                                 f"{len(record.get('populations') or ())} populations growing)")
            self.finished_lines.append(f"kdclaims: {self.looks[group]}")
            # the populations growing at this look are not ready until it is (each says so when it is)
            self.populations_done.difference_update(record.get("populations") or ())
        elif event == "population_done":
            name = str(record["name"])
            if name not in self.populations_done:
                self.populations_done.add(name)
                self.finished_lines.append(f"kdclaims: population {name} ready ({record.get('trained', 0)} "
                                           f"trained now); {self.summary(time.monotonic())}")

    def summary(self, now: float) -> str:
        eta = self.eta_seconds(now)
        failed = f", {self.failed} failed" if self.failed else ""
        # under --sequential the total is the most the design can train (populations stop early), so the ETA is
        # an upper bound; the current look of each group says where the design stands
        looks = "".join(f"{look} · " for _, look in sorted(self.looks.items()))
        return (f"{looks}members {self.trained + self.cached}/{'at most ' if self.looks else ''}{self.members_total} "
                f"({self.cached} cached{failed}) · "
                f"populations {len(self.populations_done)}/{len(self.populations)} · "
                f"elapsed {_clock(now - self.started_at)} · "
                f"ETA {'?' if eta is None else ('≤ ' if self.looks else '') + _clock(eta)}")

    def line(self, now: float) -> str:
        """The live line: the summary, then each worker's member in flight."""
        flying = " · ".join(f"{worker}: {member}" for worker, member in sorted(self.in_flight.items()))
        return self.summary(now) + (f" | {flying}" if flying else "")


class ProgressChannel:
    """A worker's end: appends records to ``<directory>/<worker>.jsonl`` (one writer per file)."""

    def __init__(self, directory: Path | str, worker: str):
        self.worker = worker
        self.path = Path(directory) / f"{worker}.jsonl"

    def __call__(self, record: dict) -> None:
        line = json.dumps({"worker": self.worker, **record}) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass  # progress is a view: a full or vanished directory must not stop training


class ProgressWatcher:
    """The controller's end: a thread polling ``directory`` into a :class:`RunProgress` and showing it (a live
    line on a terminal, else one printed line per finished population)."""

    def __init__(self, directory: Path | str, stream=None, live: bool | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stream = stream or sys.__stderr__
        self.live_enabled = self.stream.isatty() if live is None else live
        self.model = RunProgress()
        self._offsets: dict[Path, int] = {}
        self._printed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None

    def poll(self) -> None:
        """Fold the records appended since the last poll (whole lines only) into the model."""
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
            for raw in chunk[:end].splitlines():
                try:
                    self.model.apply(json.loads(raw))
                except (ValueError, KeyError, TypeError):
                    continue
            self._offsets[path] = offset + end

    def _show(self) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(self.model.line(time.monotonic()), no_wrap=True, overflow="ellipsis"))
            return
        for line in self.model.finished_lines[self._printed:]:
            print(line, file=self.stream, flush=True)
        self._printed = len(self.model.finished_lines)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()
            self._show()

    def start(self) -> "ProgressWatcher":
        if self.live_enabled:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(""), console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self._live.start()
        self._thread = threading.Thread(target=self._run, name="kdclaims-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        self._show()
        if self._live is not None:
            self._live.stop()
        for path in self.directory.glob("*.jsonl"):
            try:
                path.unlink()
            except OSError:
                pass
        try:
            os.rmdir(self.directory)
        except OSError:
            pass
