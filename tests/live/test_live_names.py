"""Live: CRM contact names that are dialplan syntax reach the queue as data.

On the old shipped dialplan a contact named ``" != "" & "):System(touch /tmp/x`` ran System() and one
named ``Petrov, Ivan "VIP"`` dropped the caller. Here each name goes through the real path: the CRM cache,
``callguard run``, FastAGI into a real Asterisk 22, the shipped ``callguard-inbound``/``callguard-screen``;
the call must join the queue, the caller's name must be what callguard's fake of Asterisk says it is
(cleaned and cut as designed), and no application outside the dialplan's own may have run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from callguard.agi.wire import commands_for
from callguard.ami.wire import unescape
from callguard.screening.rules import Decision, Verdict
from callguard.screening.screener import variables_for
from callguard.store.numbers import Contact
from tests.fakes.asterisk_agi import channel_variables
from tests.live.conftest import Service, seed_contacts
from tests.live.lab import Ami, Lab, callguard_config, inbound_channel_of

pytestmark = pytest.mark.live

# What the shipped dialplan and this lab's own contexts may run; anything else means CRM data ran.
DIALPLAN_APPS = {"NoOp", "Set", "Goto", "GotoIf", "Ringing", "Gosub", "AGI", "Return", "Queue", "UserEvent",
                 "Hangup", "Wait", "Answer", "AppDial2", "DBdeltree"}


def hostile_names(tmp: Path) -> list[str]:
    return [
        f'" != "" & "):System(touch {tmp}/pwned-execif)',  # the ExecIf breakout found live
        'Petrov, Ivan "VIP"',
        'a"b,c(d)e[f]g$h{i}j\\k;l&m|n',
        f"${{SHELL(touch {tmp}/pwned-shell)}}",
        "$[1+1] ${EXTEN} ${CALLERID(num)}",
        f"x)}}:System(touch {tmp}/pwned-paren)",
        "Иван Петров — ООО «Ромашка»",
        "Алёна 😀🚀 ☎",
        "\\",
        '"',
        "line one\nline two\r\x1b[31mred\u202e",
        "Z" * 10_000,
        "Я" * 3_000,
    ]


def expected_name(name: str, func_strings: bool) -> str:
    """What the fake of Asterisk says the name becomes: the contact's variables come in one ARRAY()
    command, so without func_strings.so no name is set (the verdict has its own plain command)."""
    decision = Decision(Verdict.CLEAN, "contact", Contact("1", name, "7", False, "amocrm"))
    commands = commands_for(variables_for(decision))  # what agi/server writes
    value = channel_variables(commands, func_strings=func_strings).get("CALLGUARD_CONTACT_NAME", "")
    # funcs/func_callerid.c writes CALLERID(name) through ast_skip_blanks/ast_trim_blanks (seen live)
    return value.strip(" ")


async def _call_and_read_name(ami: Ami, caller: str, tag: str) -> str:
    start = len(ami.frames)
    await ami.originate("5551000", caller, wait_s=6, tag=tag)
    chan = (await ami.wait_for(inbound_channel_of(ami, tag), start=start))["Channel"]
    await ami.wait_for(lambda f: f.get("Event") == "QueueCallerJoin" and f.get("Channel") == chan, start=start)
    names = [unescape(f.get("CallerIDName", "")) for f in ami.frames[start:]
             if f.get("Event") == "NewCallerid" and f.get("Channel") == chan]
    return names[-1] if names else ""


@pytest.mark.parametrize("func_strings", [True, False], ids=["func_strings", "no-func_strings"])
async def test_hostile_contact_names_reach_the_queue_as_data(
    func_strings: bool, tmp_path: Path, lab_factory: Callable[..., Lab],
    service_factory: Callable[..., Service],
) -> None:
    lab = lab_factory(noload=() if func_strings else ("func_strings.so",))
    names = hostile_names(tmp_path)
    callers = [f"+7916555{i:04d}" for i in range(len(names))]
    config = callguard_config(tmp_path, lab)
    contacts = [(str(100 + i), n, c) for i, (n, c) in enumerate(zip(names, callers, strict=True))]
    await seed_contacts(tmp_path / "cg.sqlite3", contacts)
    svc = service_factory(config)
    await asyncio.to_thread(svc.wait_listening, lab.agi_port)
    ami = Ami()
    await ami.connect(lab.ami_port)
    try:
        for i, (name, caller) in enumerate(zip(names, callers, strict=True)):
            got = await _call_and_read_name(ami, caller, f"name-{i}")
            want = expected_name(name, func_strings)
            if want:
                assert got == want, f"name {i} {name[:40]!r}"
            else:  # not set (no ARRAY() without func_strings): the caller's own, empty, name stays
                assert got in ("", "<unknown>"), f"name {i} {name[:40]!r}: {got!r}"
    finally:
        await ami.close()
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("pwned-*"))), "a contact name ran a command"
    ran = set(lab.executed_apps())
    assert "AGI" in ran and "Queue" in ran
    assert ran <= DIALPLAN_APPS, f"applications outside the dialplan ran: {ran - DIALPLAN_APPS}"
