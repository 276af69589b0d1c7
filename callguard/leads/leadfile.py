"""The log sink's durable, searchable record of missed calls: a JSON-lines file (``outbox.log_file``,
default ``leads.jsonl`` next to ``store.path``).

Format: UTF-8, one JSON object per line, ``\\n``-terminated, appended in delivery order::

    {"linkedid": "1795435962.104", "caller": "+15551230003", "did": "5551000", "reason": "abandoned",
     "started_at": 10.0, "ended_at": 17.0, "wait_s": 7.0, "caller_name": "Carol", "contact_id": "",
     "open_lead_ref": "", "misses": 1, "reconciled": false,
     "ref": "log:1795435962.104", "repeat": false, "written_at": 1800000000.123}

i.e. every ``MissedCall`` field (leads/model.py) plus ``ref`` (the lead: ``log:<linkedid>``, or the open
lead's ref for a repeat miss), ``repeat`` and ``written_at`` (unix time). One line per Linkedid, ever.

Exactly once: a line is written with ONE ``os.write`` on an ``O_APPEND`` descriptor, then
``os.fdatasync``, before the outbox marks the item sent. A crash between the two leaves the item in
``sending``; on start ``find`` scans the file's last ``TAIL_BYTES`` from the end for the Linkedid and
the item is marked sent without a second line. A line torn by power loss (no trailing newline) is
terminated at the next open, so the next line stays valid JSON lines; it is logged
(``leads_file_torn_line``) and counted (``torn_lines``). The torn line does not parse, so its lead is
written again, whole. The file is reopened for every write (``logrotate``'s move-and-create is safe).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from callguard.leads.model import MissedCall

log = structlog.get_logger("callguard.leads.leadfile")

TAIL_BYTES = 8 * 1024 * 1024  # how far back from the end ``find`` looks: ~30 000 leads
MODE = 0o640


@dataclass(frozen=True, slots=True)
class Found:
    ref: str
    repeat: bool


def line_of(call: MissedCall, ref: str, repeat: bool, now: float) -> bytes:
    doc = {**call.to_json(), "ref": ref, "repeat": repeat, "written_at": round(now, 3)}
    # ensure_ascii=False keeps names readable; json escapes control characters, so no raw newline inside
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class LeadFile:
    """Blocking file I/O (the sink runs it in a thread): ``append`` one line durably, ``find`` a Linkedid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn_lines = 0  # torn last lines terminated at open, this process

    def _open(self) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        try:
            if created:
                _sync_dir(self.path.parent)  # the new name survives a power loss too
            self._terminate_torn(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _terminate_torn(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _write_all(fd, b"\n")
            os.fdatasync(fd)
            self.torn_lines += 1
            log.warning("leads_file_torn_line", path=str(self.path), at_byte=size, torn_lines=self.torn_lines)

    def append(self, line: bytes) -> None:
        """One line, durable on return. OSError (missing folder, permissions, disk full) propagates."""
        fd = self._open()
        try:
            _write_all(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def find(self, linkedid: str) -> Found | None:
        """The newest line for ``linkedid`` within the last ``TAIL_BYTES``; None when there is none (or no file)."""
        try:
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = max(0, size - TAIL_BYTES)
                f.seek(start)
                data = f.read(size - start)
        except FileNotFoundError:
            return None
        needle = b'"linkedid":' + json.dumps(linkedid, ensure_ascii=False).encode() + b","
        end = len(data)
        while (hit := data.rfind(needle, 0, end)) != -1:
            begin = data.rfind(b"\n", 0, hit) + 1
            stop = data.find(b"\n", hit)
            end = begin
            if (begin == 0 and start > 0) or stop == -1:
                continue  # cut by the window's start, or a torn last line: not a whole line
            try:
                doc = json.loads(data[begin:stop])
            except ValueError:
                continue  # a torn line an earlier crash left (terminated since): not a delivery
            if isinstance(doc, dict) and doc.get("linkedid") == linkedid:
                return Found(str(doc.get("ref") or f"log:{linkedid}"), bool(doc.get("repeat")))
        return None


def _write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)
    if n != len(data):  # a regular file writes all or fails; a short write is the disk filling up
        raise OSError(f"short write to the leads file: {n} of {len(data)} bytes (disk full?)")


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
