"""A fake Asterisk on the FastAGI client side, driven by the recorded transcripts.

It speaks as Asterisk 22 does in tests/fixtures/traces/*.agi.txt: the ``agi_*`` header block with bare
``\\n`` line ends and an empty line, then one reply per command line it reads. Replies come from the
recording when the command matches what was recorded, else from ``Channel``, which carries out
``SET VARIABLE`` / ``GET VARIABLE`` as Asterisk does.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"


@dataclass
class Transcript:
    header: bytes
    exchanges: list[tuple[str, list[str]]] = field(default_factory=list)  # (command, reply lines)
    unsolicited: list[str] = field(default_factory=list)  # e.g. HANGUP before the first reply

    def recorded_reply(self, command: str) -> list[str] | None:
        for cmd, reply in self.exchanges:
            if cmd == command:
                return reply
        return None


def load(name: str) -> Transcript:
    """Parse ``<name>.agi.txt`` (first connection) into what Asterisk sent and answered."""
    header: list[str] = []
    t = Transcript(b"")
    in_header = True
    current: tuple[str, list[str]] | None = None
    for line in (TRACES / f"{name}.agi.txt").read_text(encoding="utf-8").split("\n"):
        if not line.startswith("#1 "):
            continue
        marker, _, payload = line[3:].partition(" ")
        if marker == "<<" and in_header:
            header.append(payload)
            in_header = payload != ""
        elif marker == "<<" and current is None:
            t.unsolicited.append(payload)
        elif marker == "<<" and current is not None:
            current[1].append(payload)
        elif marker == ">>":
            current = (payload, [])
            t.exchanges.append(current)
    t.header = ("\n".join(header) + "\n").encode()
    return t


def header_with(t: Transcript, **overrides: str) -> bytes:
    lines = t.header.decode().split("\n")
    out = []
    for line in lines:
        key = line.split(":", 1)[0]
        out.append(f"{key}: {overrides[key]}" if key in overrides else line)
    return "\n".join(out).encode()


async def session(
    port: int, header: bytes, transcript: Transcript | None = None, timeout: float = 5.0,  # noqa: ASYNC109
    channel: Channel | None = None,
) -> list[str]:
    """Run one FastAGI session against 127.0.0.1:port; return the command lines the server sent.

    Commands the transcript recorded get the recorded reply; any other is carried out on ``channel``
    (a fresh one when not given) as Asterisk would, so a ``GET VARIABLE`` reads what was set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands: list[str] = []
    try:
        await _converse(reader, writer, header, transcript, timeout, commands, channel or Channel())
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server closed with our bytes unread: Asterisk sees AGISTATUS=FAILURE
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    return commands


async def _converse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, header: bytes,
    transcript: Transcript | None, timeout: float, commands: list[str], channel: Channel,  # noqa: ASYNC109
) -> None:
    writer.write(header)
    if transcript is not None:
        for line in transcript.unsolicited:
            writer.write(line.encode() + b"\n")
    await writer.drain()
    async with asyncio.timeout(timeout):
        while True:
            raw = await reader.readline()
            if not raw:
                break
            command = raw.decode().rstrip("\n")
            commands.append(command)
            recorded = transcript.recorded_reply(command) if transcript else None
            reply = recorded if recorded is not None else [channel.execute(command)]
            writer.write("".join(f"{r}\n" for r in reply).encode())
            await writer.drain()


# --- what Asterisk does with the commands: channel variables ---------------------------------------------


def agi_args(line: str) -> list[str]:
    """res_agi.c ``parse_args``: words split on blanks outside quotes; a backslash makes the next
    character literal (``\\\\`` is one backslash, ``\\"`` a quote); quotes group and are dropped."""
    argv: list[str] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:  # a quote coming off white space starts a word, even an empty one
                argv.append("")
                whitespace = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            argv.append("")
            whitespace = False
        argv[-1] += ch
        escaped = False
    return argv


