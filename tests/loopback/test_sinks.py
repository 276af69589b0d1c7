"""Lead sinks: the structured-log sink and the signed webhook against a real loopback HTTP receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from callguard.config import Config, WebhookSinkConfig
from callguard.errors import RateLimitedError, SinkError
from callguard.leads.model import MissedCall
from callguard.leads.outbox import OutboxWorker
from callguard.leads.sinks import SIGNATURE_HEADER, LogSink, WebhookSink, build_sink
from callguard.store import Store
from tests.fakes.asterisk_ami import fresh_logging  # noqa: F401 (autouse)
from tests.fakes.leads import Clock, add

CALL = MissedCall("1795435962.104", "+15551230003", "5551000", "abandoned", 10.0, 17.0, 7.0, caller_name="Carol")
SECRET = "s3cret-webhook-key"


class Receiver:
    """A webhook receiver that answers from a script of (status, body, delay)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str, float]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        status, text, delay = self.script.pop(0) if self.script else (200, '{"id": "n8n-1"}', 0.0)
        if delay:
            await asyncio.sleep(delay)
        headers = {"Retry-After": "30"} if status == 429 else {}
        return web.Response(status=status, text=text, headers=headers, content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield r
    await runner.cleanup()


def hook(r: Receiver, timeout: float = 2.0) -> WebhookSink:
    return WebhookSink(WebhookSinkConfig(url=r.url, secret=SECRET, timeout=timeout))  # type: ignore[arg-type]


async def test_webhook_posts_signed_json(receiver: Receiver) -> None:
    sink = hook(receiver)
    try:
        d = await sink.deliver(CALL)
    finally:
        await sink.close()
    assert d.ref == "n8n-1" and not d.repeat
    ((headers, body),) = receiver.requests
    want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], want)
    assert headers["Idempotency-Key"] == CALL.linkedid
    doc = json.loads(body)
    assert doc["type"] == "missed_call" and doc["call"] == CALL.to_json() and doc["repeat"] is False


async def test_webhook_repeat_goes_to_the_open_lead(receiver: Receiver) -> None:
    receiver.script = [(204, "", 0.0)]
    sink = hook(receiver)
    try:
        d = await sink.deliver(dataclasses.replace(CALL, open_lead_ref="n8n-1", misses=2))
    finally:
        await sink.close()
    assert (d.ref, d.repeat) == ("n8n-1", True)
    assert json.loads(receiver.requests[0][1])["call"]["misses"] == 2


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (408, False), (400, True),
                                                    (401, True), (403, True), (404, True), (410, True)])
async def test_webhook_errors_say_whether_a_retry_can_help(receiver: Receiver, status: int, permanent: bool) -> None:
    receiver.script = [(status, '{"error": "x"}', 0.0)]
    sink = hook(receiver)
    try:
        with pytest.raises(SinkError) as info:
            await sink.deliver(CALL)
    finally:
        await sink.close()
    assert info.value.permanent is permanent


async def test_webhook_429_and_timeout_are_retryable(receiver: Receiver) -> None:
    receiver.script = [(429, "", 0.0), (200, "{}", 1.0)]
    sink = hook(receiver, timeout=0.2)
    try:
        with pytest.raises(RateLimitedError) as limited:
            await sink.deliver(CALL)
        assert limited.value.retry_after == 30.0
        with pytest.raises(SinkError) as slow:
            await sink.deliver(CALL)
        assert not slow.value.permanent
    finally:
        await sink.close()


async def test_webhook_unreachable_is_retryable() -> None:
    sink = WebhookSink(WebhookSinkConfig(url="http://127.0.0.1:9/hook", timeout=1.0))  # type: ignore[arg-type]
    try:
        with pytest.raises(SinkError) as info:
            await sink.deliver(CALL)
    finally:
        await sink.close()
    assert not info.value.permanent


async def test_outbox_to_webhook_500_then_dead_letter_nothing_lost(
    cfg: Config, store: Store, receiver: Receiver
) -> None:
    receiver.script = [(500, "", 0.0)] * 3
    clock = Clock()
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(
        cfg.outbox, sink="webhook", max_attempts=3, webhook=WebhookSinkConfig(url=receiver.url, secret=SECRET)))
    await add(store, "L1", clock)
    worker = OutboxWorker(cfg, store, build_sink(cfg), clock=clock)
    try:
        for _ in range(3):
            await worker.run_once()
            item = await store.outbox.get("L1")
            assert item is not None
            clock.t = item.next_at
    finally:
        await worker.sink.close()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "dead" and len(receiver.requests) == 3
    assert await store.outbox.retry("L1", clock())
    worker = OutboxWorker(cfg, store, build_sink(cfg), clock=clock)
    try:
        await worker.run_once()
    finally:
        await worker.sink.close()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "sent" and item.crm_ref == "n8n-1"
    assert {json.loads(b)["call"]["linkedid"] for _, b in receiver.requests} == {"L1"}


async def test_log_sink_writes_one_structured_event() -> None:
    with capture_logs() as logs:
        d = await LogSink().deliver(CALL)
    assert d.ref == f"log:{CALL.linkedid}"
    (event,) = [e for e in logs if e["event"] == "missed_call"]
    assert event["linkedid"] == CALL.linkedid and event["caller"] == "+15551230003" and event["reason"] == "abandoned"


def test_build_sink_by_config(cfg: Config) -> None:
    assert isinstance(build_sink(cfg), LogSink)
    hooked = dataclasses.replace(cfg, outbox=dataclasses.replace(
        cfg.outbox, sink="webhook", webhook=WebhookSinkConfig(url="http://127.0.0.1:1/x")))
    assert isinstance(build_sink(hooked), WebhookSink)
