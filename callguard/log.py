"""structlog set-up: JSON lines for journald/files, a console renderer on a TTY.

Call ``configure()`` once at start-up; importing this module does nothing. Secrets never reach the
renderer: any key named like a secret is masked by ``_mask_secrets`` as a last line of defence.
"""

from __future__ import annotations

import functools
import logging
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
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=logger_factory,
        cache_logger_on_first_use=final,
    )

