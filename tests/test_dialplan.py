"""The shipped dialplan: asterisklint clean, and in step with what callguard sends and listens for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callguard.config import load_config
from callguard.screening import Verdict

DIALPLAN = Path(__file__).parent.parent / "dialplan"


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
    assert branched == {"", "spam", "closed"}  # the rest (clean, whitelist, anonymous) go to sales
    assert {v.value for v in Verdict} >= branched - {""}
    # fail-open: both AGISTATUS and an empty verdict lead to the queue
    assert '"${AGISTATUS}" != "SUCCESS"]?failopen' in text
    for event in ("CallguardQueue,Status: ${QUEUESTATUS}", "CallguardDial,Status: ${DIALSTATUS}", "CallguardClosed"):
        assert f"UserEvent({event}" in text
