"""Asterisk's own record of each screened call, pure: AstDB entries in, typed ``CallRecord``s out.

Source decision. callguard rebuilds the calls that ended while it or its AMI link was down from
**one AstDB entry per call, written by the shipped dialplan's hangup handler** (``[callguard-hangup]`` in
dialplan/extensions_callguard.conf) and read back over AMI with ``DBGetTree``. Measured against the other
candidates on Asterisk 22.10.1 (tests/fixtures/traces, tests/live/test_live_records.py):

- ``cdr_csv`` Master.csv has no Linkedid (the dedupe key), writes a row per leg and per queue-member
  attempt, and cannot tell a queue timeout from an abandon, nor an IVR ``Answer()`` from a person.
- ``queue_log`` only knows calls that reached a queue: spam (s01), join-empty (s05), a hang-up during
  screening (s10), ring groups and direct dials (s13, s14) and after-hours write nothing to it; it is
  keyed by the caller's Uniqueid, not the Linkedid.
- ``cdr_custom`` (res_cdrel_custom) can carry ``linkedid`` and uservars, but still a row per leg/attempt
  to fold together, and it is a file: under /var/log/asterisk (asterisk:asterisk 0750) a DynamicUser
  service needs ``SupplementaryGroups=asterisk`` (all of Asterisk's logs) or an ACL kept through
  logrotate, and "since T" means seeking through rotated files.
- The AstDB entry is written at the moment the dialplan knows everything: the verdict, how far the call
  got (stage), ``QUEUESTATUS``/``ABANDONED``/``DIALSTATUS``, and whether a person took it (Queue's gosub on
  the member's channel, ``callguard-answered``; ``DIALSTATUS=ANSWER`` for a dial). Every reason of the
  tracker is covered, keyed by Linkedid. It is read over the AMI link callguard already has: ``DBGetTree``
  needs ``write = reporting`` (class system|reporting), the class ``CoreShowChannels`` needs anyway for
  re-attaching calls in progress; nothing on the file system. It is on disk in astdb.sqlite3, so it
  survives callguard (and Asterisk) restarts; buckets by UTC weekday+hour (``%u%H``) make "since T" one
  ``DBGetTree`` per hour of the window, and each hang-up clears the bucket two hours ahead, so AstDB holds
  about a week (the longest gap that can be rebuilt is ~165 hours).

Entry: key ``/callguard/calls/<%u%H>/<Linkedid>``, value ``1|uniqueid|start|end|verdict|stage|QUEUESTATUS|
ABANDONED|DIALSTATUS|answered|HANGUPCAUSE|base64(DID)|base64(caller number)`` (times: epoch seconds).
Bad input never raises: every entry becomes a ``CallRecord`` or a ``Rejected`` saying why.
"""

from __future__ import annotations

import binascii
import re
import time
from base64 import b64decode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FAMILY = "callguard/calls"
VERSION = "1"
FIELDS = 13
KEEP_HOURS = 165  # buckets repeat weekly and the one two hours ahead is cleared: older ones are not there
VERDICTS = frozenset({"", "spam", "clean", "whitelist", "anonymous", "closed"})
STAGES = frozenset({"screen", "routed", "queue", "dial", "closed"})
_KEY = re.compile(r"/?callguard/calls/([1-7](?:[01][0-9]|2[0-3]))/([A-Za-z0-9._-]{1,150})")
_WORD = re.compile(r"[A-Z]{0,20}")
_CAUSE = re.compile(r"[0-9]{0,3}")
MAX_TEXT = 200  # of a rejected entry kept for the log
MAX_VALUE = 4096


@dataclass(frozen=True, slots=True)
class CallRecord:
    linkedid: str
    uniqueid: str  # the caller's channel (= agi_uniqueid of its screen)
    started_at: float  # when callguard-screen began (epoch s)
    ended_at: float  # the caller's hang-up
    verdict: str  # CALLGUARD_VERDICT; "" = callguard unreachable or silent (fail-open)
    stage: str  # screen | routed | queue | dial | closed: how far the shipped dialplan took it
    queue_status: str
    abandoned: bool  # app_queue's ABANDONED=TRUE: the caller hung up while waiting
    dial_status: str
    answered_at: float | None  # a queue member took it (callguard-answered)
    hangup_cause: str
    did_raw: str
    caller_raw: str


