"""``[callback]`` config: frozen dataclasses in config.py's conventions, ready to hang off ``Config``.

```toml
[callback]
enabled = true
pause = "10m"            # untouched this long after an assignment → hand on to another manager
max_handoffs = 3         # hand-ons before the head of sales gets it (escalation)
sla = "15m"              # a call-back within this of the miss counts as within SLA (stats)
queues = ["sales"]       # queue membership that counts for "logged in" (empty: any queue)
[callback.head]
name = "Olga"
crm_user_id = 7
[[callback.managers]]
name = "Ivan"
crm_user_id = 101
devices = ["PJSIP/101", "Local/101@agents"]
timezone = "Europe/Moscow"
days = { mon = "09:00-18:00", tue = "09:00-18:00" }
```
``parse_roster`` turns it into a ``Roster`` (hours parsed with screening's ``parse_schedule``), raising
``ConfigError`` with the dotted key, so a bad roster stops the service before the loop starts.
The config dataclasses live in config.py (``Config.callback``); they are re-exported here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from callguard.config import CallbackConfig, Duration, HeadConfig, HoursConfig, ManagerConfig
from callguard.config.roster import validate_callback
from callguard.errors import ConfigError
from callguard.screening.rules import DAYS, Schedule, parse_schedule

__all__ = ["CallbackConfig", "HeadConfig", "Manager", "ManagerConfig", "Roster", "parse_roster"]

# A channel is named after its device plus a unique suffix: PJSIP/101-0000000a, SIP/101-0000000a,
# Local/101@agents-00000008;1 (main/channel.c ast_channel_alloc: "<tech>/<resource>-<8 hex>").
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")


@dataclass(frozen=True)
class Manager:
    name: str
    crm_user_id: int
    devices: frozenset[str]
    extensions: frozenset[str]
    schedule: Schedule

    def on_duty(self, now: float) -> bool:
        return self.schedule.is_open("", datetime.fromtimestamp(now, self.schedule.tz))

    def next_on_duty(self, now: float, horizon_days: int = 14) -> float | None:
        """The first moment at or after ``now`` within hours (None: closed for ``horizon_days``)."""
        return next_open(self.schedule, now, horizon_days)


@dataclass(frozen=True)
class Roster:
    managers: tuple[Manager, ...]
    head: HeadConfig
    queues: frozenset[str]
    by_device: dict[str, str]
    by_extension: dict[str, str]
    head_hours: Schedule | None = None  # None: the head takes escalations at any hour

    def head_from(self, now: float) -> float:
        """The first moment at or after ``now`` the head is within hours (``now`` without hours; a head
        closed for two weeks gets it now rather than never)."""
        if self.head_hours is None:
            return now
        at = next_open(self.head_hours, now)
        return now if at is None else at

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.managers)

    def get(self, name: str) -> Manager | None:
        return next((m for m in self.managers if m.name == name), None)

    def by_crm_user(self, user_id: int) -> str | None:
        return next((m.name for m in self.managers if m.crm_user_id == user_id), None)

    def owner(self, channel: str, callerid: str = "") -> str | None:
        """The manager a channel belongs to: by its device, else by the caller ID it dials out with."""
        name = self.by_device.get(device_of(channel))
        return name if name is not None else self.by_extension.get(callerid)


def device_of(channel: str) -> str:
    """``PJSIP/101-0000000a`` → ``PJSIP/101``; ``Local/101@agents-00000008;1`` → ``Local/101@agents``."""
    return _CHANNEL_SUFFIX.sub("", channel)


def _extension_of(device: str) -> str | None:
    resource = device.partition("/")[2].partition("@")[0]
    return resource if resource.isdigit() else None


def next_open(schedule: Schedule, now: float, horizon_days: int = 14) -> float | None:
    if schedule.is_open("", datetime.fromtimestamp(now, schedule.tz)):
        return now
    local = datetime.fromtimestamp(now, schedule.tz)
    for offset in range(horizon_days + 1):
        day = (local + timedelta(days=offset)).date()
        if day in schedule.holidays:
            continue
        for start, _end in sorted(schedule.days.get(DAYS[day.weekday()], ())):
            at = datetime.combine(day, start, schedule.tz)
            if at.timestamp() > now:
                return at.timestamp()
    return None


def _manager(cfg: ManagerConfig, key: str) -> Manager:
    """One roster entry from its checked config (``config.roster.validate_callback``)."""
    hours = HoursConfig(enabled=True, timezone=cfg.timezone, days=cfg.days, holidays=cfg.holidays)
    exts = cfg.extensions or [x for x in map(_extension_of, cfg.devices) if x]
    return Manager(cfg.name, cfg.crm_user_id, frozenset(cfg.devices), frozenset(exts), parse_schedule(hours))


def parse_roster(cfg: CallbackConfig) -> Roster:
    """Check ``[callback]`` (config's own check, the one run at load) and build the roster; raise
    ``ConfigError`` naming the bad key."""
    validate_callback(cfg)
    managers, by_device, by_ext = [], {}, {}
    for i, mc in enumerate(cfg.managers):
        m = _manager(mc, f"callback.managers[{i}]")
        by_device.update(dict.fromkeys(m.devices, m.name))
        for ext in m.extensions:  # derived from the devices when not given: checked here, once known
            if by_ext.setdefault(ext, m.name) != m.name:
                raise ConfigError(f"{ext!r} belongs to {by_ext[ext]!r} too", f"callback.managers[{i}].extensions")
        managers.append(m)
    head = cfg.head
    hours = parse_schedule(HoursConfig(enabled=True, timezone=head.timezone, days=head.days,
                                       holidays=head.holidays)) if head.days else None
    return Roster(tuple(managers), head, frozenset(cfg.queues), by_device, by_ext, hours)


def with_pause(cfg: CallbackConfig, pause: float) -> CallbackConfig:
    """The same config with another pause (the simulator's compressed clock)."""
    return dataclasses.replace(cfg, pause=Duration(pause))
