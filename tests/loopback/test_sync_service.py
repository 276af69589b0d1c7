"""The "sync" part inside ``callguard run``'s service: started when a CRM is configured, fills the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callguard.app import Service
from callguard.config import load_config
from tests.crm_support import amo_config
from tests.fakes.amocrm import FakeAmo


async def test_service_runs_the_sync_part(tmp_path: Path) -> None:
    fake = FakeAmo(rps=50)
    await fake.start()
    amo_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    path = tmp_path / "config.toml"
    path.write_text(path.read_text() + '[agi]\nport = 0\n[web]\nenabled = false\n[sync]\ninterval = "1h"\n')
    cfg = load_config(path, env={})
    fake.add_contact("Спам", ["+79995550011"], spam=True)
    service = Service(cfg)
    try:
        parts = await service.start()
        sync = parts.sync
        assert sync is not None and service.store is not None
        async with asyncio.timeout(10):
            await sync.synced.wait()  # the first full sync runs at start
        hit = await service.store.numbers.lookup("+79995550011")
        assert hit.contact is not None and hit.contact.spam and sync.last_error is None
    finally:
        await service.stop()
        await fake.close()
    assert fake.errors == []
