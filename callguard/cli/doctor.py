"""``callguard doctor``: is this host ready to run callguard? One line per check, with the fix.

Checks, in the order a newcomer meets them: the config file, the SQLite store (schema version and
``PRAGMA integrity_check``, read-only: doctor never migrates), the FastAGI port (free, or answered by a
running callguard), AMI (reachable, login accepted, the read classes callguard needs granted in
manager.conf), and the CRM (reachable, credentials, the spam field). Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sqlite3
from pathlib import Path

from callguard.ami.wire import FrameFeeder, encode_action
from callguard.cli.doctor_asterisk import (
    Result,
    check_ami_permissions,
    check_ami_timestamps,
    check_ami_write,
    check_hangup_handler,
)
from callguard.config import ENV_SECRETS, Config, load_config
from callguard.errors import EXIT_FAILURE, EXIT_OK, AmiProtocolError, CrmAuthError, CrmError
from callguard.store.migrations import LATEST
from callguard.store.stats import DOCTOR_UNIQUEID

PROBE_TIMEOUT = 5.0
TEST_CALLER = "+70000000000"




def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check config, store, AGI port, AMI and CRM; say what to fix")
    p.add_argument("--asterisk-etc", default="/etc/asterisk", metavar="DIR",
                   help="where manager.conf is, to check the AMI user's read classes (default /etc/asterisk)")
    p.set_defaults(handler=handle)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as systemd's ``EnvironmentFile=`` reads them (comments, optional quotes)."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def with_env_file(cfg: Config) -> tuple[Config, str]:
    """Doctor run by hand lacks the unit's ``EnvironmentFile=``: read ``callguard.env`` beside the config
    (where install.sh puts it), so the checks see the secrets the service will see."""
    if cfg.source is None:
        return cfg, ""
    env_file = cfg.source.parent / "callguard.env"
    try:
        extra = read_env_file(env_file)
    except OSError:
        return cfg, ""
    secrets = {k: v for k, v in extra.items() if k in ENV_SECRETS and v}
    if not secrets:
        return cfg, ""
    return load_config(cfg.source, {**secrets, **os.environ}), f" (+ secrets from {env_file})"


def handle(args: argparse.Namespace, cfg: Config) -> int:
    cfg, note = with_env_file(cfg)
    results = asyncio.run(run_checks(cfg, Path(args.asterisk_etc), note))
    for r in results:
        print(r.line())
    return EXIT_FAILURE if any(r.status == "fail" for r in results) else EXIT_OK


async def run_checks(cfg: Config, asterisk_etc: Path = Path("/etc/asterisk"), note: str = "") -> list[Result]:
    source = str(cfg.source) if cfg.source else "embedded defaults (no config file found)"
    results = [Result("ok", "config", f"loaded from {source}{note}")]
    results.append(await asyncio.to_thread(check_store, cfg.store.path))
    results.append(await check_agi(cfg))
    results.append(await check_web(cfg))
    results += await check_ami(cfg, asterisk_etc)
    results.append(await check_crm(cfg))
    return results


# --- store ----------------------------------------------------------------------------------------


def check_store(path: Path) -> Result:
    if str(path) == ":memory:":
        return Result("skip", "store", "store.path is :memory: (nothing survives a restart)",
                      "set store.path to a file, e.g. /var/lib/callguard/callguard.sqlite3")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            return Result("fail", "store", f"{path} does not exist and no parent folder does",
                          "set store.path to a writable place, e.g. /var/lib/callguard/callguard.sqlite3")
        return Result("ok", "store", f"{path} will be created at the first `callguard run`")
    try:
        # Read-only: doctor must not migrate or create anything behind the service's back.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
        finally:
            conn.close()
    except sqlite3.Error as e:
        return Result("fail", "store", f"cannot read {path}: {e}",
                      "check the file's owner and mode (the service user must read and write it)")
    if version > LATEST:
        return Result("fail", "store", f"schema version {version} is newer than this callguard ({LATEST})",
                      "upgrade callguard, or restore a backup made by this version")
    if integrity != "ok":
        return Result("fail", "store", f"integrity_check: {integrity[:200]}",
                      "stop callguard, restore the last good backup (or delete the file and resync from the CRM)")
    note = "" if version == LATEST else f", will migrate to {LATEST} at start"
    return Result("ok", "store", f"{path}: schema {version}{note}, integrity ok")


# --- FastAGI port ---------------------------------------------------------------------------------


def agi_probe(port: int) -> bytes:
    """A FastAGI request as Asterisk sends one (bare ``\\n`` lines, empty line at the end)."""
    headers = {
        "agi_network": "yes", "agi_network_script": "screen", "agi_request": f"agi://127.0.0.1:{port}/screen",
        "agi_channel": "callguard/doctor", "agi_language": "en", "agi_type": "callguard",
        "agi_uniqueid": DOCTOR_UNIQUEID, "agi_callerid": TEST_CALLER, "agi_calleridname": "callguard doctor",
        "agi_dnid": "unknown", "agi_context": "callguard-doctor", "agi_extension": "s", "agi_priority": "1",
    }
    return ("".join(f"{k}: {v}\n" for k, v in headers.items()) + "\n").encode()


async def _probe(
    part: str, host: str, port: int, fix: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | Result:
    """Connect to a port callguard will listen on: a Result when it is free or unusable."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return await asyncio.open_connection(host, port)
    except (ConnectionRefusedError, TimeoutError):
        return Result("ok", part, f"{host}:{port} is free (callguard run will listen there)")
    except OSError as e:
        return Result("fail", part, f"cannot probe {host}:{port}: {e.strerror or e}", fix)


