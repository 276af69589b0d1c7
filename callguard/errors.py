"""One error root for callguard, one subclass per boundary (STYLE.md rule 4).

Exit codes live here too, so the CLI and the systemd unit (``RestartPreventExitStatus=``) agree.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# sysexits.h EX_CONFIG: the systemd unit must not restart on it, a restart cannot fix a bad file.
EXIT_CONFIG = 78
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
    """The SQLite store cannot be used."""


class SchemaTooNewError(StoreError):
    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"database schema version {found} is newer than this callguard supports ({supported}); "
            "upgrade callguard or restore a matching backup"
        )


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
