"""The shipped dialplan: asterisklint clean, and in step with what callguard sends and listens for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callguard.config import load_config
from callguard.screening.rules import Verdict

DIALPLAN = Path(__file__).parents[2] / "dialplan"


def test_asterisklint_accepts_the_include(tmp_path: Path) -> None:
    lint = shutil.which("asterisklint") or str(Path(sys.executable).parent / "asterisklint")
    if not Path(lint).exists():
        pytest.fail("asterisklint is not installed (pip install '.[test]')")
    (tmp_path / "extensions.conf").write_text(
        "[general]\nstatic=yes\nwriteprotect=no\n\n[globals]\n\n#include extensions_callguard.conf\n"
    )
    shutil.copy(DIALPLAN / "extensions_callguard.conf", tmp_path)
    proc = subprocess.run([lint, "dialplan-check", "extensions.conf"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""


def test_agi_url_matches_the_default_listener() -> None:
    text = (DIALPLAN / "extensions_callguard.conf").read_text()
    agi = load_config(None, env={}).agi
    assert f"AGI(agi://{agi.host}:{agi.port}/screen," in text


def test_dialplan_branches_on_every_verdict_it_must() -> None:
    text = (DIALPLAN / "extensions_callguard.conf").read_text()
    branched = set(re.findall(r'"\$\{CALLGUARD_VERDICT\}" = "(\w*)"', text))
    assert branched == {"spam", "closed"}  # the rest (clean, whitelist, anonymous) go to sales
    assert {v.value for v in Verdict} >= branched
    # fail-open: both AGISTATUS and an empty verdict lead to the queue
    assert '"${AGISTATUS}" != "SUCCESS"]?failopen' in text
    assert "$[${LEN(${CALLGUARD_VERDICT})} = 0]?failopen" in text
    for event in ("CallguardQueue,Status: ${QUEUESTATUS}", "CallguardDial,Status: ${DIALSTATUS}", "CallguardClosed"):
        assert f"UserEvent({event}" in text


# --- CRM data is data: a CRM-sourced variable is only measured or assigned -----------------

CRM_VARIABLES = ("CALLGUARD_CONTACT_NAME", "CALLGUARD_CONTACT_ID", "CALLGUARD_OWNER")


def _dialplan_steps(text: str) -> list[tuple[str, str]]:
    """(application, raw argument text) of every ``exten =>`` / ``same =>`` line."""
    steps = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:exten\s*=>\s*[^,]+,|same\s*=>\s*)[^,]+,(\w+)\((.*)\)\s*$", line)
        if m:
            steps.append((m.group(1), m.group(2)))
    return steps


def test_crm_variables_are_never_expanded_where_asterisk_parses() -> None:
    """Asterisk substitutes ${VAR} before it parses an expression or splits an application's arguments,
    so a CRM value may appear only inside ${LEN(...)} or as the value of a plain Set (which takes all
    after the first '='). Verified on a real Asterisk by tests/live (a name ran System() before)."""
    steps = _dialplan_steps((DIALPLAN / "extensions_callguard.conf").read_text())
    assert steps, "no dialplan steps parsed"
    uses = 0
    for app, args in steps:
        for var in CRM_VARIABLES:
            ref = "${" + var + "}"
            if ref not in args:
                continue
            uses += 1
            rest = args.replace("${LEN(" + ref + ")}", "")
            if ref not in rest:
                continue  # only measured
            assert app == "Set", f"{var} expanded in {app}({args})"
            target, _, value = args.partition("=")
            assert value == ref and ref not in target, f"{var} must be a whole Set value: Set({args})"
    assert uses >= 2  # the name is tested and assigned


def test_inbound_takes_plus_dids_and_no_did() -> None:
    text = (DIALPLAN / "extensions_callguard.conf").read_text()
    inbound = text.split("[callguard-inbound]", 1)[1].split("\n[", 1)[0]
    for pattern in ("_X.", "_+X.", "s"):
        assert re.search(rf"^exten => {re.escape(pattern)},1", inbound, re.M), pattern


def test_gosub_entry_returns_the_verdict_and_tagging_can_be_off() -> None:
    text = (DIALPLAN / "extensions_callguard.conf").read_text()
    screen = text.split("[callguard-screen]", 1)[1].split("\n[", 1)[0]
    assert {"Return(pass)", "Return(spam)", "Return(closed)"} <= set(re.findall(r"Return\(\w*\)", screen))
    # every CDR(userfield) write is skipped when CALLGUARD_TAG_CDR = no
    lines = [ln for ln in text.splitlines() if "Set(CDR(userfield)=" in ln and "callguard-tag" not in ln]
    assert lines
    for ln in lines:
        before = text[: text.index(ln)].rstrip().splitlines()[-1]
        assert '"${CALLGUARD_TAG_CDR}" = "no"' in before, ln
    assert "CALLGUARD_CLEAN_TARGET" in text


def test_after_hours_does_not_answer_without_a_message() -> None:
    text = (DIALPLAN / "extensions_callguard.conf").read_text()
    closed = text.split("[callguard-closed]", 1)[1].split("\n[", 1)[0]
    first = closed.strip().splitlines()[0]
    assert '"${CALLGUARD_CLOSED_MESSAGE}" = ""]?reject' in first  # branches before any Answer()
    assert "Playback(vm-goodbye)" not in closed
    assert re.search(r"\(reject\),Hangup\((\d+)\)", closed).group(1) != "21"  # 21 means spam to the tracker
