"""structlog set-up: JSON lines for journald/files, a console renderer on a TTY.

Call ``configure()`` once at start-up; importing this module does nothing. Secrets never reach the
renderer: any key named like a secret is masked by ``_mask_secrets`` as a last line of defence.

Under systemd, when the stream is journald's (``JOURNAL_STREAM``, systemd.exec(5)), each JSON line starts
with its syslog priority, ``<4>`` for a warning, which journald takes off and keeps as the entry's
PRIORITY (``SyslogLevelPrefix=yes``, the default): ``journalctl -u callguard -p warning`` then works.
Anywhere else the lines are plain JSON.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO, NamedTuple, TextIO

import orjson
import structlog

_SECRET_WORDS = ("secret", "token", "password", "authorization", "api_key", "apikey")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(w in lowered for w in _SECRET_WORDS)


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _is_secret_key(key) and event[key]:
            event[key] = "***"
    return event


def _dumps_bytes(obj: Any, **kw: Any) -> bytes:
    # orjson: several times faster than json.dumps on the per-screen log line; UTF-8 kept as is.
    return orjson.dumps(obj, default=kw.get("default"))


def _dumps(obj: Any, **kw: Any) -> str:
    return _dumps_bytes(obj, **kw).decode()


# syslog priorities (sd-daemon.h SD_ERR …) by structlog level
PRIORITY = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "info": 6, "debug": 7}


def writes_to_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journald stream systemd connected (JOURNAL_STREAM = "<dev>:<inode>")."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return f"{st.st_dev}:{st.st_ino}" == expected


def priority_prefix(level: str) -> bytes:
    return b"<%d>" % PRIORITY.get(level, 6)


class _Prioritised:
    """Wraps a JSON renderer: the line gets journald's ``<N>`` priority prefix."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> bytes | str:
        prefix = priority_prefix(str(event.get("level", "info")))
        out = self.renderer(logger, name, event)
        return prefix + out if isinstance(out, bytes) else prefix.decode() + out


class Settings(NamedTuple):
    fmt: str
    level: str
    stream: TextIO


_settings: Settings | None = None


def settings() -> Settings:
    """What the last ``configure`` set (its defaults before any): the stall watchdog writes its one line
    straight to this stream's fd."""
    return _settings or Settings("auto", "info", sys.stdout)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *, final: bool = False) -> None:
    """``fmt``: auto (console on a TTY, else JSON), json, console.

    ``final``: the process keeps this set-up for good (``callguard run``), so each module's logger is
    built once on first use instead of on every call; tests and one-shot commands leave it False so
    ``structlog.testing.capture_logs`` and later ``configure`` calls still reach every logger.
    """
    global _settings
    stream = stream or sys.stdout
    _settings = Settings(fmt, level, stream)
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        structlog.processors.format_exc_info if not use_console else structlog.dev.set_exc_info,
    ]
    binary: BinaryIO | None = getattr(stream, "buffer", None)
    logger_factory: Any
    if use_console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    elif final and binary is not None:  # one write() of one whole line each, bytes straight from orjson
        stream.flush()
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_bytes)
        logger_factory = structlog.BytesLoggerFactory(file=binary)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    if not use_console and writes_to_journal(stream):
        renderer = _Prioritised(renderer)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=logger_factory,
        cache_logger_on_first_use=final,
    )

