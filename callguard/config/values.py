"""The syntax of config values, pure: durations ("90s", "4h"), the range every number declares next to its
default, and business hours ("HH:MM-HH:MM" per day); screening/rules.py builds its Schedule from these."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import field
from typing import Any

from callguard.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, key: str = "duration") -> float:
    """``"90s"``, ``"4h"``, ``"1d"``, ``"250ms"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration like '60s' or '4h', got {value!r}", key)
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError("a duration cannot be negative", key)
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ConfigError(f"expected a duration like '60s' or '4h', got {value!r}", key)


class Duration(float):
    """Seconds; in the file written as ``"60s"``, ``"4h"``, ``"1d"`` or a bare number."""


# --- ranges: every number and duration declares its own, next to its default ----------------------

MAX_ID = 10**12  # CRM ids (users, pipelines, accounts); 0 = not set


def num(default: int | float, lo: int | float, hi: int | float) -> Any:
    """A number field allowed from ``lo`` to ``hi`` inclusive (checked by the loader)."""
    return field(default=default, metadata={"range": (lo, hi)})


def dur(default: str, lo: str, hi: str) -> Any:
    """A Duration field, bounds written as in the file (``"100ms"``, ``"5m"``, ``"7d"``)."""
    return field(default=Duration(parse_duration(default)),
                 metadata={"range": (parse_duration(lo), parse_duration(hi)), "duration": True})


def format_duration(seconds: float) -> str:
    """The shortest of ``250ms``, ``90s``, ``15m``, ``4h``, ``7d`` that says ``seconds`` exactly."""
    for unit in ("d", "h", "m", "s"):
        n = seconds / _UNIT_SECONDS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    if seconds == 0:
        return "0s"
    ms = seconds * 1000
    return f"{ms:g}ms" if ms < 1000 else f"{seconds:g}s"


def _check_range(f: dataclasses.Field[Any], value: float, raw: Any, key: str) -> None:
    lo, hi = f.metadata["range"]
    if lo <= value <= hi:
        return
    if f.metadata.get("duration"):
        raise ConfigError(f"must be {format_duration(lo)} to {format_duration(hi)}, got {raw}", key)
    raise ConfigError(f"must be {lo:g} to {hi:g}, got {raw!r}" if isinstance(lo, float) else
                      f"must be {lo} to {hi}, got {raw!r}", key)



# --- business hours: the "HH:MM-HH:MM" syntax, pure; screening/rules.py builds its Schedule from it ----

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Ranges = tuple[tuple[dt.time, dt.time], ...]


def parse_ranges(text: str, key: str) -> Ranges:
    """``"09:00-13:00, 14:00-18:00"`` → ((start, end), …); ``…-24:00`` runs to the end of the day."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _CLOCK_RANGE.match(part)
        if not m:
            raise ConfigError(f"expected 'HH:MM-HH:MM', got {part!r}", key)
        h1, m1, h2, m2 = map(int, m.groups())
        if h2 == 24 and m2 == 0:
            h2, m2 = 23, 59
        try:
            start, end = dt.time(h1, m1), dt.time(h2, m2, 59 if (h2, m2) == (23, 59) else 0)
        except ValueError as e:
            raise ConfigError(f"bad time in {part!r}", key) from e
        if end <= start:
            raise ConfigError(f"range ends before it starts: {part!r}", key)
        out.append((start, end))
    return tuple(out)


def parse_week(days: dict[str, str], key: str) -> dict[str, Ranges]:
    week = {}
    for day, text in days.items():
        if day not in DAYS:
            raise ConfigError(f"unknown day {day!r} (use {', '.join(DAYS)})", f"{key}.{day}")
        week[day] = parse_ranges(text, f"{key}.{day}")
    return week


def parse_holidays(texts: list[str]) -> frozenset[dt.date]:
    holidays = set()
    for i, text in enumerate(texts):
        try:
            holidays.add(dt.date.fromisoformat(text))
        except ValueError as e:
            raise ConfigError(f"expected YYYY-MM-DD, got {text!r}", f"hours.holidays[{i}]") from e
    return frozenset(holidays)
