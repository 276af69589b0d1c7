"""``[callback]``'s checks (the roster: managers, the head, notices), run at load like every section's and
again by callbacks/settings.parse_roster before it builds the runtime roster from the checked values."""

from __future__ import annotations

from callguard.config.sections import CallbackConfig
from callguard.config.values import parse_holidays, parse_week
from callguard.errors import ConfigError


def validate_callback(cb: CallbackConfig) -> None:
    """``[callback]``: the roster's shape, checked at load like every section (exit 78 naming the key);
    callbacks/settings.parse_roster calls this, then builds the runtime roster from the checked values."""
    if cb.pause <= 0 or cb.crm_retry <= 0:  # a config built in code skips the loader's ranges
        raise ConfigError("callback.pause and callback.crm_retry must be positive", "callback")
    if cb.max_handoffs < 0:
        raise ConfigError("cannot be negative", "callback.max_handoffs")
    names: set[str] = set()
    owner: dict[str, str] = {}
    for i, m in enumerate(cb.managers):
        key = f"callback.managers[{i}]"
        if not m.name:
            raise ConfigError("every manager needs a name", f"{key}.name")
        if not m.devices:
            raise ConfigError("list the manager's queue interface(s) or phone(s)", f"{key}.devices")
        if m.name in names:
            raise ConfigError(f"duplicate manager name {m.name!r}", f"{key}.name")
        names.add(m.name)
        _check_hours(m.timezone, m.days, m.holidays, key)
        for device in m.devices:
            if owner.setdefault(device, m.name) != m.name:
                raise ConfigError(f"{device!r} belongs to {owner[device]!r} too", f"{key}.devices")
    _check_hours(cb.head.timezone, cb.head.days, cb.head.holidays, "callback.head")
    _check_notify_url(cb.notify.url)
    if cb.enabled and not cb.managers:
        raise ConfigError("callback.enabled needs at least one [[callback.managers]]", "callback.managers")


def _check_hours(timezone: str, days: dict[str, str], holidays: list[str], key: str) -> None:
    """A person's working hours (a manager's, the head's): the zone, the week, the holidays."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"unknown time zone {timezone!r}", f"{key}.timezone") from e
    parse_week(days, f"{key}.days")
    try:
        parse_holidays(holidays)
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix(f"{e.key}: "), f"{key}.holidays") from e


def _check_notify_url(url: str) -> None:
    if url and not (url.startswith(("http://", "https://")) and url.split("/", 3)[2]):
        raise ConfigError('an http:// or https:// URL (or "" for the log line only)', "callback.notify.url")


# --- loading --------------------------------------------------------------------------------------