async def check_agi(cfg: Config) -> Result:
    host, port = cfg.agi.host, cfg.agi.port
    conn = await _probe("agi port", host, port,
                        "set agi.host to an address of this host (127.0.0.1 when Asterisk runs here)")
    if isinstance(conn, Result):
        return conn
    reader, writer = conn
    try:
        first = await _agi_converse(reader, writer, port)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if first.startswith("SET VARIABLE CALLGUARD_VERDICT"):
        return Result("ok", "agi port", f"{host}:{port} answered by a running callguard ({first[13:60]})")
    return Result("fail", "agi port", f"{host}:{port} is taken by another program (it answered {first[:40]!r})",
                  "stop that program or set agi.port (and the AGI() URL in the dialplan) to a free port")


async def _agi_converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> str:
    """Send the probe, answer each command as Asterisk would; return the first command line."""
    first = ""
    with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        writer.write(agi_probe(port))
        await writer.drain()
        async with asyncio.timeout(PROBE_TIMEOUT):
            while line := (await reader.readline()).decode("utf-8", "replace").strip():
                first = first or line
                writer.write(b"200 result=1\n")
                await writer.drain()
    return first


# --- web port -------------------------------------------------------------------------------------


async def check_web(cfg: Config) -> Result:
    web = cfg.web
    if not web.enabled:
        return Result("skip", "web port", "web.enabled = false: no /readyz, /metrics or CRM webhooks",
                      "set web.enabled = true to scrape metrics and receive CRM webhooks")
    where = f"{web.host}:{web.port}"
    conn = await _probe("web port", web.host, web.port,
                        "set web.host to an address of this host (127.0.0.1 unless scraped from elsewhere)")
    if isinstance(conn, Result):
        return conn
    reader, writer = conn
    try:
        writer.write(f"GET /healthz HTTP/1.0\r\nHost: {web.host}\r\n\r\n".encode())
        async with asyncio.timeout(PROBE_TIMEOUT):
            head = (await reader.read(4096)).decode("latin-1", "replace")
    except (TimeoutError, ConnectionError):
        head = ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    # Ours: /healthz says ok, or asks for the bearer token callguard's web part wants.
    if head.startswith("HTTP/1.") and ('{"status": "ok"}' in head or "WWW-Authenticate: Bearer" in head):
        return Result("ok", "web port", f"{where} answered by a running callguard")
    return Result("fail", "web port", f"{where} is taken by another program",
                  "stop that program or set web.port to a free port")


# --- AMI ------------------------------------------------------------------------------------------


async def check_ami(cfg: Config, asterisk_etc: Path) -> list[Result]:
    ami = cfg.ami
    if not ami.enabled:
        return [Result("skip", "ami", "ami.enabled = false: no missed-call leads",
                       "set ami.enabled = true once manager_callguard.conf is in place")]
    if not ami.secret:
        return [Result("fail", "ami", "ami.secret is empty",
                       "set CALLGUARD_AMI_SECRET in /etc/callguard/callguard.env to the secret in manager.conf")]
    return [await ami_login(cfg), check_ami_permissions(ami.username, asterisk_etc),
            check_ami_write(ami.username, asterisk_etc), check_ami_timestamps(asterisk_etc),
            check_hangup_handler(asterisk_etc)]


