"""Load ``config.toml`` into frozen, typed objects.

Every section is a frozen dataclass; the loader walks the dataclass fields, so adding a key is adding a
field (and documenting it in ``config.toml``). Unknown keys, wrong types and bad values raise one
``ConfigError`` naming the dotted key. Secrets may come from the environment and win over the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


# --- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreConfig:
    path: Path = Path("callguard.sqlite3")
    busy_timeout_ms: int = num(5000, 100, 600_000)


@dataclass(frozen=True)
class PhoneConfig:
    default_region: str = "RU"
    # Numbers with at most this many digits are internal extensions, not callers from outside.
    max_extension_digits: int = num(5, 0, 10)


@dataclass(frozen=True)
class ScreeningConfig:
    anonymous: Literal["allow", "block"] = "allow"
    # What an invalid (unparseable) caller ID gets: "allow" screens it clean, "block" as spam.
    invalid: Literal["allow", "block"] = "allow"


@dataclass(frozen=True)
class HoursConfig:
    enabled: bool = False
    timezone: str = "Europe/Moscow"
    # day → "HH:MM-HH:MM" (several ranges comma-separated); a day not listed is closed.
    days: dict[str, str] = field(
        default_factory=lambda: {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
    )
    # DID → {day → ranges}; replaces ``days`` for that DID. DIDs are matched after normalisation.
    per_did: dict[str, dict[str, str]] = field(default_factory=dict)
    # Dates (YYYY-MM-DD) closed all day: public holidays.
    holidays: list[str] = field(default_factory=list)


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


def _validate_hours(cfg: HoursConfig) -> None:
    parse_holidays(cfg.holidays)
    for did, days in cfg.per_did.items():
        parse_week(days, f"hours.per_did.{did}")
    parse_week(cfg.days, "hours.days")


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = num(4573, 0, 65535)  # 0: any free port (tests)
    deadline_ms: int = num(300, 20, 10_000)
    read_timeout_ms: int = num(2000, 100, 60_000)
    max_header_bytes: int = num(16384, 1024, 1 << 20)
    max_connections: int = num(1000, 1, 65536)
    drain_seconds: float = num(5.0, 0.0, 20.0)  # below TimeoutStopSec=30s in the systemd unit


@dataclass(frozen=True)
class AmiConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = num(5038, 1, 65535)
    username: str = "callguard"
    secret: str = ""
    # Where inbound calls start: the shipped context, and the usual trunk context that may Goto it
    # (a channel's Newchannel names the context it started in).
    inbound_contexts: list[str] = field(default_factory=lambda: ["callguard-inbound", "from-trunk"])
    ping_interval: Duration = dur("20s", "2s", "5m")
    pong_timeout: Duration = dur("10s", "1s", "4m")  # and below ping_interval
    reconnect_min: Duration = dur("1s", "100ms", "1m")
    reconnect_max: Duration = dur("60s", "1s", "1h")  # and at least reconnect_min
    connect_timeout: Duration = dur("10s", "1s", "2m")


@dataclass(frozen=True)
class CallsConfig:
    stale_after: Duration = dur("4h", "1m", "7d")
    max_calls: int = num(100_000, 100, 10_000_000)
    # An event's Timestamp: is used only within these bounds of its arrival, else the arrival time.
    timestamp_ahead: Duration = dur("5s", "0s", "1m")
    timestamp_behind: Duration = dur("5m", "0s", "1h")


@dataclass(frozen=True)
class MissedConfig:
    min_ring_seconds: Duration = dur("0s", "0s", "5m")
    dedupe_window: Duration = dur("24h", "0s", "30d")


@dataclass(frozen=True)
class WebhookSinkConfig:
    url: str = ""
    secret: str = ""
    timeout: Duration = dur("10s", "1s", "2m")


@dataclass(frozen=True)
class OutboxConfig:
    # Where missed-call leads go: "log" (structured log only), "webhook", or "crm" (the [crm] adapter).
    sink: Literal["log", "webhook", "crm"] = "log"
    max_attempts: int = num(12, 1, 1000)
    backoff_base: Duration = dur("5s", "100ms", "1h")
    backoff_cap: Duration = dur("15m", "1s", "1d")  # and at least backoff_base
    poll_interval: Duration = dur("1s", "10ms", "1m")
    webhook: WebhookSinkConfig = field(default_factory=WebhookSinkConfig)


@dataclass(frozen=True)
class AmoCrmConfig:
    base_url: str = ""
    token: str = ""
    spam_field: str = ""
    rate_rps: float = num(7.0, 0.1, 100.0)
    lead_mode: Literal["unsorted", "lead_task"] = "unsorted"
    pipeline_id: int = num(0, 0, MAX_ID)
    responsible_user_id: int = num(0, 0, MAX_ID)
    source_name: str = "callguard"
    webhook_secret: str = ""
    account_id: int = num(0, 0, MAX_ID)
    # OAuth refresh (optional): when all four are set, a 401 triggers one token refresh.
    client_id: str = ""
    client_secret: str = ""
    redirect_uri: str = ""
    refresh_token: str = ""


@dataclass(frozen=True)
class Bitrix24Config:
    webhook_url: str = ""
    spam_field: str = ""
    rate_rps: float = num(2.0, 0.1, 100.0)
    rate_burst: int = num(50, 1, 1000)
    source_id: str = "CALL"
    responsible_user_id: int = num(0, 0, MAX_ID)
    application_token: str = ""
    register_call: bool = False


@dataclass(frozen=True)
class CrmConfig:
    kind: Literal["none", "amocrm", "bitrix24"] = "none"
    timeout: Duration = dur("15s", "1s", "5m")
    max_retries: int = num(5, 0, 20)
    # First retry back-off; doubles per attempt with full jitter, capped at 30 s (Retry-After wins).
    retry_base: Duration = dur("1s", "10ms", "1m")
    amocrm: AmoCrmConfig = field(default_factory=AmoCrmConfig)
    bitrix24: Bitrix24Config = field(default_factory=Bitrix24Config)


@dataclass(frozen=True)
class SyncConfig:
    interval: Duration = dur("60s", "1s", "1d")
    full_every: Duration = dur("1d", "1h", "30d")
    # Contacts written per transaction during a sync: small enough that the writer never holds the
    # database long (screens read through WAL and never wait), large enough to be fast.
    batch: int = num(250, 1, 10_000)
    # 0 (one process): amoCRM contact pages are parsed on the event loop, in slices. > 0: opt-in worker
    # processes do it (callguard.crm.offload). Kept opt-in until the 1M-contact measurement
    # (scripts/bench_sync.py --parse-workers 0|1, screens p99 during the sync ≤ 5 ms) decides.
    parse_workers: int = num(0, 0, 8)


@dataclass(frozen=True)
class WebUser:
    """A login for the dashboard and lists pages (callguard.web.auth); ``callguard passwd NAME`` makes the
    hash (callguard.passwords)."""

    name: str = ""
    password_hash: str = ""


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = num(8088, 0, 65535)  # 0: any free port (tests)
    token: str = ""
    max_body_bytes: int = num(262_144, 1024, 16 << 20)
    # Bounds per connection (callguard.web.server): first request complete within header_timeout, idle between
    # requests at most keepalive_timeout, at most max_connections open at once.
    header_timeout: Duration = dur("10s", "1s", "5m")
    keepalive_timeout: Duration = dur("15s", "1s", "1h")
    max_connections: int = num(256, 8, 65536)
    # Who may log in to the pages at / besides the web token: [[web.users]] name = "…", password_hash = "…".
    users: list[WebUser] = field(default_factory=list)


@dataclass(frozen=True)
class LogConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class ServiceConfig:
    # The event loop not beating this long is a stall (callguard/watchdog.py): the FastAGI sockets are
    # shut so Asterisk fails open, and the process exits 70 for systemd to restart it. 0 turns it off.
    stall_timeout: Duration = dur("1s", "0s", "1m")


# [callback]: the call-back loop (issue 16); checked by callbacks.settings.parse_roster.
_WEEKDAYS = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}


@dataclass(frozen=True)
class ManagerConfig:
    name: str = ""
    crm_user_id: int = num(0, 0, 1_000_000_000_000)  # 0 = none: their CRM steps are skipped
    # Queue member interfaces and phones: "PJSIP/101", "Local/101@agents" (as QueueStatus shows them).
    devices: list[str] = field(default_factory=list)
    # Caller IDs their phones dial out with; empty = the digits of each device ("PJSIP/101" → "101").
    extensions: list[str] = field(default_factory=list)
    timezone: str = "Europe/Moscow"
    days: dict[str, str] = field(default_factory=lambda: dict(_WEEKDAYS))
    holidays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HeadConfig:
    name: str = ""
    crm_user_id: int = num(0, 0, 1_000_000_000_000)  # 0 = none: their CRM steps are skipped
    notify: bool = True  # tell the head of every assignment, not only of escalations


@dataclass(frozen=True)
class CallbackConfig:
    enabled: bool = False
    pause: Duration = dur("10m", "10s", "1d")
    max_handoffs: int = num(3, 0, 50)
    sla: Duration = dur("15m", "1m", "7d")
    # After a failed CRM call the step is tried again this much later (never a second hand-on).
    crm_retry: Duration = dur("1m", "1s", "1h")
    queues: list[str] = field(default_factory=list)
    head: HeadConfig = field(default_factory=HeadConfig)
    managers: list[ManagerConfig] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    phone: PhoneConfig = field(default_factory=PhoneConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    hours: HoursConfig = field(default_factory=HoursConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    missed: MissedConfig = field(default_factory=MissedConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    crm: CrmConfig = field(default_factory=CrmConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    callback: CallbackConfig = field(default_factory=CallbackConfig)
    source: Path | None = None
    # Keys of an older release found in the file and ignored (REMOVED_KEYS says why); `run` logs them.
    ignored: tuple[str, ...] = ()


# Environment variables that override secrets; the file may leave them empty.
ENV_SECRETS: dict[str, tuple[str, ...]] = {
    "CALLGUARD_AMI_SECRET": ("ami", "secret"),
    "CALLGUARD_CRM_TOKEN": ("crm", "amocrm", "token"),
    "CALLGUARD_CRM_WEBHOOK_URL": ("crm", "bitrix24", "webhook_url"),
    "CALLGUARD_CRM_APP_TOKEN": ("crm", "bitrix24", "application_token"),
    "CALLGUARD_CRM_WEBHOOK_SECRET": ("crm", "amocrm", "webhook_secret"),
    "CALLGUARD_CRM_CLIENT_SECRET": ("crm", "amocrm", "client_secret"),
    "CALLGUARD_WEB_TOKEN": ("web", "token"),
    "CALLGUARD_SINK_SECRET": ("outbox", "webhook", "secret"),
}

SECRET_KEYS = frozenset(".".join(path) for path in ENV_SECRETS.values()) | {"crm.amocrm.refresh_token"}
# Not secrets to scrub from bodies (they never leave), but masked wherever the config is shown.
HIDDEN_KEYS = SECRET_KEYS | {"web.users.password_hash"}


# --- loading --------------------------------------------------------------------------------------


def _check_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", key)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key)
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"expected a path string, got {value!r}", key)
        return Path(value)
    raise ConfigError(f"unsupported type {tp!r}", key)  # a programming error in this module


def _check_union(value: Any, tp: Any, key: str) -> Any:
    for alt in typing.get_args(tp):
        if alt is type(None) and value is None:
            return None
        try:
            return _check_value(value, alt, key)
        except ConfigError:
            continue
    raise ConfigError(f"unexpected value {value!r}", key)


def _check_container(value: Any, tp: Any, key: str) -> Any:
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {type(value).__name__}", key)
        return [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    _, val_tp = typing.get_args(tp)
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", key)
    return {str(k): _check_value(v, val_tp, f"{key}.{k}") for k, v in value.items()}


def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Duration:
        return Duration(parse_duration(value, key))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table [{key}], got {type(value).__name__}", key)
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}", key)
        return value
    if origin in (list, dict):
        return _check_container(value, tp, key)
    if origin in (types.UnionType, typing.Union):
        return _check_union(value, tp, key)
    return _check_scalar(value, tp, key)


# Fields of Config that are facts about the load, not keys of the file.
META_FIELDS = frozenset({"source", "ignored"})

# Keys a release took away. An upgrade keeps the admin's config.toml, so such a key is ignored (and
# `run` logs config_key_ignored with the reason) rather than refused: refusing would leave the service
# down after an upgrade, every call unscreened, for a line that no longer matters.
REMOVED_KEYS = {"agi.workers": "removed: callguard screens in one process (issue 13); delete this line"}


def _drop_removed(raw: dict[str, Any]) -> tuple[str, ...]:
    """Take the REMOVED_KEYS out of the file's table; the ones found, for ``Config.ignored``."""
    found = []
    for key in REMOVED_KEYS:
        *path, leaf = key.split(".")
        node: Any = raw
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            del node[leaf]
            found.append(key)
    return tuple(found)


