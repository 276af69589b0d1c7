"""A real Asterisk for the live layer: generated configs around the shipped ``dialplan/`` files.

``CALLGUARD_TEST_ASTERISK`` names an installed Asterisk 22 binary (``…/sbin/asterisk``); its modules are
looked for in ``<prefix>/lib/asterisk/modules`` (or ``CALLGUARD_TEST_ASTERISK_MODULES``) and its data
(the XML docs behind AGI's usage replies) in ``<prefix>/var/lib/asterisk``. Nothing of Asterisk is in
this repository: only these configs. Everything listens on 127.0.0.1, on ports free at run time.

The trunk is a Local channel, as in ``../shared/asterisk-traces/lab-configs``: ``Originate`` of
``Local/<did>@from-trunk`` with the caller's ID; its ``;2`` half runs ``from-trunk``, which hands the call
to the shipped ``callguard-inbound``. The sales queue's member ``Local/101@agents`` answers after 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from callguard.ami.wire import Frame, FrameFeeder, encode_action

ROOT = Path(__file__).resolve().parents[2]
DIALPLAN = ROOT / "dialplan"
SECRET = "live-secret"


def asterisk_binary() -> Path | None:
    value = os.environ.get("CALLGUARD_TEST_ASTERISK", "")
    path = Path(value) if value else None
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


EXTENSIONS = """\
[general]
static = yes
writeprotect = no

[globals]
CALLGUARD_QUEUE = sales
CALLGUARD_QUEUE_TIMEOUT = 20
{globals}

; the trunk: the ;2 half of Local/<did>@from-trunk, as on a PBX whose trunk context hands calls over
[from-trunk]
exten => _X.,1,Goto(callguard-inbound,${{EXTEN}},1)
exten => _+X.,1,Goto(callguard-inbound,${{EXTEN}},1)
exten => s,1,Goto(callguard-inbound,s,1)
; DIDs that ring people directly (ring group 5552000, one extension 5553000): CALLGUARD_DIAL comes with the call
exten => _555[23]000,1,Set(CALLGUARD_CLEAN_TARGET=callguard-dial,s,1)
 same => n,Goto(callguard-inbound,${{EXTEN}},1)

; a member answers after 1 s unless the call carries __CG_AGENT = noanswer | busy (inherited through Queue/Dial)
[agents]
exten => _10X,1,GotoIf($["${{CG_AGENT}}" = "noanswer"]?noanswer)
 same => n,GotoIf($["${{CG_AGENT}}" = "busy"]?busy)
 same => n,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Wait(3)
 same => n,Hangup()
 same => n(noanswer),Ringing()
 same => n,Wait(120)
 same => n,Hangup()
 same => n(busy),Busy(3)

