"""User-facing errors.

Every error a researcher can cause (bad input, missing data, a malformed claim, an unusable cache)
is a ``KdclaimsError`` whose message is one line naming the thing and how to fix it. The CLI and the
pytest plugin print that line instead of a traceback; ``--debug`` shows the cause underneath.
"""

import errno


class KdclaimsError(Exception):
    """A problem the user can fix; the message says what and how."""


class DataError(KdclaimsError):
    """A dataset that is missing, malformed, tampered with or unsafe."""


class ConfigError(KdclaimsError):
    """An unknown architecture, setup, metric or profile, or an invalid value such as alpha."""


class ClaimError(KdclaimsError):
    """A claim file that does not parse or does not validate."""


class CacheError(KdclaimsError):
    """A cache directory that cannot be used (read-only, full) or an entry that is corrupt."""


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


def no_space_left(path) -> CacheError:
    """The one line for a disk that filled up while writing ``path`` (a cache entry, a checkpoint)."""
    return CacheError(f"no space left writing {path}: free disk space or point --cache-dir elsewhere")


def short_repr(value) -> str:
    """A repr fit for a one-line message, however large or many-lined the hostile value."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