def _build(cls: Any, table: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in META_FIELDS}
    for k in table:
        if k not in names:
            key = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown key (known here: {', '.join(sorted(names))})", key)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in table:
            key = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _check_value(table[f.name], hints[f.name], key)
            if "range" in f.metadata:
                _check_range(f, kwargs[f.name], table[f.name], key)
    return cls(**kwargs)


def _set_path(raw: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # the file has a scalar where a table belongs; _build reports it
    node[path[-1]] = value



def _validate_pairs(cfg: Config) -> None:
    """Rules across two keys (each key's own range is checked while loading)."""
    a, o = cfg.ami, cfg.outbox
    pairs = [  # key, its value, whether the rule holds, the rule, the other key's value
        ("ami.reconnect_max", a.reconnect_max, a.reconnect_max >= a.reconnect_min, "at least ami.reconnect_min",
         a.reconnect_min),
        ("ami.pong_timeout", a.pong_timeout, a.pong_timeout < a.ping_interval, "below ami.ping_interval",
         a.ping_interval),
        ("outbox.backoff_cap", o.backoff_cap, o.backoff_cap >= o.backoff_base, "at least outbox.backoff_base",
         o.backoff_base),
    ]
    for key, got, ok, rule, other in pairs:
        if not ok:
            raise ConfigError(f"must be {rule} ({format_duration(other)}), got {format_duration(got)}", key)
    if cfg.web.enabled and cfg.web.port and cfg.web.port == cfg.agi.port:
        raise ConfigError(f"is also agi.port ({cfg.agi.port}): one port cannot serve both", "web.port")


def _validate_crm(cfg: Config) -> None:
    """A CRM chosen without what it needs to connect fails here, for every command (exit 78), not at the
    first sync. Secrets may come from the environment (ENV_SECRETS), already merged."""
    if cfg.crm.kind == "amocrm":
        amo = cfg.crm.amocrm
        if not amo.base_url:
            raise ConfigError("crm.kind = 'amocrm' needs it (https://<subdomain>.amocrm.ru)", "crm.amocrm.base_url")
        # Without a token, OAuth may still get one: the refresh keys (the refresh token may be in the store).
        if not amo.token and not all((amo.client_id, amo.client_secret, amo.redirect_uri)):
            raise ConfigError("crm.kind = 'amocrm' needs it (or CALLGUARD_CRM_TOKEN, or the OAuth client keys)",
                              "crm.amocrm.token")
    elif cfg.crm.kind == "bitrix24" and not cfg.crm.bitrix24.webhook_url:
        raise ConfigError("crm.kind = 'bitrix24' needs it (or CALLGUARD_CRM_WEBHOOK_URL): "
                          "https://<portal>/rest/<user>/<secret>/", "crm.bitrix24.webhook_url")


def _validate_web_users(users: list[WebUser]) -> None:
    from callguard import passwords

    seen: set[str] = set()
    for i, user in enumerate(users):
        key = f"web.users[{i}]"
        if not user.name.strip() or len(user.name) > 64 or not user.name.isprintable():
            raise ConfigError("needs a name of 1 to 64 printable characters", f"{key}.name")
        if user.name.casefold() in seen:
            raise ConfigError(f"{user.name!r} is listed twice", f"{key}.name")
        seen.add(user.name.casefold())
        try:
            passwords.parse(user.password_hash)
        except ValueError as e:
            raise ConfigError(str(e), f"{key}.password_hash") from None


def _validate(cfg: Config) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    import phonenumbers

    if cfg.phone.default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"unknown region {cfg.phone.default_region!r}", "phone.default_region")
    try:
        ZoneInfo(cfg.hours.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"unknown time zone {cfg.hours.timezone!r}", "hours.timezone") from e
    _validate_pairs(cfg)
    _validate_crm(cfg)
    if cfg.service.stall_timeout and not 0.5 <= cfg.service.stall_timeout <= 60:
        raise ConfigError("must be 0 (off) or 0.5 s to 60 s", "service.stall_timeout")
    _validate_web_users(cfg.web.users)
    if cfg.outbox.sink == "webhook" and not cfg.outbox.webhook.url:
        raise ConfigError("sink 'webhook' needs outbox.webhook.url", "outbox.webhook.url")
    if cfg.outbox.sink == "crm" and cfg.crm.kind == "none":
        raise ConfigError("sink 'crm' needs crm.kind = 'amocrm' or 'bitrix24'", "outbox.sink")
    _validate_hours(cfg.hours)
    # The roster is parsed where it is used (callbacks/settings, which builds on config's types): imported
    # here, at call time, so config.py has no import-time dependency on callbacks/.
    from callguard.callbacks.settings import parse_roster

    parse_roster(cfg.callback)


