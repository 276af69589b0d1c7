"""The call-back loop's notices (callbacks/notify.py): the document, the POST with its signature and key,
retries and drops against a real HTTP receiver on loopback, the config key, and the driver's wiring: an
assignment tells the manager and the head."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from callguard.callbacks.actions import Subject
from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.loop import HEAD, Action
from callguard.callbacks.notify import Notice, Notices, document
from callguard.callbacks.settings import parse_roster
from callguard.config import NotifyConfig, load_config
from callguard.errors import ConfigError
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import LINKEDID, RecordingCrm, deliver_lead, lab_config, member

SUBJECT = Subject(LINKEDID, "+79035550142", "5551000", "9774766")


class Receiver:
    """An HTTP receiver on loopback that answers from a script of statuses (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        self.got.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, headers={"Retry-After": "0"} if status == 429 else None)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/notice", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/notice"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def test_the_document_names_who_is_told_what_about_which_call() -> None:
    roster = parse_roster(lab_config())
    to_manager = document(Notice.of(SUBJECT, Action("notify", "Ivan", 1000.0, 2, "handed_on")), roster, 900.0)
    assert to_manager["to"] == {"name": "Ivan", "crm_user_id": 101, "role": "manager"}
    assert to_manager["manager"] == {"name": "Ivan", "crm_user_id": 101}
    assert to_manager["what"] == "handed_on" and to_manager["due"] == 1000.0 and to_manager["epoch"] == 2
    assert to_manager["call"] == {"key": LINKEDID, "customer": "+79035550142", "did": "5551000", "lead": "9774766"}
    assert "+79035550142" in to_manager["text"] and "5551000" in to_manager["text"]
    to_head = document(Notice.of(SUBJECT, Action("notify", HEAD, 1000.0, 2, "assigned:Petr")), roster, 900.0)
    assert to_head["to"] == {"name": "Olga", "crm_user_id": 7, "role": "head"}
    assert to_head["manager"] == {"name": "Petr", "crm_user_id": 102} and to_head["what"] == "assigned"
    assert "Petr" in to_head["text"]
    escalated = document(Notice.of(SUBJECT, Action("notify", HEAD, epoch=5, detail="escalated")), roster, 900.0)
    assert escalated["what"] == "escalated" and escalated["manager"] == {} and escalated["to"]["role"] == "head"


async def test_a_notice_is_signed_keyed_and_retried_past_a_5xx_and_a_429() -> None:
    async with Receiver([503, 429]) as rx:
        notices = Notices(NotifyConfig(url=rx.url, secret="s3cret"), parse_roster(lab_config()), retry_base=0.01)
        await notices.start()
        notices(SUBJECT, Action("notify", "Ivan", 1000.0, 3, "assigned"))
        await asyncio.wait_for(notices.drain(), 10)
        await notices.stop()
    assert len(rx.posts) == 3 and notices.sent == 1
    bodies = {body for _, body in rx.posts}
    assert len(bodies) == 1  # the same body (and signature) on every try
    headers, body = rx.posts[-1]
    want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Callguard-Signature"] == want
    assert headers["Idempotency-Key"] == f"{LINKEDID}:3:manager:Ivan"
    assert json.loads(body)["type"] == "callback_notice"


async def test_a_refused_notice_is_dropped_at_once_and_the_next_one_still_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with Receiver([400]) as rx:
        notices = Notices(NotifyConfig(url=rx.url), parse_roster(lab_config()), retry_base=0.01)
        await notices.start()
        notices(SUBJECT, Action("notify", "Ivan", 1000.0, 1, "assigned"))
        notices(SUBJECT, Action("notify", HEAD, 1000.0, 1, "assigned:Ivan"))
        await asyncio.wait_for(notices.drain(), 10)
        await notices.stop()
    assert len(rx.posts) == 2 and notices.sent == 1  # the 400 was not tried again
    assert "X-Callguard-Signature" not in rx.posts[0][0]  # no secret, no signature
    assert "callback_notice_dropped" in capsys.readouterr().out


async def test_an_unreachable_receiver_costs_its_tries_then_a_drop() -> None:
    async with Receiver() as rx:
        url = rx.url
    notices = Notices(NotifyConfig(url=url), parse_roster(lab_config()), retry_base=0.01)
    await notices.start()
    notices(SUBJECT, Action("notify", "Ivan", 1000.0, 1, "assigned"))
    await asyncio.wait_for(notices.drain(), 10)
    await notices.stop()
    assert notices.sent == 0


@pytest.mark.parametrize("url", ["ftp://x", "hooks.example/notice", "http://"])
def test_a_bad_notify_url_is_refused_at_load_naming_the_key(tmp_path: Path, url: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[callback.notify]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert e.value.key == "callback.notify.url"


def test_the_notify_secret_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[callback.notify]\nurl = "https://hooks.example/notice"\n')
    cfg = load_config(path, env={"CALLGUARD_NOTIFY_SECRET": "from-env"})
    assert cfg.callback.notify.secret == "from-env"


async def test_an_assignment_tells_the_manager_and_the_head() -> None:
    import time

    store = await Store.open(":memory:")
    try:
        async with Receiver() as rx:
            cb_cfg = lab_config()
            roster = parse_roster(cb_cfg)
            notices = Notices(NotifyConfig(url=rx.url), roster, retry_base=0.01)
            await notices.start()
            now = time.time()
            await deliver_lead(store, LINKEDID, now - 60)
            crm = RecordingCrm()
            d = CallbackDriver(cb_cfg, roster, Callbacks(store.db), crm, rng=random.Random(1), poll_s=0.05,
                               notices=notices)
            d.on_event(member("Agent101", "Local/101@agents"), now)
            await d.start()
            async with asyncio.timeout(10):
                while len(rx.posts) < 2:
                    rx.got.clear()
                    if len(rx.posts) < 2:
                        await rx.got.wait()
            await d.stop()
            await notices.drain()
            await notices.stop()
        docs: list[dict[str, Any]] = [json.loads(body) for _, body in rx.posts]
        assert sorted((doc["to"]["role"], doc["to"]["name"], doc["what"]) for doc in docs) == [
            ("head", "Olga", "assigned"), ("manager", "Ivan", "assigned")]
        assert {doc["call"]["key"] for doc in docs} == {LINKEDID}
    finally:
        await store.close()
