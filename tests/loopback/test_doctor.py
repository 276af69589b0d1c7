"""``callguard doctor``: each broken piece is a failed check that names its fix; a healthy host passes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from callguard.agi.server import AgiServer
from callguard.cli import main
from callguard.cli.doctor import (
    Result,
    check_agi,
    check_ami,
    check_ami_permissions,
    check_ami_timestamps,
    check_ami_write,
    check_crm,
    check_hangup_handler,
    check_store,
    check_web,
    run_checks,
)
from callguard.config import Config, load_config
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from tests.fakes.asterisk_ami import FakeAsterisk, Script

ROOT = Path(__file__).parents[2]
TRACES = Path(__file__).parents[1] / "fixtures" / "traces"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """``main()`` points structlog at the captured stderr, which pytest closes after the test: put the
    defaults back so later tests do not log into a closed file."""
    yield
    structlog.reset_defaults()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_ami(cfg: Config, port: int, secret: str = "secret") -> Config:
    return dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, enabled=True, port=port, secret=secret))


@contextlib.asynccontextmanager
async def bad_login_ami() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A tiny AMI that rejects every login with the recorded Asterisk 22 answer, byte for byte."""
    recorded = (TRACES / "s00_ami_login_failure.badlogin.ami.txt").read_bytes()
    assert recorded.startswith(BANNER)
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(BANNER)
            got.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(recorded[len(BANNER):])
            await writer.drain()
            await reader.read(65536)  # the client's Logoff, or EOF
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), got
    finally:
        server.close()
        await server.wait_closed()


# --- store ----------------------------------------------------------------------------------------


async def test_store_checks(tmp_path: Path) -> None:
    path = tmp_path / "db" / "cg.sqlite3"
    assert check_store(path).status == "ok" and "will be created" in check_store(path).message
    assert not path.exists()  # doctor never creates the store
    store = await Store.open(path)
    await store.close()
    r = check_store(path)
    assert r.status == "ok" and "integrity ok" in r.message

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    r = check_store(path)
    assert r.status == "fail" and "newer" in r.message and "upgrade callguard" in r.fix

    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"this is not a database" * 200)
    r = check_store(broken)
    assert r.status == "fail" and r.fix


# --- AGI port -------------------------------------------------------------------------------------


async def test_agi_port_free(cfg: Config) -> None:
    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=free_port()))
    r = await check_agi(cfg)
    assert r.status == "ok" and "free" in r.message


async def test_agi_port_answered_by_callguard(cfg: Config, store: Store) -> None:
    screener = ScreenService(cfg, store, parse_schedule(cfg.hours))
    agi = AgiServer(dataclasses.replace(cfg.agi, port=0), screener)
    await screener.start()
    await agi.start()
    try:
        assert agi.port is not None
        r = await check_agi(dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=agi.port)))
    finally:
        await agi.stop()
        await screener.stop()
    assert r.status == "ok" and "running callguard" in r.message and "CALLGUARD_VERDICT" in r.message


