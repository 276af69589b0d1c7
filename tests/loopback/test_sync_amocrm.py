"""Full and incremental sync against the strict amoCRM fake (tests/fakes/amocrm.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.crm.amocrm import AmoCrm
from callguard.errors import CrmAuthError
from callguard.phone import normalise, to_e164
from callguard.screening.rules import Verdict, decide, parse_schedule
from callguard.store import Store
from callguard.sync import SyncService
from tests.crm_support import amo_config
from tests.fakes.amocrm import FakeAmo


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmo]:
    f = FakeAmo(rps=50)
    await f.start()
    try:
        yield f
    finally:
        await f.close()
    assert f.errors == [], f.errors  # strict: any request the real API would reject fails the test


@pytest.fixture
async def env(tmp_path: Path, fake: FakeAmo) -> AsyncIterator[tuple[SyncService, Store, FakeAmo]]:
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    svc = SyncService(cfg, store, AmoCrm(cfg, store))
    try:
        yield svc, store, fake
    finally:
        await svc.crm.close()
        await store.close()


async def verdict(svc: SyncService, raw: str) -> str:
    cfg = svc.cfg
    phone = normalise(raw, "RU")
    lookup = await svc.store.numbers.lookup(phone.key)
    return decide(phone, "", datetime.now(UTC), lookup, cfg.screening, parse_schedule(cfg.hours)).verdict.value


def seed(fake: FakeAmo) -> dict[str, int]:
    return {
        "ivan": fake.add_contact("Иван Иванов", ["+79123456789", "8 (999) 123-45-67"], spam=False, owner=11),
        "spammer": fake.add_contact("Спамер", ["89995550011"], spam=True, owner=12),
        "bare": fake.add_contact("Без полей", []),  # custom_fields_values: null
        "three": fake.add_contact("Три номера", ["+7 912 000-00-01", "8-912-000-00-02", "+79120000003"]),
        # An order number whose digits contain a phone: query= would match it (§1.4 trap).
        "order": fake.add_contact("Заказчик", ["+79001112233"], order="Z-9995550011"),
    }


async def test_full_sync_writes_every_phone_with_its_flag(env: tuple[SyncService, Store, FakeAmo]) -> None:
    svc, store, fake = env
    ids = seed(fake)
    report = await svc.full()
    assert report.contacts == 5 and report.added == 7
    assert await verdict(svc, "89995550011") == Verdict.SPAM  # 8… stored, +7… lookup
    assert await verdict(svc, "+79991234567") == Verdict.CLEAN
    hit = await store.numbers.lookup("+79991234567")
    assert hit.contact is not None and hit.contact.contact_id == str(ids["ivan"])
    assert hit.contact.owner == "11" and hit.contact.name == "Иван Иванов"
    for n in ("+79120000001", "+79120000002", "+79120000003"):
        found = await store.numbers.lookup(n)
        assert found.contact is not None and found.contact.contact_id == str(ids["three"])
    assert await store.numbers.count() == (7, 1)


async def test_incremental_sync_flags_removed_phones_and_deleted_contacts(
    env: tuple[SyncService, Store, FakeAmo],
) -> None:
    svc, store, fake = env
    ids = seed(fake)
    await svc.full()
    fake.update_contact(ids["ivan"], phones=["+79123456789"], spam=True)  # one phone removed, flagged
    fake.delete_contact(ids["spammer"])
    new = fake.add_contact("Новый", ["8 912 777 66 55"], spam=True)
    report = await svc.incremental()
    assert report.removed == 1 and report.deleted == 1
    assert (await store.numbers.lookup("+79991234567")).contact is None
    assert await verdict(svc, "+79123456789") == Verdict.SPAM
    assert (await store.numbers.lookup("+79995550011")).contact is None
    found = await store.numbers.lookup("+79127776655")
    assert found.contact is not None and found.contact.contact_id == str(new)
    # Nothing changed since: the next run writes nothing new and deletes nothing again.
    again = await svc.incremental()
    assert again.added == again.removed == again.deleted == 0


async def test_full_resync_purges_what_the_crm_lost(env: tuple[SyncService, Store, FakeAmo]) -> None:
    svc, store, fake = env
    ids = seed(fake)
    await svc.full()
    del fake.contacts[ids["three"]]  # gone without an event: only a full resync can tell
    fake.contacts[ids["ivan"]]["phones"] = ["+79123456789"]
    report = await svc.full()
    assert report.purged == 3 and report.removed == 1
    assert (await store.numbers.lookup("+79120000002")).contact is None
    assert (await store.numbers.lookup("+79991234567")).contact is None
    assert (await store.numbers.lookup("+79123456789")).contact is not None


async def test_full_sync_resumes_from_its_last_page(env: tuple[SyncService, Store, FakeAmo]) -> None:
    svc, store, fake = env
    for i in range(700):  # three pages of 250
        fake.add_contact(f"c{i}", [f"+7916{i:07d}"])
    page_calls = []
    real = svc.crm.list_page

    async def crash_on_third(token: str | None):  # type: ignore[no-untyped-def]
        page_calls.append(token)
        if token == "3" and page_calls.count("3") == 1:
            raise RuntimeError("process killed")
        return await real(token)

    svc.crm.list_page = crash_on_third  # type: ignore[method-assign]
    assert await svc.run_once(force_full=True) is None  # the crash
    assert (await store.sync_state.get("amocrm")).full_page == "3"
    assert (await store.numbers.count())[0] == 500
    report = await svc.run_once()
    assert report is not None and report.resumed and report.pages == 1 and report.purged == 0
    assert page_calls == [None, "2", "3", "3"]
    assert (await store.numbers.count())[0] == 700


async def test_rate_limit_never_exceeded_over_10000_contacts(tmp_path: Path) -> None:
    fake = FakeAmo(rps=40)
    await fake.start()
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}", rate_rps=40.0)
    store = await Store.open(cfg.store.path)
    crm = AmoCrm(cfg, store)
    try:
        for i in range(10_000):
            fake.contacts[i + 1] = {"name": f"c{i}", "owner": 1, "phones": [f"+7916{i:07d}"], "spam": i % 10 == 0,
                                    "order": None, "updated_at": 1_700_000_000, "created_at": 1_700_000_000}
        report = await SyncService(cfg, store, crm).full()
        assert report.contacts == 10_000
        assert fake.violations == 0
        assert await store.numbers.count() == (10_000, 1000)
    finally:
        await crm.close()
        await store.close()
        await fake.close()
    assert fake.errors == []


async def test_429_and_5xx_storms_end_in_success(env: tuple[SyncService, Store, FakeAmo]) -> None:
    svc, _store, fake = env
    seed(fake)
    fake.fail_next(429, times=2, retry_after=0.01)
    fake.fail_next(503, times=2)
    fake.fail_next(502)
    report = await svc.run_once(force_full=True)
    assert report is not None and report.contacts == 5
    assert svc.last_error is None


async def test_bad_token_is_a_hard_stop(tmp_path: Path, fake: FakeAmo) -> None:
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}", token="wrong")
    store = await Store.open(cfg.store.path)
    svc = SyncService(cfg, store, AmoCrm(cfg, store))
    try:
        seed(fake)
        assert await svc.run_once() is None
        assert svc.last_error is not None and "401" in svc.last_error
        with pytest.raises(CrmAuthError):
            await svc.crm.verify()
        assert sum(fake.calls.values()) == 2  # one request each: no retry storm on 401
    finally:
        await svc.crm.close()
        await store.close()


async def test_oauth_refresh_once_on_401_and_keeps_the_new_refresh_token(tmp_path: Path, fake: FakeAmo) -> None:
    fake.oauth.update(client_id="cid", client_secret="csecret", refresh_token="r1")
    fake.token = "current"
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}", token="expired", client_id="cid",
                     client_secret="csecret", redirect_uri="https://x.example/cb", refresh_token="r1")
    store = await Store.open(cfg.store.path)
    crm = AmoCrm(cfg, store)
    try:
        assert "spam field #777" in await crm.verify()
        assert await store.sync_state.get_tokens("amocrm") == (fake.token, fake.oauth["refresh_token"])
        assert fake.oauth["refresh_token"] != "r1"
    finally:
        await crm.close()
        await store.close()


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"(\+7|8)9\d{2}[ -]?\d{3}[ -]?\d{2}[ -]?\d{2}", fullmatch=True))
def test_crm_phone_fast_path_agrees_with_full_normalisation(raw: str) -> None:
    assert to_e164(raw, "RU") == normalise(raw, "RU", max_extension_digits=0).e164
