"""Lead sinks: the structured-log sink and the signed webhook against a real loopback HTTP receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from callguard.cli import main
from callguard.config import Config, WebhookSinkConfig, load_config
from callguard.errors import EXIT_CONFIG, ConfigError, RateLimitedError, SinkError
from callguard.leads import leadfile
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


async def test_log_sink_writes_one_line_and_one_structured_event(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "leads.jsonl")
    with capture_logs() as logs:
        d = await sink.deliver(CALL)
    assert d.ref == f"log:{CALL.linkedid}" and not d.repeat
    (event,) = [e for e in logs if e["event"] == "missed_call"]
    assert event["linkedid"] == CALL.linkedid and event["caller"] == "+15551230003" and event["reason"] == "abandoned"
    raw = (tmp_path / "leads.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    line = json.loads(raw)
    assert {k: line[k] for k in CALL.to_json()} == CALL.to_json()
    assert (line["ref"], line["repeat"]) == (d.ref, False) and line["written_at"] > 0


async def test_log_sink_finds_its_own_lines_and_no_other(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "leads.jsonl")
    repeat = dataclasses.replace(CALL, linkedid="1795435962.200", open_lead_ref="log:1795435962.104", misses=2)
    prefix = dataclasses.replace(CALL, linkedid="1795435962.10")  # a Linkedid that is a prefix of another
    assert await sink.find_delivered(CALL) is None  # no file yet
    await sink.deliver(CALL)
    assert await sink.find_delivered(prefix) is None
    d = await sink.deliver(repeat)
    assert (d.ref, d.repeat) == ("log:1795435962.104", True)
    found = await sink.find_delivered(CALL)
    assert found is not None and (found.ref, found.repeat) == (f"log:{CALL.linkedid}", False)
    found = await sink.find_delivered(repeat)
    assert found is not None and (found.ref, found.repeat) == ("log:1795435962.104", True)


async def test_log_sink_search_is_bounded_to_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = LogSink(tmp_path / "leads.jsonl")
    await sink.deliver(CALL)
    first = (tmp_path / "leads.jsonl").stat().st_size
    monkeypatch.setattr(leadfile, "TAIL_BYTES", first + 10)  # the window starts inside the first line
    await sink.deliver(dataclasses.replace(CALL, linkedid="2.1"))
    assert await sink.find_delivered(CALL) is None
    assert await sink.find_delivered(dataclasses.replace(CALL, linkedid="2.1")) is not None


async def test_log_sink_terminates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    torn = dataclasses.replace(CALL, linkedid="9.9")
    whole = leadfile.line_of(torn, "log:9.9", False, 1.0)
    path.write_bytes(whole[: len(whole) // 2])  # power loss mid-line: no newline
    sink = LogSink(path)
    assert await sink.find_delivered(torn) is None  # half a line is not a delivery
    with capture_logs() as logs:
        await sink.deliver(CALL)
    assert sink.file.torn_lines == 1
    assert [e["event"] for e in logs if e["event"] == "leads_file_torn_line"] == ["leads_file_torn_line"]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3  # the torn line, ended; the new line, whole
    assert json.loads(lines[1])["linkedid"] == CALL.linkedid
    await sink.deliver(torn)  # its lead goes again, whole, and is found from now on
    assert sink.file.torn_lines == 1
    assert await sink.find_delivered(torn) is not None


async def test_log_sink_unwritable_file_is_a_retried_failure(tmp_path: Path, cfg: Config, store: Store) -> None:
    folder = tmp_path / "missing"
    clock = Clock()
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, log_file=str(folder / "leads.jsonl")))
    await add(store, "L1", clock)
    worker = OutboxWorker(cfg, store, build_sink(cfg), clock=clock)
    with capture_logs() as logs:
        await worker.run_once()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "pending" and "cannot write the leads file" in item.last_error
    (failed,) = [e for e in logs if e["event"] == "leads_file_write_failed"]
    assert failed["linkedid"] == "L1" and failed["path"] == str(folder / "leads.jsonl")
    folder.mkdir()
    clock.t = item.next_at
    await worker.run_once()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "sent"
    assert len((folder / "leads.jsonl").read_text().splitlines()) == 1


async def test_outbox_recovers_a_sending_item_from_the_leads_file(tmp_path: Path, cfg: Config, store: Store) -> None:
    """A kill between the line's fdatasync and the outbox's commit: the restart marks it sent, no 2nd line."""
    clock = Clock()
    await add(store, "L1", clock)
    await add(store, "L2", clock, caller="+79990001122")
    sink = build_sink(cfg)
    assert isinstance(sink, LogSink) and sink.file.path == tmp_path / "leads.jsonl"
    for lid in ("L1", "L2"):
        item = await store.outbox.get(lid)
        assert item is not None
        assert await store.outbox.mark_sending(lid, item.payload, clock())
    await sink.deliver(MissedCall.from_json((await store.outbox.get("L1")).payload))  # type: ignore[union-attr]
    worker = OutboxWorker(cfg, store, build_sink(cfg), clock=clock)
    await worker.recover()  # L1: found in the file → sent; L2: never written → pending again
    l1, l2 = await store.outbox.get("L1"), await store.outbox.get("L2")
    assert l1 is not None and l1.state == "sent" and l1.crm_ref == "log:L1"
    assert l2 is not None and l2.state == "pending"
    await worker.run_once()
    lids = [json.loads(x)["linkedid"] for x in (tmp_path / "leads.jsonl").read_text().splitlines()]
    assert sorted(lids) == ["L1", "L2"]


def test_log_file_defaults_next_to_the_store_and_resolves_relative(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[store]\npath = "db/cg.sqlite3"\n')
    assert load_config(path, env={}).outbox.log_file == str(tmp_path / "db" / "leads.jsonl")
    path.write_text('[store]\npath = "cg.sqlite3"\n[outbox]\nlog_file = "out/missed.jsonl"\n')
    assert load_config(path, env={}).outbox.log_file == str(tmp_path / "out" / "missed.jsonl")


@pytest.mark.parametrize("value", ['"  "', '"out/"', "5", '"."', '"cg.sqlite3"', '"config.toml/x"'])
def test_bad_log_file_is_a_config_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "cg.sqlite3"\n[outbox]\nlog_file = {value}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "outbox.log_file"
    assert main(["--config", str(path), "outbox", "list"]) == EXIT_CONFIG


def test_build_sink_by_config(cfg: Config) -> None:
    assert isinstance(build_sink(cfg), LogSink)
    hooked = dataclasses.replace(cfg, outbox=dataclasses.replace(
        cfg.outbox, sink="webhook", webhook=WebhookSinkConfig(url="http://127.0.0.1:1/x")))
    assert isinstance(build_sink(hooked), WebhookSink)


async def test_recovery_lookup_failure_asks_again_before_resending(
    tmp_path: Path, cfg: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink took the lead, the process died, and at the restart the sink could not be asked: the
    resend asks first, so no second copy (a CRM has no idempotency key to absorb one)."""
    clock = Clock()
    await add(store, "L1", clock)
    item = await store.outbox.get("L1")
    assert item is not None and await store.outbox.mark_sending("L1", item.payload, clock())
    await LogSink(tmp_path / "leads.jsonl").deliver(MissedCall.from_json(item.payload))
    worker = OutboxWorker(cfg, store, build_sink(cfg), clock=clock)
    assert isinstance(worker.sink, LogSink)
    real_find = worker.sink.file.find

    def down(linkedid: str) -> leadfile.Found | None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(worker.sink.file, "find", down)
    with capture_logs() as logs:
        await worker.recover()
    assert [e["linkedid"] for e in logs if e["event"] == "outbox_recover_lookup_failed"] == ["L1"]
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "pending" and item.last_error == "interrupted; sink not asked"
    await worker.run_once()  # still down: a retried failure, nothing written
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "pending" and "cannot read the leads file" in item.last_error
    monkeypatch.setattr(worker.sink.file, "find", real_find)
    clock.t = item.next_at
    await worker.run_once()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "sent" and item.crm_ref == "log:L1"
    assert len((tmp_path / "leads.jsonl").read_text().splitlines()) == 1
