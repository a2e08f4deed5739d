"""One registry type for every named, pluggable thing: architectures, setups, datasets, metrics,
profiles, backends and claim kinds.

A registry is a read-only mapping from name to entry plus ``register`` (refuses a taken or empty
name in one line) and ``get`` (an unknown name is a one-line error with the known names and the
closest match). ``del registry[name]`` (or ``pop``) removes an entry, so a test or a plugin can replace one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from kdclaims.errors import ConfigError, KdclaimsError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind (``what``: "architecture", "setup", ...), in registration order."""

    def __init__(self, what: str, error: type[KdclaimsError] = ConfigError):
        self.what = what
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not name:
            raise self.error(f"{self.what} name {name!r} is invalid; it must be a non-empty string")
        if name in self._entries:
            raise self.error(f"{self.what} {name!r} is already registered "
                             f"(delete it from the registry first to replace it)")
        self._entries[name] = entry
        return entry

    def get(self, name: str, default=None) -> T:  # type: ignore[override]
        """The entry called ``name``; unlike ``Mapping.get`` an unknown name is an error, naming the
        known ones (``default`` is accepted only to keep the Mapping signature and must stay None)."""
        if default is not None:
            raise TypeError("Registry.get takes no default; use `name in registry` to test membership")
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.what} {name!r}{self.suggest(name)}; "
                             f"choose one of {', '.join(self._entries) or '(none registered)'}") from None

    def suggest(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def names(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def pop(self, name: str, *default: T) -> T:
        """Remove and return the entry called ``name`` (``default``, if given, when there is none)."""
        return self._entries.pop(name, *default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
