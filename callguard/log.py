"""structlog set-up: JSON lines for journald/files, a console renderer on a TTY.

Call ``configure()`` once at start-up; importing this module does nothing. Secrets never reach the
renderer: any key named like a secret is masked by ``_mask_secrets`` as a last line of defence.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import select
import sys
import threading
import time
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


_second: tuple[int, str] = (-1, "")


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``timestamp`` in UTC ISO 8601 with microseconds, as structlog's ``TimeStamper(fmt="iso", utc=True)``
    writes it, but with the date and time of the current second formatted once per second: the
    per-screen log line went from ~27 to ~23 µs."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    event["timestamp"] = f"{_second[1]}.{int((now - whole) * 1e6):06d}Z"
    return event


def _dumps_bytes(obj: Any, **kw: Any) -> bytes:
    # orjson: several times faster than json.dumps on the per-screen log line; UTF-8 kept as is.
    return orjson.dumps(obj, default=kw.get("default"))


def _dumps(obj: Any, **kw: Any) -> str:
    return _dumps_bytes(obj, **kw).decode()


# A service process writes its log in one write() per LOG_FLUSH_S, not one per line (with a flush each):
# at 2,000 screens/s that is 2,000 fewer system calls a second, and as many fewer wake-ups of journald.
LOG_FLUSH_S = 0.05
# The AGI workers write to the same pipe or journald socket as the main process. A write of up to
# PIPE_BUF bytes to a pipe is never interleaved with another's, so each write is whole lines within it.
WRITE_MAX = select.PIPE_BUF


class LineBuffer:
    """structlog's logger for a service process (``configure(final=True)``), on rendered JSON bytes.

    Info and debug lines gather in memory and go out together LOG_FLUSH_S later; a warning or an error
    goes out at once, with everything before it, in order. So does any line logged where no event loop
    runs (start-up, shut-down, another thread). ``flush()`` runs at exit and when ``run_loop`` ends.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self._lines: list[bytes] = []
        self._lock = threading.Lock()  # a line may come from another thread (aiosqlite's, a parser's)
        self._due = False  # a flush is scheduled on the loop

    def later(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
            if self._due:  # a flush is coming for it (the line may come from another thread)
                return
            self._due = True
        try:
            asyncio.get_running_loop().call_later(LOG_FLUSH_S, self.flush)
        except RuntimeError:  # no loop on this thread: write it now
            self.flush()

    def now(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
        self.flush()

    def flush(self) -> None:
        with self._lock:  # held while writing, so lines from two threads keep their order
            lines, self._lines, self._due = self._lines, [], False
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) + 1 > WRITE_MAX:
                    self._write(chunk)
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line) + 1
            if chunk:
                self._write(chunk)

    def _write(self, lines: list[bytes]) -> None:
        lines.append(b"")
        self.file.write(b"\n".join(lines))
        self.file.flush()  # one write(): whole lines, at most WRITE_MAX bytes unless one line is longer

    debug = info = msg = later
    warning = warn = error = err = critical = fatal = exception = failure = now


_buffer: LineBuffer | None = None


def flush() -> None:
    """Write out what the service's log holds; ``run_loop`` calls it when the loop ends."""
    if _buffer is not None:
        _buffer.flush()



class Settings(NamedTuple):
    fmt: str
    level: str
    stream: TextIO


_settings: Settings | None = None


def settings() -> Settings:
    """What the last ``configure`` set (its defaults before any): AGI worker processes log the same way,
    to the same stream."""
    return _settings or Settings("auto", "info", sys.stdout)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *, final: bool = False) -> None:
    """``fmt``: auto (console on a TTY, else JSON), json, console.

    ``final``: the process keeps this set-up for good (``callguard run``), so each module's logger is
    built once on first use instead of on every call; tests and one-shot commands leave it False so
    ``structlog.testing.capture_logs`` and later ``configure`` calls still reach every logger.
    """
    global _settings, _buffer
    stream = stream or sys.stdout
    _settings = Settings(fmt, level, stream)
    flush()  # what an earlier set-up still holds
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.processors.add_log_level,
        _timestamp,
        _mask_secrets,
        structlog.processors.format_exc_info if not use_console else structlog.dev.set_exc_info,
    ]
    binary: BinaryIO | None = getattr(stream, "buffer", None)
    logger_factory: Any
    if use_console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    elif final and binary is not None:
        stream.flush()
        _buffer = LineBuffer(binary)
        atexit.unregister(flush)  # registered once, here: importing this module does nothing
        atexit.register(flush)
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_bytes)
        logger_factory = _buffer_factory
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        logger_factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=logger_factory,
        cache_logger_on_first_use=final,
    )


def _buffer_factory(*_: Any) -> LineBuffer:
    assert _buffer is not None
    return _buffer
