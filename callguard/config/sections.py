"""The sections of ``config.toml``: one frozen dataclass each, every number with its range (values.num /
values.dur), and the environment variables that carry secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from callguard.config.values import MAX_ID, Duration, dur, num

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
    # "monitor": the verdict is computed, logged and counted ("would block") but spam is answered clean,
    # so the dialplan lets it through: a new site checks its lists before it enforces them.
    mode: Literal["enforce", "monitor"] = "enforce"
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
    # The log sink's leads file (JSON lines, one per missed call; leads/leadfile.py). "": leads.jsonl next
    # to store.path. A relative path is relative to the config file's folder; load makes it absolute.
    log_file: str = ""
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


# [callback]: the call-back loop; checked by callbacks.settings.parse_roster.
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
    # Their working hours: an escalation (a CRM task for them) waits for them. No `days`: any time.
    timezone: str = "Europe/Moscow"
    days: dict[str, str] = field(default_factory=dict)
    holidays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NotifyConfig(WebhookSinkConfig):
    """Where the loop's notices go (callbacks/notify.py): a signed JSON POST per notice, as the lead
    webhook's (the same ``url``, ``secret``, ``timeout``); ``url = ""``: the log line only."""


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
    notify: NotifyConfig = field(default_factory=NotifyConfig)
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
    "CALLGUARD_NOTIFY_SECRET": ("callback", "notify", "secret"),
}

SECRET_KEYS = frozenset(".".join(path) for path in ENV_SECRETS.values()) | {"crm.amocrm.refresh_token"}
# Not secrets to scrub from bodies (they never leave), but masked wherever the config is shown.
HIDDEN_KEYS = SECRET_KEYS | {"web.users.password_hash"}
