"""Reading Asterisk's view after a gap, over the AMI session: the channels up now (``CoreShowChannels``)
and the call records of the shipped dialplan's hangup handler (``DBGetTree``/``DBGet``, records.py).

Reply shapes as recorded on Asterisk 22.10.1 (tests/fixtures/astdb/*.ami.txt): a list is ``Response:
Success`` + ``EventList: start``, its events, then ``…Complete`` with ``ListItems``; an empty family is a
``DBGetTreeComplete`` with ``ListItems: 0``; a missing key is ``Response: Error`` / ``Message: Database
entry not found``. Any other error (``Permission denied``: the AMI user lacks ``write = reporting``) raises
``AmiError`` with the fix, so the caller logs it and the next (re)connect tries again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from callguard.ami.wire import Frame
from callguard.calls.records import CallRecord, Rejected, bucket_of, buckets_since, parse_entry, parse_tree
from callguard.errors import AmiError

Request = Callable[[dict[str, str]], Awaitable[list[Frame]]]
NOT_FOUND = "Database entry not found"
RIGHTS_FIX = "give the AMI user `write = reporting` (dialplan/manager_callguard.conf), then `manager reload`"
BOUNDARY_S = 120.0  # a hang-up this close to an hour may sit in the neighbouring bucket


def _check(frames: list[Frame], action: str) -> list[Frame]:
    head = frames[0] if frames else {}
    if head.get("Response") == "Error":
        message = head.get("Message", "")
        if message == NOT_FOUND:
            return []
        fix = f" ({RIGHTS_FIX})" if "ermission" in message else ""
        raise AmiError(f"{action} refused: {message}{fix}")
    return frames


async def read_channels(request: Request) -> list[Frame]:
    frames = _check(await request({"Action": "CoreShowChannels"}), "CoreShowChannels")
    return [f for f in frames if f.get("Event") == "CoreShowChannel"]


async def read_records(request: Request, since: float, now: float) -> tuple[list[CallRecord], list[Rejected]]:
    """Every record of a hang-up in [since, now], one ``DBGetTree`` per hour bucket; older ones left out."""
    records: list[CallRecord] = []
    rejected: list[Rejected] = []
    for family in buckets_since(since, now):
        got, bad = parse_tree(_check(await request({"Action": "DBGetTree", "Family": family}), "DBGetTree"))
        records += [r for r in got if r.ended_at >= since]
        rejected += bad
    return records, rejected


async def read_record(
    request: Request, linkedid: str, ended_near: float, spread: float = BOUNDARY_S,
) -> CallRecord | Rejected | None:
    """The record of one call that ended about ``ended_near`` (its bucket, and the neighbour when the end
    is within ``spread`` seconds of an hour: clocks apart, a hang-up handler that ran late)."""
    buckets = [bucket_of(ended_near)]
    for shift in (-spread, spread):
        if bucket_of(ended_near + shift) not in buckets:
            buckets.append(bucket_of(ended_near + shift))
    for bucket in buckets:
        family = f"callguard/calls/{bucket}"
        frames = _check(await request({"Action": "DBGet", "Family": family, "Key": linkedid}), "DBGet")
        for f in frames:
            if f.get("Event") == "DBGetResponse":
                return parse_entry(f"/{family}/{f.get('Key', '')}", f.get("Val", ""))
    return None
