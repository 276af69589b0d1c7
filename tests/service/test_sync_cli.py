"""``callguard sync [--full]`` as a process against the amoCRM fake: prints what changed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.crm_support import amo_config
from tests.fakes.amocrm import FakeAmo


async def run_cli(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callguard", "--config", str(config), "sync", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_sync_command_prints_changes(tmp_path: Path) -> None:
    fake = FakeAmo(rps=50)
    await fake.start()
    try:
        amo_config(tmp_path, f"http://127.0.0.1:{fake.port}")
        config = tmp_path / "config.toml"
        fake.add_contact("Иван", ["+79123456789", "89991234567"], spam=True)
        fake.add_contact("Пётр", ["+79120000000"])
        code, out = await run_cli(config, "--full")
        assert code == 0, out
        assert "full sync: 2 contacts read in 1 pages" in out and "phones +3 -0" in out
        assert "cache: 3 phone numbers, 2 flagged spam" in out
        fake.update_contact(min(fake.contacts), phones=["+79123456789"])
        code, out = await run_cli(config)
        assert code == 0, out
        assert "incremental sync" in out and "-1" in out and "cache: 2 phone numbers, 1 flagged spam" in out
        fake.token = "revoked"
        code, out = await run_cli(config)
        assert code == 1 and "sync failed" in out and "401" in out and "amo-token" not in out
    finally:
        await fake.close()
    assert fake.errors == []