def load_config(
    path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None
) -> Config:
    """Read and validate the config. ``path=None`` gives the embedded defaults (plus environment)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source: Path | None = None
    if path is not None:
        source = Path(path).resolve()
        try:
            with source.open("rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {source}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source} is not valid TOML: {e}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source} is not UTF-8 text (byte {e.start}): save it as UTF-8") from e
        except OSError as e:
            raise ConfigError(f"cannot read {source}: {e.strerror}") from e
    for var, keypath in ENV_SECRETS.items():
        if env.get(var):
            _set_path(raw, keypath, env[var])
    ignored = _drop_removed(raw)
    cfg: Config = _build(Config, raw)
    base = source.parent if source else Path.cwd()
    if not cfg.store.path.is_absolute() and str(cfg.store.path) != ":memory:":
        cfg = dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, path=base / cfg.store.path))
    cfg = dataclasses.replace(cfg, source=source, ignored=ignored)
    _validate(cfg)
    return cfg


def resolve_config_path(cli_value: str | None, env: typing.Mapping[str, str] | None = None) -> Path | None:
    """``--config`` wins, then ``$CALLGUARD_CONFIG``, then ``./config.toml``; None = embedded defaults."""
    env = os.environ if env is None else env
    if cli_value:
        return Path(cli_value)
    if env.get("CALLGUARD_CONFIG"):
        return Path(env["CALLGUARD_CONFIG"])
    local = Path("config.toml")
    return local if local.exists() else None


def redacted(cfg: Config) -> dict[str, Any]:
    """The config as a dict with secrets masked: safe to log or print."""

    def walk(obj: Any, key: str) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: walk(getattr(obj, f.name), f"{key}.{f.name}") for f in dataclasses.fields(obj)}
        if isinstance(obj, list):
            return [walk(v, key) for v in obj]
        if key in HIDDEN_KEYS:
            return "***" if obj else ""
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return {f.name: walk(getattr(cfg, f.name), f.name) for f in dataclasses.fields(cfg)}
