"""Checkpoints: the whole training state of a member in flight, saved at the end of an epoch.

A checkpoint holds the model's state_dict, the optimiser's (momentum buffers, Adam moments and step
counts), the epoch, the data-order generator's state, the global torch RNG state (dropout) and, on
CUDA, the CUDA RNG state (``kdclaims.training`` makes and resumes it). There is no scheduler object to
save: the learning rate is a pure function of the epoch (``Recipe.lr_at_epoch``). A run resumed from a
checkpoint therefore continues exactly where the interrupted one was, and on the CPU ends bit-identical
to a run that was never interrupted. The file is written atomically and carries a SHA-256 of its
payload; it is read with ``torch.load(..., weights_only=True)`` only (tensors, dicts, lists, numbers
and strings: no code).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kdclaims.atomic import write_bytes_atomically
from kdclaims.errors import NO_SPACE_ERRNOS, CacheError, no_space_left

log = logging.getLogger("kdclaims")

CHECKPOINT_FORMAT = "kdclaims-checkpoint-v1"
# By default a member checkpoints at the end of an epoch once this long has passed since its start or
# its last checkpoint: a paper-scale member (50-100 epochs, minutes to hours) then loses at most about a
# minute of work to a crash, and a smoke member (seconds) never pays for a checkpoint.
DEFAULT_CHECKPOINT_INTERVAL_S = 60.0


def save_checkpoint(path: Path | str, state: dict) -> None:
    """Write ``state`` atomically as ``{format, sha256, payload}``: payload is ``torch.save(state)``'s bytes."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    outer = {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
             "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    buffer = io.BytesIO()
    torch.save(outer, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory and written by us: torch.save writing a file itself reports a full disk as a
    # RuntimeError ("basic_ios::clear: iostream error") that says nothing of why; our write raises the
    # OSError with its errno, which Checkpointer.save turns into one line.
    write_bytes_atomically(path, buffer.getvalue(), f".{path.stem}-")


def load_checkpoint(path: Path | str) -> dict:
    """The state saved by ``save_checkpoint``, checksum-verified, read with ``weights_only=True`` only.
    CacheError naming the path when it is unreadable, of another format or fails its checksum."""
    path = Path(path)
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} file")
        payload = outer["payload"].numpy().tobytes()
        if hashlib.sha256(payload).hexdigest() != outer["sha256"]:
            raise ValueError("the payload fails its SHA-256")
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError("the payload is not a dict")
    except Exception as exc:  # noqa: BLE001 - anything wrong with the file means "do not use it"
        raise CacheError(f"checkpoint {path} is unusable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                         "delete it (the member then trains from its start)") from exc
    return state


@dataclass
class Checkpointer:
    """Where and how often one member saves its training state (see the module docstring).

    ``every_epochs``: checkpoint after every that many epochs; None: after the first epoch that ends at
    least ``min_interval_s`` after the start or the last checkpoint. ``member`` names the member (its
    cache key): a checkpoint of another member, or of another recipe length, is never resumed from.
    A corrupt checkpoint is moved to ``quarantine_dir`` (or deleted) and the member starts over.
    """

    path: Path
    member: str
    every_epochs: int | None = None
    min_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    quarantine_dir: Path | None = None
    resumed_from_epoch: int | None = None
    saved: int = 0

    def __post_init__(self):
        self.path = Path(self.path)
        self._last = time.monotonic()

    def load(self, epochs: int) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = load_checkpoint(self.path)
        except CacheError as exc:
            cause = exc.__cause__
            self._set_aside(f"is unusable ({type(cause).__name__}: {' '.join(str(cause).split())[:160]})")
            return None
        if state.get("member") != self.member or state.get("epochs") != epochs \
                or not isinstance(state.get("epoch"), int) or not 0 < state["epoch"] < epochs:
            self._set_aside(f"belongs to another member or recipe (epoch {state.get('epoch')} of "
                            f"{state.get('epochs')})")
            return None
        return state

    def due(self, epochs_done: int) -> bool:
        if self.every_epochs is not None:
            return self.every_epochs > 0 and epochs_done % self.every_epochs == 0
        return time.monotonic() - self._last >= self.min_interval_s

    def save(self, state: dict) -> None:
        try:
            save_checkpoint(self.path, state)
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                raise no_space_left(self.path) from exc
            raise CacheError(f"cannot write checkpoint {self.path}: {exc.strerror or exc}; free disk space or "
                             "choose another --cache-dir") from exc
        self.saved += 1
        self._last = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _set_aside(self, reason: str) -> None:
        if self.quarantine_dir is not None:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            target = self.quarantine_dir / f"{self.path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
            try:
                self.path.replace(target)
            except FileNotFoundError:
                return
            log.warning("kdclaims: warning: checkpoint %s %s; moved to %s, the member trains from its start",
                        self.path, reason, target)
        else:
            self.path.unlink(missing_ok=True)
            log.warning("kdclaims: warning: checkpoint %s %s; deleted, the member trains from its start",
                        self.path, reason)
