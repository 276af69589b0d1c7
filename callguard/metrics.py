"""Prometheus metrics, one private registry for the process. Names are documented in docs/admin.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

SCREENS = Counter("callguard_screens", "FastAGI screens answered, by verdict", ["verdict"], registry=REGISTRY)
SCREEN_LATENCY = Histogram(
    "callguard_screen_latency_seconds",
    "Time from a complete FastAGI request to the verdict written back",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 1.0),
    registry=REGISTRY,
)
AGI_ERRORS = Counter(
    "callguard_agi_errors", "FastAGI connections that ended in an error, by kind", ["kind"], registry=REGISTRY
)
AGI_TIMEOUTS = Counter(
    "callguard_agi_deadline_exceeded", "Screens answered 'clean' because the deadline passed", registry=REGISTRY
)
AGI_ACTIVE = Gauge("callguard_agi_active_connections", "FastAGI connections open now", registry=REGISTRY)

AMI_CONNECTED = Gauge("callguard_ami_connected", "1 when logged in to AMI", registry=REGISTRY)
AMI_RECONNECTS = Counter("callguard_ami_reconnects", "AMI connection attempts after the first", registry=REGISTRY)
AMI_EVENTS = Counter("callguard_ami_events", "AMI events received, by event name", ["event"], registry=REGISTRY)
AMI_BAD_FRAMES = Counter("callguard_ami_bad_frames", "AMI frames that could not be parsed", registry=REGISTRY)

CALLS = Counter(
    "callguard_calls", "Finished calls, by outcome and reason", ["outcome", "reason"], registry=REGISTRY
)
CALLS_ACTIVE = Gauge("callguard_calls_active", "Calls the tracker follows now", registry=REGISTRY)
CALLS_EXPIRED = Counter("callguard_calls_expired", "Calls expired with no end seen", registry=REGISTRY)
CALLS_RECONCILED = Counter("callguard_calls_reconciled", "Calls rebuilt from Asterisk's records after a gap",
                           ["outcome"], registry=REGISTRY)
CALL_RECORDS_REJECTED = Counter("callguard_call_records_rejected", "AstDB call records that did not parse",
                                registry=REGISTRY)

OUTBOX_DEPTH = Gauge("callguard_outbox_pending", "Outbox items waiting for delivery", registry=REGISTRY)
OUTBOX_OLDEST = Gauge(
    "callguard_outbox_oldest_age_seconds", "Age of the oldest undelivered outbox item", registry=REGISTRY
)
OUTBOX_DEAD = Gauge("callguard_outbox_dead", "Outbox items in dead letters", registry=REGISTRY)
OUTBOX_DELIVERIES = Counter(
    "callguard_outbox_deliveries", "Delivery attempts, by result", ["result"], registry=REGISTRY
)

SYNC_AGE = Gauge("callguard_sync_age_seconds", "Seconds since the last successful CRM sync", registry=REGISTRY)
SYNC_RUNS = Counter("callguard_sync_runs", "CRM sync runs, by kind and result", ["kind", "result"], registry=REGISTRY)
CONTACTS_CACHED = Gauge("callguard_numbers_cached", "Phone numbers in the CRM cache", registry=REGISTRY)
SPAM_CACHED = Gauge("callguard_numbers_spam", "Cached phone numbers flagged spam", registry=REGISTRY)
WEBHOOKS = Counter(
    "callguard_webhooks", "CRM webhook deliveries, by CRM and result", ["crm", "result"], registry=REGISTRY
)
CRM_REQUESTS = Counter(
    "callguard_crm_requests", "CRM HTTP requests, by CRM and status class", ["crm", "status"], registry=REGISTRY
)
WEB_DROPPED = Counter(
    "callguard_web_connections_dropped",
    "HTTP connections closed by callguard's bounds, by reason (header_timeout, evicted, refused)",
    ["reason"], registry=REGISTRY,
)
AMI_TIMESTAMPS_CLAMPED = Counter(
    "callguard_ami_timestamps_clamped",
    "AMI events whose Timestamp was out of bounds or unreadable (arrival time used), by kind",
    ["kind"], registry=REGISTRY,
)

CALLBACKS_OPEN = Gauge(
    "callguard_callbacks_open", "Missed calls not yet called back (open call-backs)", registry=REGISTRY
)
CALLBACK_SLA_BREACHES = Counter(
    "callguard_callbacks_sla_breaches",
    "Call-backs whose first attempt did not come within callback.sla of the miss (counted once each)",
    registry=REGISTRY,
)
CALLBACK_HANDONS = Counter(
    "callguard_callbacks_handons", "Missed calls handed on to another manager after the pause", registry=REGISTRY
)
CALLBACK_ESCALATIONS = Counter(
    "callguard_callbacks_escalations", "Call-backs escalated to the head of sales", registry=REGISTRY
)
CALLBACK_STEPS = Counter(
    "callguard_callbacks_steps", "Call-back transitions persisted, by new state", ["state"], registry=REGISTRY
)
CALLBACK_NOTICES = Counter(
    "callguard_callbacks_notices", "Call-back notices POSTed to callback.notify.url, by result (sent, dropped)",
    ["result"], registry=REGISTRY,
)
CALLBACK_CRM_FAILURES = Counter(
    "callguard_callbacks_crm_failures", "CRM steps of the call-back loop that failed (retried later)",
    registry=REGISTRY,
)


class ReadCounter(Collector):
    """A counter read at scrape time from ``source`` (set at start-up), for a count that must survive the
    process: the loop stalls, which the stall log beside the store keeps (callguard/watchdog.py)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.source: Callable[[], int] | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.source() if self.source else 0)

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation)


LOOP_STALLS = ReadCounter("callguard_loop_stalls", "Event-loop stalls: sockets shut, process exited 70 (all runs)")
REGISTRY.register(LOOP_STALLS)
