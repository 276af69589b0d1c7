"""Loading: ``config.toml`` (tomllib) + environment secrets → a validated ``Config``. The loader walks the
dataclass fields, so adding a key is adding a field; unknown keys, wrong types and bad values raise one
``ConfigError`` naming the dotted key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from callguard.config.paths import resolve_log_file
from callguard.config.roster import validate_callback
from callguard.config.sections import (
    ENV_SECRETS,
    HIDDEN_KEYS,
    Config,
    HoursConfig,
    WebUser,
)
from callguard.config.values import (
    Duration,
    _check_range,
    format_duration,
    parse_duration,
    parse_holidays,
    parse_week,
)
from callguard.errors import ConfigError


def _validate_hours(cfg: HoursConfig) -> None:
    parse_holidays(cfg.holidays)
    for did, days in cfg.per_did.items():
        parse_week(days, f"hours.per_did.{did}")
    parse_week(cfg.days, "hours.days")


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
REMOVED_KEYS = {"agi.workers": "removed: callguard screens in one process; delete this line"}


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
    validate_callback(cfg.callback)


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
    cfg = resolve_log_file(dataclasses.replace(cfg, source=source, ignored=ignored), base)
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
