"""Why a state directory cannot be used.

    StateError            base (a ProxyShareError): the server does not start
     ├── StateDirRefused  permissions or ownership: the user must fix the directory
     ├── StateInUse       another server holds the directory's lock
     ├── StateDamaged     a file is damaged or missing: nothing was changed
     └── StateWriteError  a change could not be written: the server refuses changes

Every message is one line that names the file (and the offset, for damage)
and says what to do.
"""

from __future__ import annotations

from proxyshare._errors import ProxyShareError

__all__ = ["StateDamaged", "StateDirRefused", "StateError", "StateInUse", "StateWriteError"]


class StateError(ProxyShareError):
    """The state directory cannot be used as it is."""


class StateDirRefused(StateError):
    """The directory (or a file in it) is not private to the user running the server."""


class StateInUse(StateError):
    """Another server process holds the directory's lock."""


class StateDamaged(StateError):
    """A state file is damaged, missing or of an unknown format; nothing was changed."""


class StateWriteError(StateError):
    """The log could not be written (disk full, I/O error): later changes are refused."""