def app_args(text: str, delim: str = ",") -> list[str]:
    """main/app.c ``__ast_app_separate_args`` with remove_chars (AST_STANDARD_APP_ARGS): split on
    ``delim`` outside (), [] and quotes; quotes are dropped, a backslash makes the next character
    literal; a trailing delimiter gives one more, empty, argument."""
    out: list[str] = []
    cur: str | None = None
    paren = bracket = 0
    quote = ended_on_delim = False
    i = 0
    while i < len(text):
        ch = text[i]
        cur = "" if cur is None else cur
        ended_on_delim = False
        if ch == '"':
            quote = not quote
        elif ch == "\\":
            i += 1
            if i < len(text):
                cur += text[i]
        elif ch == delim and not paren and not quote and not bracket:
            out.append(cur)
            cur = None
            ended_on_delim = True
        else:
            if ch == "(":
                paren += 1
            elif ch == ")" and paren:
                paren -= 1
            elif ch == "[":
                bracket += 1
            elif ch == "]" and bracket:
                bracket -= 1
            cur += ch
        i += 1
    if cur is not None:
        out.append(cur)
    elif ended_on_delim:
        out.append("")
    return out


@dataclass
class Channel:
    """What Asterisk 22 does with the commands callguard sends, and what it answers (res_agi.c):

    ``SET VARIABLE name value`` (exactly 4 words, else 520) goes through ``pbx_builtin_setvar_helper``,
    which writes a name ending in ``)`` through the dialplan function; ARRAY() (funcs/func_strings.c)
    splits names and values with AST_STANDARD_APP_ARGS and sets "" for a name without a value. Without
    func_strings.so the function is unknown: Asterisk logs an error, sets nothing, and still answers
    ``200 result=1``. ``GET VARIABLE name`` answers ``200 result=1 (value)`` or ``200 result=0``, as
    recorded in s11_agi_protocol_replies."""

    func_strings: bool = True
    variables: dict[str, str] = field(default_factory=dict)

    def execute(self, command: str) -> str:
        argv = agi_args(command)
        if argv[:2] == ["SET", "VARIABLE"]:
            if len(argv) != 4:
                return "520 Invalid command syntax.  Proper usage not available."
            self._set(argv[2], argv[3])
            return "200 result=1"
        if argv[:2] == ["GET", "VARIABLE"] and len(argv) == 3:
            value = self.variables.get(argv[2])
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        return "510 Invalid or unknown command"

    def _set(self, name: str, value: str) -> None:
        if name.startswith("ARRAY(") and name.endswith(")"):
            if not self.func_strings:
                return
            names, values = app_args(name[6:-1]), app_args(value)
            for n, key in enumerate(names):
                self.variables[key] = values[n] if n < len(values) else ""
        else:
            self.variables[name] = value


AGI_BUF_LEN = 2048  # res_agi.c: each command is read with fgets(buf, AGI_BUF_LEN, ...)


def res_agi_reads(wire: bytes) -> list[str]:
    """The commands res_agi reads from ``wire``: fgets() stops at a newline or after AGI_BUF_LEN - 1
    bytes, so an over-long line becomes two commands (the rest is read as the next one)."""
    out: list[str] = []
    i = 0
    while i < len(wire):
        end = wire.find(b"\n", i, i + AGI_BUF_LEN - 1)
        stop = end + 1 if end >= 0 else min(len(wire), i + AGI_BUF_LEN - 1)
        out.append(wire[i:stop].rstrip(b"\n").decode("utf-8", errors="replace"))
        i = stop
    return out


def channel_variables(commands: list[str], func_strings: bool = True) -> dict[str, str]:
    """The channel variables the ``SET VARIABLE`` commands leave on a channel (see ``Channel``), each
    written as callguard writes it (one line) and read back as res_agi reads it."""
    channel = Channel(func_strings=func_strings)
    for command in res_agi_reads(b"".join(c.encode() + b"\n" for c in commands)):
        argv = agi_args(command)
        assert argv[:2] == ["SET", "VARIABLE"] and len(argv) == 4, f"not a valid SET VARIABLE: {command!r}"
        channel.execute(command)
    return channel.variables
