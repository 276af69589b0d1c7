"""``callguard doctor``'s checks of Asterisk's own config files (``--asterisk-etc``, default /etc/asterisk):
the AMI user's read and write classes, ``timestampevents``, and the shipped call-record hangup handler.
They read the files: the AMI user deliberately has no ``command`` class to ask Asterisk itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# What callguard reads from AMI (dialplan/manager_callguard.conf): call, agent and user are needed,
# dialplan is optional.
AMI_READ_NEEDED = ("call", "agent", "user")
# CoreShowChannels, DBGet and DBGetTree (re-attach and reconcile after a gap) need one of these write classes.
AMI_WRITE_ANY = ("reporting", "system", "all")
HANGUP_HANDLER = "callguard-hangup"

_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_INCLUDE = re.compile(r"^\s*#(?:include|tryinclude)\s+\"?([^\"\s]+)\"?")


@dataclass(frozen=True)
class Result:
    status: str  # ok | warn | fail | skip (only fail makes the exit code non-zero)
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<14} {self.message}"
        return f"{text} → {self.fix}" if self.fix and self.status != "ok" else text


def manager_sections(path: Path, seen: set[Path] | None = None) -> dict[str, dict[str, str]]:
    """Sections of manager.conf and the files it ``#include``s (Asterisk config syntax, keys last-wins)."""
    seen = set() if seen is None else seen
    seen.add(path)
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        include = _INCLUDE.match(raw)
        line = raw.split(";", 1)[0].strip()
        if include:
            target = Path(include.group(1))
            target = target if target.is_absolute() else path.parent / target
            if target.exists() and target not in seen:
                for name, keys in manager_sections(target, seen).items():
                    sections.setdefault(name, {}).update(keys)
            continue
        if m := _SECTION.match(line):
            current = sections.setdefault(m.group(1).strip(), {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip().lstrip(">").strip().lower()] = value.strip()
    return sections


def check_ami_permissions(username: str, asterisk_etc: Path) -> Result:
    conf = asterisk_etc / "manager.conf"
    try:
        sections = manager_sections(conf)
    except OSError as e:
        return Result("skip", "ami read", f"cannot read {conf} ({e.strerror or e})",
                      f"make sure [{username}] has read = call,agent,user,dialplan (dialplan/manager_callguard.conf)")
    user = sections.get(username)
    if user is None:
        return Result("fail", "ami read", f"no [{username}] user in {conf} or its includes",
                      "append `#include manager_callguard.conf` to manager.conf, then `manager reload`")
    granted = {c.strip().lower() for c in user.get("read", "").split(",") if c.strip()}
    missing = [c for c in AMI_READ_NEEDED if c not in granted and "all" not in granted]
    if missing:
        return Result("fail", "ami read", f"[{username}] read = {user.get('read', '')!r} lacks {', '.join(missing)}",
                      f"set read = call,agent,user,dialplan in [{username}], then `manager reload`")
    return Result("ok", "ami read", f"[{username}] may read {', '.join(sorted(granted))}")


def check_ami_write(username: str, asterisk_etc: Path) -> Result:
    """The write class the re-attach and the reconcile after a gap need (``write = reporting``)."""
    fix = f"set write = reporting in [{username}] (dialplan/manager_callguard.conf), then `manager reload`"
    try:
        user = manager_sections(asterisk_etc / "manager.conf").get(username)
    except OSError as e:
        return Result("skip", "ami write", f"cannot read {asterisk_etc / 'manager.conf'} ({e.strerror or e})", fix)
    if user is None:
        return Result("skip", "ami write", f"no [{username}] user (see ami read)", fix)
    granted = {c.strip().lower() for c in user.get("write", "").split(",") if c.strip()}
    if not granted & set(AMI_WRITE_ANY):
        return Result("fail", "ami write", f"[{username}] write = {user.get('write', '')!r}: calls that end while "
                      "callguard or its AMI link is down cannot be rebuilt (CoreShowChannels, DBGetTree)", fix)
    return Result("ok", "ami write", f"[{username}] may write {', '.join(sorted(granted))}")


def check_hangup_handler(asterisk_etc: Path) -> Result:
    """The shipped dialplan's ``[callguard-hangup]``, which writes the AstDB record a reconcile reads.
    Read from the installed file: callguard's AMI user has no ``command`` class to ask ``dialplan show``
    (and should not: it could run any CLI command), so the file says installed, not loaded."""
    path = asterisk_etc / "extensions_callguard.conf"
    fix = "copy dialplan/extensions_callguard.conf to /etc/asterisk/, then `asterisk -rx 'dialplan reload'`"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return Result("skip", "call record", f"cannot read {path} ({e.strerror or e}); check with "
                      f"`asterisk -rx 'dialplan show {HANGUP_HANDLER}'`", fix)
    pushed = f"hangup_handler_push)={HANGUP_HANDLER},s,1" in text
    if f"[{HANGUP_HANDLER}]" not in text or not pushed or "Set(DB(callguard/calls/" not in text:
        return Result("fail", "call record", f"{path} lacks the hangup handler [{HANGUP_HANDLER}]: missed calls "
                      "that end while callguard is down are lost", fix)
    return Result("ok", "call record", f"[{HANGUP_HANDLER}] in {path} (read from the file; `dialplan show "
                  f"{HANGUP_HANDLER}` confirms it is loaded)")


def check_ami_timestamps(asterisk_etc: Path) -> Result:
    """``timestampevents`` read from manager.conf ``[general]``. Not observed on the wire: a Ping response
    carries a Timestamp either way, and the FullyBooted sent after Login never does (manager.c), so only
    live call events would tell, and doctor cannot make a call."""
    conf = asterisk_etc / "manager.conf"
    fix = "in manager.conf [general] set timestampevents = yes, then `asterisk -rx 'manager reload'`"
    try:
        value = manager_sections(conf).get("general", {}).get("timestampevents", "no")
    except OSError as e:
        return Result("skip", "ami time", f"cannot read {conf} ({e.strerror or e})", fix)
    if value.lower() in ("yes", "true", "y", "t", "1", "on"):  # Asterisk's ast_true()
        return Result("ok", "ami time", "timestampevents = yes: call times come from Asterisk")
    return Result("warn", "ami time", "timestampevents is off: call times are arrival times (a stall shifts them)",
                  fix)


# --- CRM ------------------------------------------------------------------------------------------