#include extensions_callguard.conf
"""

QUEUES = """\
[general]
persistentmembers = no
[sales]
strategy = ringall
timeout = 15
retry = 1
wrapuptime = 0
joinempty = paused,unavailable,invalid
leavewhenempty = paused,unavailable,invalid
ringinuse = no
announce-position = no
timeoutpriority = app
member => Local/101@agents,0,Agent101,Local/101@agents
"""


@dataclass
class Lab:
    """One Asterisk process in ``root``; ``start()`` returns when AMI answers."""

    binary: Path
    root: Path
    agi_port: int = field(default_factory=free_port)
    ami_port: int = field(default_factory=free_port)
    noload: tuple[str, ...] = ()
    globals: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> Path:
        return self.binary.resolve().parent.parent

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "asterisk.conf"

    @property
    def full_log(self) -> Path:
        return self.root / "log" / "full"

    def write_configs(self) -> None:
        etc, run = self.root / "etc", self.root
        for d in ("etc", "run", "lib", "spool/tmp", "spool/outgoing", "log/cdr-csv"):
            (run / d).mkdir(parents=True, exist_ok=True)
        moddir = os.environ.get("CALLGUARD_TEST_ASTERISK_MODULES") or str(self.prefix / "lib/asterisk/modules")
        (etc / "asterisk.conf").write_text(
            "[directories]\n"
            f"astetcdir => {etc}\nastmoddir => {moddir}\nastvarlibdir => {run}/lib\nastdbdir => {run}/lib\n"
            f"astkeydir => {run}/lib\nastdatadir => {self.prefix}/var/lib/asterisk\nastagidir => {run}/lib\n"
            f"astspooldir => {run}/spool\nastrundir => {run}/run\nastlogdir => {run}/log\n"
            "[options]\nverbose = 3\nnocolor = yes\ntimestamp = yes\n"
        )
        noload = "".join(f"noload => {m}\n" for m in ("res_parking.so", "cel_custom.so", *self.noload))
        files = {
            "modules.conf": f"[modules]\nautoload = yes\n{noload}",
            "logger.conf": "[general]\ndateformat = %F %T.%3q\n[logfiles]\nfull => notice,warning,error,verbose\n",
            "manager.conf": (
                f"[general]\nenabled = yes\nport = {self.ami_port}\nbindaddr = 127.0.0.1\n"
                "timestampevents = yes\n\n"
                f"[callguard]\nsecret = {SECRET}\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\n"
                "read = all\nwrite = all\nwritetimeout = 5000\n"
            ),
            "cdr.conf": "[general]\nenable = yes\nunanswered = yes\n[csv]\nusegmtime = yes\nloguniqueid = yes\n"
                        "loguserfield = yes\n",
            "queues.conf": QUEUES,
            "musiconhold.conf": "[general]\n",
            "indications.conf": "[general]\ncountry = us\n[us]\ndescription = United States\n"
                                "ringcadence = 2000,4000\ndial = 350+440\nbusy = 480+620/500,0/500\n"
                                "ring = 440+480/2000,0/4000\ncongestion = 480+620/250,0/250\n",
            "extensions.conf": EXTENSIONS.format(globals="".join(f"{k} = {v}\n" for k, v in self.globals.items())),
        }
        for name in ("ccss.conf", "features.conf", "acl.conf", "udptl.conf", "cel.conf"):
            files.setdefault(name, "")
        for name, text in files.items():
            (etc / name).write_text(text)
        # The shipped include, pointed at this run's FastAGI port (the only change).
        shipped = (DIALPLAN / "extensions_callguard.conf").read_text()
        (etc / "extensions_callguard.conf").write_text(shipped.replace("127.0.0.1:4573", f"127.0.0.1:{self.agi_port}"))

    def start(self, timeout: float = 30.0) -> None:
        self.write_configs()
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.prefix / "lib")}
        self.proc = subprocess.Popen(
            [str(self.binary), "-C", str(self.conf), "-f", "-n"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode}; see {self.full_log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ami_port), 0.5) as s:
                if s.recv(64).startswith(b"Asterisk Call Manager"):
                    self.rx("core waitfullybooted", timeout=timeout)
                    return
            time.sleep(0.1)
        raise RuntimeError("asterisk did not open AMI in time")

    def rx(self, command: str, timeout: float = 10.0) -> str:
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.prefix / "lib")}
        out = subprocess.run([str(self.binary), "-C", str(self.conf), "-rx", command], capture_output=True,
                             text=True, timeout=timeout, env=env)
        return out.stdout

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.rx("core stop now", timeout=5)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def executed_apps(self) -> list[str]:
        """Every dialplan application Asterisk ran, from its full log (verbose 3)."""
        text = self.full_log.read_text(errors="replace") if self.full_log.exists() else ""
        return re.findall(r"Executing \[[^\]]*\] (\w+)\(", text)


class Ami:
    """A small AMI client for the tests: every frame it receives is kept, and waited on by predicate."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.arrived: list[float] = []  # time.monotonic() when each frame was read
        self._changed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())
        await self.send({"Action": "Login", "Username": "callguard", "Secret": SECRET, "ActionID": "login"})
        reply = await self.wait_for(lambda f: f.get("ActionID") == "login")
        assert reply.get("Response") == "Success", reply

    async def _read(self) -> None:
        assert self._reader is not None
        feeder = FrameFeeder()
        while chunk := await self._reader.read(65536):
            frames = feeder.feed(chunk)
            now = time.monotonic()
            self.frames.extend(frames)
            self.arrived.extend(now for _ in frames)
            self._changed.set()

    async def send(self, fields: dict[str, str]) -> None:
        assert self._writer is not None
        self._writer.write(encode_action(fields))
        await self._writer.drain()

    def arrival_of(self, frame: Frame) -> float:
        return self.arrived[next(i for i, f in enumerate(self.frames) if f is frame)]

    async def wait_for(self, match: Callable[[Frame], bool], within: float = 15.0, start: int = 0) -> Frame:
        deadline = asyncio.get_running_loop().time() + within
        seen = start
        while True:
            for frame in self.frames[seen:]:
                if match(frame):
                    return frame
            seen = len(self.frames)
            self._changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no matching AMI frame")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def originate(self, did: str, caller: str, name: str = "", wait_s: int = 8, tag: str = "") -> str:
        """A trunk call to ``did`` from ``caller``; returns the ActionID (the OriginateResponse carries it)."""
        action_id = tag or f"call-{time.monotonic_ns()}"
        await self.send({
            "Action": "Originate", "ActionID": action_id, "Channel": f"Local/{did}@from-trunk",
            "CallerID": f'"{name}" <{caller}>' if name else caller, "Application": "Wait", "Data": str(wait_s),
            "Timeout": "30000", "Async": "true", "Variable": f"LIVE_TAG={action_id}",
        })
        return action_id

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.send({"Action": "Logoff"})
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def inbound_channel_of(ami: Ami, tag: str) -> Callable[[Frame], bool]:
    """The ``;2`` half that runs the dialplan: its VarSet of LIVE_TAG (inherited from the originate)."""
    return lambda f: (f.get("Event") == "VarSet" and f.get("Variable") == "LIVE_TAG" and f.get("Value") == tag
                      and f.get("Channel", "").endswith(";2"))


def callguard_config(tmp: Path, lab: Lab, *, ami: bool = False, extra: str = "") -> Path:
    path = tmp / "callguard.toml"
    path.write_text(
        f'[store]\npath = "{tmp / "cg.sqlite3"}"\n'
        f'[agi]\nport = {lab.agi_port}\n'
        f"[web]\nport = {free_port()}\n"
        f'[ami]\nenabled = {"true" if ami else "false"}\nport = {lab.ami_port}\nsecret = "{SECRET}"\n'
        'reconnect_min = "0.5s"\nreconnect_max = "2s"\n'
        f"[log]\nformat = \"json\"\n{extra}"
    )
    return path


def callguard_argv(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "callguard", "--config", str(config), *extra]
