"""One error root for callguard, one subclass per boundary (STYLE.md rule 4).

Exit codes live here too, so the CLI and the systemd unit (``RestartPreventExitStatus=``) agree.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# sysexits.h codes for failures a restart cannot fix; the systemd unit lists them all in
# ``RestartPreventExitStatus=`` (NO_RESTART below), so the journal shows one clear line, not a restart loop.
EXIT_DATAERR = 65  # EX_DATAERR: the store file is damaged, not SQLite, or of a newer schema
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a listening address (agi, web) is in use or not available
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the store cannot be opened, created or written (folder, permissions, disk)
EXIT_CONFIG = 78  # EX_CONFIG: the config file or environment is unusable
NO_RESTART = (EXIT_DATAERR, EXIT_UNAVAILABLE, EXIT_CANTCREAT, EXIT_CONFIG)
# sysexits.h EX_SOFTWARE: the event loop stalled (callguard/watchdog.py); the unit restarts on it.
EXIT_STALLED = 70


class CallguardError(Exception):
    """Root of every error callguard raises on purpose."""


class ConfigError(CallguardError):
    """The configuration file or environment is unusable; ``key`` names the culprit."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class StoreError(CallguardError):
    """The SQLite store cannot be used (a transient failure, e.g. locked: a restart may help)."""


class StoreOpenError(StoreError):
    """The store file cannot be opened, created or written: its folder, permissions, or a full disk."""

    def __init__(self, path: str, reason: str, fix: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"store {path}: {reason}; {fix}")


class StoreCorruptError(StoreError):
    """The store file is not a SQLite database, or a damaged or truncated one."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"store {path}: {reason}; restore a backup, or move the file aside to start with an empty store "
            "(`callguard sync --full` refills the CRM cache)"
        )


class SchemaTooNewError(StoreError):
    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"database schema version {found} is newer than this callguard supports ({supported}); "
            "upgrade callguard or restore a matching backup"
        )


class BindError(CallguardError):
    """A listening socket (``part`` = agi or web) cannot be bound to ``host``:``port``."""

    def __init__(self, part: str, host: str, port: int, error: OSError) -> None:
        self.part = part
        self.host = host
        self.port = port
        self.errno = error.errno
        reason = error.strerror or str(error)
        fix = _BIND_FIXES.get(error.errno or 0, f"check {part}.host and {part}.port")
        super().__init__(f"{part} cannot listen on {host}:{port}: {reason}; {fix}")


_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there (`ss -ltnp`): stop it or change the port",
    errno.EACCES: "ports below 1024 need privileges: use a higher port",
    errno.EADDRNOTAVAIL: "no interface of this host has that address: fix the host",
}


class AgiProtocolError(CallguardError):
    """A FastAGI peer sent something that is not a valid request."""


class AmiError(CallguardError):
    """The Asterisk Manager Interface link failed."""


class AmiAuthError(AmiError):
    """Asterisk rejected the AMI login (wrong user or secret, or not permitted from this host)."""


class CrmError(CallguardError):
    """A CRM call failed."""


class RateLimitedError(CrmError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class CrmUnavailableError(CrmError):
    """Network error, timeout or 5xx: may succeed later."""


class CrmRejectedError(CrmError):
    """A 4xx that will never succeed as sent."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class CrmAuthError(CrmError):
    """401/403: credentials are wrong or revoked; an operator must act.

    Deliberately not a ``CrmRejectedError``: the request itself is fine, so the outbox keeps retrying
    (with its capped back-off) instead of dead-lettering every missed call until the token is fixed."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class SinkError(CallguardError):
    """A lead sink failed to take an item; ``permanent`` says whether a retry can help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class AmiProtocolError(AmiError):
    """An AMI peer sent bytes that are not a valid AMI frame (no ``Key: value`` lines, oversize)."""


# The one map from error class to exit code; the most specific class wins (the MRO is walked).
_EXIT_CODES: dict[type[CallguardError], int] = {
    ConfigError: EXIT_CONFIG,
    StoreOpenError: EXIT_CANTCREAT,
    StoreCorruptError: EXIT_DATAERR,
    SchemaTooNewError: EXIT_DATAERR,
    BindError: EXIT_UNAVAILABLE,
}


def exit_code(error: BaseException) -> int:
    """The process exit code for an error that ends a command: EXIT_FAILURE unless listed above."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return EXIT_FAILURE