@dataclass(frozen=True, slots=True)
class Rejected:
    key: str
    why: str
    text: str


def parse_entry(key: str, value: str) -> CallRecord | Rejected:
    """One AstDB entry (``DBGetTreeResponse`` Key/Val, or a line of ``database show``)."""
    m = _KEY.fullmatch(key)
    if m is None:
        return _reject(key, "key", value)
    if len(value) > MAX_VALUE:
        return _reject(key, "too_long", value)
    parts = value.split("|")
    if len(parts) != FIELDS or parts[0] != VERSION:
        return _reject(key, "fields", value)
    _, uid, start, end, verdict, stage, qstatus, abandoned, dstatus, answered, cause, did64, caller64 = parts
    times = _epoch(start), _epoch(end), _epoch(answered) if answered else None
    if times[0] is None or times[1] is None or (answered and times[2] is None):
        return _reject(key, "time", value)
    if verdict not in VERDICTS or stage not in STAGES or abandoned not in ("", "TRUE"):
        return _reject(key, "word", value)
    if not (_WORD.fullmatch(qstatus) and _WORD.fullmatch(dstatus) and _CAUSE.fullmatch(cause)):
        return _reject(key, "word", value)
    did, caller = _text(did64), _text(caller64)
    if did is None or caller is None or not uid or len(uid) > 150:
        return _reject(key, "text", value)
    return CallRecord(
        linkedid=m.group(2), uniqueid=uid, started_at=times[0], ended_at=max(times[0], times[1]), verdict=verdict,
        stage=stage, queue_status=qstatus, abandoned=abandoned == "TRUE", dial_status=dstatus,
        answered_at=times[2], hangup_cause=cause, did_raw=did, caller_raw=caller,
    )


def parse_tree(frames: Iterable[Mapping[str, str]]) -> tuple[list[CallRecord], list[Rejected]]:
    """The reply to ``DBGetTree Family: callguard/calls[/<bucket>]``: its ``DBGetTreeResponse`` events."""
    records: list[CallRecord] = []
    rejected: list[Rejected] = []
    for frame in frames:
        if frame.get("Event") != "DBGetTreeResponse":
            continue
        got = parse_entry(str(frame.get("Key", "")), str(frame.get("Val", "")))
        (records if isinstance(got, CallRecord) else rejected).append(got)  # type: ignore[arg-type]
    return records, rejected


def parse_database_show(text: str) -> tuple[list[CallRecord], list[Rejected]]:
    """``asterisk -rx 'database show callguard/calls'``: ``<key>   : <value>`` lines and a count line."""
    records: list[CallRecord] = []
    rejected: list[Rejected] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.lstrip().startswith("/"):
            continue  # the "N results found." line, blank lines
        got = parse_entry(key.strip(), value.strip())
        (records if isinstance(got, CallRecord) else rejected).append(got)  # type: ignore[arg-type]
    return records, rejected


def bucket_of(epoch: float) -> str:
    """The bucket the dialplan writes a hang-up at ``epoch`` into: ``STRFTIME(,GMT,%u%H)``."""
    return time.strftime("%u%H", time.gmtime(epoch))


def buckets_since(since: float, now: float) -> list[str]:
    """Families to read with DBGetTree for the hang-ups in [since, now], oldest first; at most
    ``KEEP_HOURS`` + 1 buckets (older ones are gone or overwritten). Entries are filtered by their time."""
    start = max(since, now - KEEP_HOURS * 3600.0)
    hour = int(start // 3600) * 3600
    out: list[str] = []
    while hour <= now and len(out) <= KEEP_HOURS:
        out.append(f"{FAMILY}/{bucket_of(hour)}")
        hour += 3600
    return out


def _epoch(text: str) -> float | None:
    if not text or len(text) > 20 or not text.replace(".", "", 1).isdigit():
        return None
    return float(text)


def _text(b64: str) -> str | None:
    try:
        raw = b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", errors="replace")[:MAX_TEXT]


def _reject(key: str, why: str, value: str) -> Rejected:
    return Rejected(key[:MAX_TEXT], why, value[:MAX_TEXT])