async def ami_login(cfg: Config) -> Result:
    ami = cfg.ami
    where = f"{ami.host}:{ami.port}"
    try:
        async with asyncio.timeout(min(ami.connect_timeout, PROBE_TIMEOUT)):
            reader, writer = await asyncio.open_connection(ami.host, ami.port)
    except (OSError, TimeoutError) as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        return Result("fail", "ami", f"cannot connect to AMI at {where} ({reason})",
                      "in /etc/asterisk/manager.conf [general] set enabled = yes, port = "
                      f"{ami.port}, bindaddr = 127.0.0.1, then `asterisk -rx 'manager reload'`")
    try:
        response = await _ami_login_response(reader, writer, ami.username, ami.secret)
    except (AmiProtocolError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
        return Result("fail", "ami", f"{where} does not speak AMI ({str(e) or type(e).__name__})",
                      "check ami.host/ami.port point at Asterisk's manager port (5038)")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if response.get("Response", "").lower() == "success":
        return Result("ok", "ami", f"logged in to {where} as {ami.username!r}")
    message = response.get("Message", "no reason given")
    return Result("fail", "ami", f"login as {ami.username!r} rejected ({message})",
                  "make CALLGUARD_AMI_SECRET equal the secret of [" + ami.username + "] in manager.conf, "
                  "check its permit= allows this host, then `manager reload`")


async def _ami_login_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, username: str, secret: str
) -> dict[str, str]:
    feeder = FrameFeeder()
    async with asyncio.timeout(PROBE_TIMEOUT):
        while feeder.banner is None:
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionError("closed before the banner")
            feeder.feed(chunk)  # Asterisk sends nothing but the banner before a Login
        writer.write(encode_action({"Action": "Login", "ActionID": "callguard-doctor-1", "Username": username,
                                    "Secret": secret, "Events": "off"}))
        await writer.drain()
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionError("closed before the Login response")
            for frame in feeder.feed(chunk):
                # Only one action is in flight, so the first Response is the Login's.
                if "Response" in frame:
                    with contextlib.suppress(OSError):
                        writer.write(encode_action({"Action": "Logoff", "ActionID": "callguard-doctor-2"}))
                    return frame




async def check_crm(cfg: Config) -> Result:
    if cfg.crm.kind == "none":
        return Result("skip", "crm", "crm.kind = none: local allow/block lists only",
                      "set crm.kind to amocrm or bitrix24 to sync spam flags and send leads")
    try:
        crm_mod = importlib.import_module("callguard.crm")
    except ModuleNotFoundError as e:
        if e.name != "callguard.crm":
            raise
        return Result("skip", "crm", "this build has no CRM adapters", "install a callguard with CRM support")
    try:
        crm = crm_mod.build_crm(cfg)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("callguard.crm."):
            raise
        return Result("skip", "crm", f"this build has no {cfg.crm.kind} adapter", "install a callguard with it")
    except CrmError as e:  # e.g. no base URL: the adapter refuses to exist
        return Result("fail", "crm", f"{cfg.crm.kind}: {e}", f"fill in the [crm.{cfg.crm.kind}] section of the config")
    if crm is None:
        return Result("skip", "crm", f"no adapter for crm.kind = {cfg.crm.kind}")
    try:
        summary = await crm.verify()
    except CrmAuthError as e:
        return Result("fail", "crm", f"{cfg.crm.kind} rejected the credentials ({e})",
                      "renew the token / webhook URL in /etc/callguard/callguard.env (CALLGUARD_CRM_TOKEN or "
                      "CALLGUARD_CRM_WEBHOOK_URL) and check its scopes")
    except CrmError as e:
        return Result("fail", "crm", f"{cfg.crm.kind}: {e}",
                      "check the CRM URL, the network path to the CRM, and crm.*.spam_field")
    finally:
        await crm.close()
    if "NO spam field" in summary:
        return Result("fail", "crm", summary, f"set crm.{cfg.crm.kind}.spam_field to the CRM's spam checkbox field")
    return Result("ok", "crm", summary)