@contextlib.asynccontextmanager
async def other_program(answer: bytes, read_first: bool = False) -> AsyncIterator[int]:
    """A port held by something that is not callguard: it answers ``answer`` and hangs up."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read_first:
            await reader.read(100)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_agi_port_taken_by_someone_else(cfg: Config) -> None:
    async with other_program(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        r = await check_agi(dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=port)))
    assert r.status == "fail" and "another program" in r.message and "agi.port" in r.fix


# --- web port -------------------------------------------------------------------------------------


async def test_web_port_free_ours_or_taken(cfg: Config, store: Store) -> None:
    from callguard.web.server import WebServer

    free = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, port=free_port()))
    assert (await check_web(free)).status == "ok"
    assert (await check_web(dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=False)))).status \
        == "skip"
    for token in ("", "t0ken-t0ken"):
        running = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, port=0, token=token))
        server = WebServer(running, store)
        await server.start()
        try:
            assert server.port is not None
            r = await check_web(dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, port=server.port)))
        finally:
            await server.stop()
        assert r.status == "ok" and "running callguard" in r.message, token

    router = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>router</html>"
    async with other_program(router, read_first=True) as port:
        r = await check_web(dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, port=port)))
    assert r.status == "fail" and "web.port" in r.fix


# --- AMI ------------------------------------------------------------------------------------------


async def test_ami_closed_port(cfg: Config, tmp_path: Path) -> None:
    results = await check_ami(with_ami(cfg, free_port()), tmp_path)
    login = results[0]
    assert login.status == "fail" and "cannot connect to AMI" in login.message
    assert "manager.conf" in login.fix and "enabled = yes" in login.fix


async def test_ami_wrong_secret(cfg: Config, tmp_path: Path) -> None:
    async with bad_login_ami() as (port, got):
        results = await check_ami(with_ami(cfg, port, secret="wrong"), tmp_path)
    login = results[0]
    assert login.status == "fail" and "rejected (Authentication failed)" in login.message
    assert "CALLGUARD_AMI_SECRET" in login.fix and "permit=" in login.fix
    assert b"Action: Login\r\n" in got[0] and b"Secret: wrong\r\n" in got[0]


async def test_ami_good_login_and_permissions(cfg: Config, tmp_path: Path) -> None:
    shutil.copy(ROOT / "dialplan" / "manager_callguard.conf", tmp_path / "manager_callguard.conf")
    (tmp_path / "manager.conf").write_text("[general]\nenabled = yes\n\n#include manager_callguard.conf\n")
    fake = await FakeAsterisk([Script()]).start()
    try:
        results = await check_ami(with_ami(cfg, fake.port), tmp_path)
    finally:
        await fake.stop()
    assert [(r.status, r.name) for r in results] == [
        ("ok", "ami"), ("ok", "ami read"), ("ok", "ami write"), ("warn", "ami time"), ("skip", "call record")]
    assert fake.logins[0]["Username"] == "callguard" and fake.logins[0]["Secret"] == "secret"
    assert "agent" in results[1].message and "call" in results[1].message


def test_ami_permissions_lacking_or_unreadable(tmp_path: Path) -> None:
    (tmp_path / "manager.conf").write_text("[callguard]\nsecret = x\nread = call,dialplan ; no agent, no user\n")
    r = check_ami_permissions("callguard", tmp_path)
    assert r.status == "fail" and "agent, user" in r.message and "read = call,agent,user,dialplan" in r.fix
    (tmp_path / "manager.conf").write_text("[admin]\nread = all\n")
    r = check_ami_permissions("callguard", tmp_path)
    assert r.status == "fail" and "#include manager_callguard.conf" in r.fix
    r = check_ami_permissions("callguard", tmp_path / "nowhere")
    assert r.status == "skip"


def test_ami_write_class_for_the_reconcile(tmp_path: Path) -> None:
    (tmp_path / "manager.conf").write_text("[callguard]\nsecret = x\nread = all\nwrite =\n")
    r = check_ami_write("callguard", tmp_path)
    assert r.status == "fail" and "write = reporting" in r.fix
    (tmp_path / "manager.conf").write_text("[callguard]\nwrite = system,call\n")
    assert check_ami_write("callguard", tmp_path).status == "ok"
    assert check_ami_write("callguard", tmp_path / "nowhere").status == "skip"


def test_hangup_handler_read_from_the_installed_dialplan(tmp_path: Path) -> None:
    assert check_hangup_handler(tmp_path).status == "skip"  # unreadable: says how to check by hand
    shutil.copy(ROOT / "dialplan" / "extensions_callguard.conf", tmp_path / "extensions_callguard.conf")
    r = check_hangup_handler(tmp_path)
    assert r.status == "ok" and "read from the file" in r.message
    old = (tmp_path / "extensions_callguard.conf").read_text().replace("hangup_handler_push", "x")
    (tmp_path / "extensions_callguard.conf").write_text(old)
    assert check_hangup_handler(tmp_path).status == "fail"


def test_ami_timestampevents_from_manager_conf(tmp_path: Path) -> None:
    conf = tmp_path / "manager.conf"
    conf.write_text("[general]\nenabled = yes\n")
    r = check_ami_timestamps(tmp_path)
    assert r.status == "warn" and "timestampevents = yes" in r.fix
    conf.write_text("[general]\nenabled = yes\ntimestampevents = Yes ; times from Asterisk\n[callguard]\n")
    assert check_ami_timestamps(tmp_path).status == "ok"
    assert check_ami_timestamps(tmp_path / "nowhere").status == "skip"


async def test_ami_disabled_or_no_secret(cfg: Config, tmp_path: Path) -> None:
    assert [r.status for r in await check_ami(cfg, tmp_path)] == ["skip"]
    r = (await check_ami(with_ami(cfg, free_port(), secret=""), tmp_path))[0]
    assert r.status == "fail" and "CALLGUARD_AMI_SECRET" in r.fix


# --- CRM ------------------------------------------------------------------------------------------


async def test_crm_none_is_skipped(cfg: Config) -> None:
    r = await check_crm(cfg)
    assert r == Result("skip", "crm", "crm.kind = none: local allow/block lists only",
                       "set crm.kind to amocrm or bitrix24 to sync spam flags and send leads")


async def test_crm_answering_401(tmp_path: Path) -> None:
    pytest.importorskip("callguard.crm", reason="the CRM adapters are not in this build")
    hits: list[str] = []

    async def unauthorized(request: web.Request) -> web.Response:
        hits.append(request.headers.get("Authorization", ""))
        # amoCRM's answer to a revoked token (crm-apis.md): 401 with a problem+json body.
        return web.json_response({"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                                  "detail": "Unauthorized"}, status=401, content_type="application/problem+json")

    app = web.Application()
    app.router.add_get("/api/v4/account", unauthorized)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        path = tmp_path / "config.toml"
        path.write_text(f'[crm]\nkind = "amocrm"\n[crm.amocrm]\nbase_url = "http://127.0.0.1:{port}"\n'
                        'token = "revoked-token"\nspam_field = "Spam"\n')
        cfg = load_config(path, env={})
        r = await check_crm(cfg)
    finally:
        await runner.cleanup()
    assert hits == ["Bearer revoked-token"]  # a 401 is final: asked once, not retried
    assert r.status == "fail" and "rejected the credentials" in r.message
    assert "CALLGUARD_CRM_TOKEN" in r.fix
    assert "revoked-token" not in r.line()


async def _crm_fake(handler: object) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


async def test_bitrix24_webhook_answering_401(tmp_path: Path) -> None:
    pytest.importorskip("callguard.crm.bitrix24", reason="the Bitrix24 adapter is not in this build")
    paths: list[str] = []

    async def invalid(request: web.Request) -> web.Response:
        paths.append(request.path)
        # Bitrix24's answer to a deleted or wrong inbound webhook (crm-apis.md).
        return web.json_response({"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
                                 status=401)

    runner, port = await _crm_fake(invalid)
    try:
        key = "k3y0fth3w3bh00k"
        path = tmp_path / "config.toml"
        path.write_text('[crm]\nkind = "bitrix24"\n[crm.bitrix24]\nspam_field = "UF_CRM_SPAM"\n')
        cfg = load_config(path, env={"CALLGUARD_CRM_WEBHOOK_URL": f"http://127.0.0.1:{port}/rest/1/{key}/"})
        r = await check_crm(cfg)
    finally:
        await runner.cleanup()
    assert len(paths) == 1 and "crm.contact.fields" in paths[0]
    assert r.status == "fail" and "rejected the credentials" in r.message and "CALLGUARD_CRM_WEBHOOK_URL" in r.fix
    assert key not in r.line()


# --- the command ----------------------------------------------------------------------------------


async def test_all_checks_in_order(cfg: Config, tmp_path: Path) -> None:
    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=free_port()),
                              web=dataclasses.replace(cfg.web, port=free_port()))
    results = await run_checks(cfg, tmp_path)
    assert [(r.name, r.status) for r in results] == [
        ("config", "ok"), ("store", "ok"), ("agi port", "ok"), ("web port", "ok"), ("ami", "skip"), ("crm", "skip")
    ]
    assert str(cfg.source) in results[0].message


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f'[store]\npath = "cg.sqlite3"\n[agi]\nport = {free_port()}\n[web]\nport = {free_port()}\n')
    assert main(["--config", str(conf), "doctor", "--asterisk-etc", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["ok", "ok", "ok", "ok", "skip", "skip"]

    conf.write_text(f'[store]\npath = "cg.sqlite3"\n[agi]\nport = {free_port()}\n[web]\nenabled = false\n'
                    f'[ami]\nenabled = true\nport = {free_port()}\nsecret = "s"\n')
    assert main(["--config", str(conf), "doctor", "--asterisk-etc", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    fail = next(line for line in out.splitlines() if line.startswith("fail"))
    assert "cannot connect to AMI" in fail and "→ in /etc/asterisk/manager.conf" in fail


async def test_secrets_come_from_callguard_env_beside_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By hand, doctor reads the unit's EnvironmentFile too: the AMI secret lives only there."""
    async with bad_login_ami() as (port, got):
        conf = tmp_path / "config.toml"
        conf.write_text(f'[store]\npath = "cg.sqlite3"\n[agi]\nport = {free_port()}\n[web]\nenabled = false\n'
                        f'[ami]\nenabled = true\nport = {port}\n')
        (tmp_path / "callguard.env").write_text('# secrets\nCALLGUARD_AMI_SECRET="from-env-file"\nOTHER=x\n')
        code = await asyncio.to_thread(main, ["--config", str(conf), "doctor", "--asterisk-etc", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "secrets from" in out.splitlines()[0]
    assert b"Secret: from-env-file\r\n" in got[0]
    assert "from-env-file" not in out
