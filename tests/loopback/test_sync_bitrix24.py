"""Full and incremental sync against the strict Bitrix24 fake (tests/fakes/bitrix24.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callguard.crm.bitrix24 import Bitrix24
from callguard.errors import CrmAuthError, CrmError
from callguard.store import Store
from callguard.sync import SyncService
from tests.crm_support import b24_config
from tests.fakes.bitrix24 import FakeBitrix


@pytest.fixture
async def fake() -> AsyncIterator[FakeBitrix]:
    f = FakeBitrix(rate=100, burst=20)
    await f.start()
    try:
        yield f
    finally:
        await f.close()
    assert f.errors == [], f.errors


@pytest.fixture
async def env(tmp_path: Path, fake: FakeBitrix) -> AsyncIterator[tuple[SyncService, Store, FakeBitrix]]:
    cfg = b24_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    svc = SyncService(cfg, store, Bitrix24(cfg))
    try:
        yield svc, store, fake
    finally:
        await svc.crm.close()
        await store.close()


def seed(fake: FakeBitrix) -> dict[str, int]:
    return {
        "ivan": fake.add_contact("Иван Петров", ["+79123456789", "8 (999) 123-45-67"], owner=7),
        "spammer": fake.add_contact("Спам Бот", ["89995550011"], spam=True),
        "none": fake.add_contact("Без телефона", []),
        "many": fake.add_contact("Много", [f"8-912-000-00-{i:02d}" for i in range(1, 4)]),
    }


async def test_full_sync_flags_formats_and_multiple_phones(env: tuple[SyncService, Store, FakeBitrix]) -> None:
    svc, store, fake = env
    ids = seed(fake)
    for i in range(120):  # past two pages of 50
        fake.add_contact(f"c {i}", [f"+7916{i:07d}"])
    report = await svc.full()
    assert report.contacts == 124 and report.pages == 3
    spam = await store.numbers.lookup("+79995550011")
    assert spam.contact is not None and spam.contact.spam
    ivan = await store.numbers.lookup("+79991234567")
    assert ivan.contact is not None and ivan.contact.contact_id == str(ids["ivan"])
    assert ivan.contact.name == "Иван Петров" and ivan.contact.owner == "7" and not ivan.contact.spam
    assert await store.numbers.count() == (120 + 2 + 1 + 3, 1)


async def test_incremental_and_resync(env: tuple[SyncService, Store, FakeBitrix]) -> None:
    svc, store, fake = env
    ids = seed(fake)
    await svc.full()
    fake.update_contact(ids["ivan"], phones=["+79123456789"], spam=True)
    fake.update_contact(ids["spammer"], spam=False)
    report = await svc.incremental()
    assert report.removed == 1 and report.changed == 2  # the first run starts CLOCK_SKEW back
    assert (await store.numbers.lookup("+79991234567")).contact is None
    hit = await store.numbers.lookup("+79123456789")
    assert hit.contact is not None and hit.contact.spam
    miss = await store.numbers.lookup("+79995550011")
    assert miss.contact is not None and not miss.contact.spam
    # A deleted contact is not in Bitrix24's change feed: the full resync purges it.
    del fake.contacts[ids["many"]]
    assert (await svc.incremental()).deleted == 0
    assert (await svc.full()).purged == 3
    assert (await store.numbers.lookup("+79120000002")).contact is None


async def test_leaky_bucket_never_overflows_over_10000_contacts(tmp_path: Path) -> None:
    fake = FakeBitrix(rate=100, burst=20)
    await fake.start()
    cfg = b24_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    crm = Bitrix24(cfg)
    try:
        for i in range(10_000):
            fake.add_contact(f"c {i}", [f"8916{i:07d}"], spam=i % 100 == 0)
        report = await SyncService(cfg, store, crm).full()
        assert report.contacts == 10_000
        assert fake.violations == 0
        assert await store.numbers.count() == (10_000, 100)
    finally:
        await crm.close()
        await store.close()
        await fake.close()
    assert fake.errors == []


async def test_503_query_limit_storm_ends_in_success(env: tuple[SyncService, Store, FakeBitrix]) -> None:
    svc, _store, fake = env
    seed(fake)
    fake.fail_next(503, times=4)
    fake.fail_next(500)
    report = await svc.run_once(force_full=True)
    assert report is not None and report.contacts == 4 and svc.last_error is None


async def test_wrong_webhook_secret_and_missing_spam_field(tmp_path: Path, fake: FakeBitrix) -> None:
    base = f"http://127.0.0.1:{fake.port}"
    bad = Bitrix24(b24_config(tmp_path, base, webhook_url=f"{base}/rest/1/wrong/"))
    nofield = Bitrix24(b24_config(tmp_path, base, spam_field="UF_CRM_NOPE"))
    good = Bitrix24(b24_config(tmp_path, base))
    try:
        with pytest.raises(CrmAuthError):
            await bad.verify()
        with pytest.raises(CrmError, match="UF_CRM_NOPE"):
            await nofield.verify()
        assert "UF_CRM_SPAM (boolean)" in await good.verify()
    finally:
        for crm in (bad, nofield, good):
            await crm.close()
