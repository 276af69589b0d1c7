"""Detect a call-back on the AMI stream, pure: an outbound dial from a roster manager's phone to a
number whose E.164 (phone.normalise, as screening does) is a customer's.

Shapes recorded on 22.10.1 (tests/fixtures/traces s18–s21): the agent's channel sends ``DialBegin``
with ``Channel`` = the agent's channel, ``CallerIDNum`` = the agent's extension, ``Exten`` = the number
as dialled (``89035550142``), ``DestUniqueid`` = the outgoing leg; ``DialEnd`` for the same pair carries
``DialStatus`` (ANSWER, NOANSWER, BUSY, CANCEL, CONGESTION, CHANUNAVAIL; app_dial.c). A ``DialBegin``
without ``Channel`` is an Originate's own dial (the lab's way to ring the agent's phone), not the agent.
An attempt is reported twice: when the dial begins (``final=False``: the loop stops handing on at
once) and when it ends (``final=True``, ``answered`` = ``DialStatus: ANSWER``); a hang-up of the agent's
channel before any ``DialEnd`` ends it as ``HANGUP``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from callguard.ami.wire import Frame
from callguard.callbacks.settings import Roster
from callguard.phone import Kind, normalise

MAX_OPEN_DIALS = 10_000  # dials whose DialEnd/Hangup never came (an AMI gap) are forgotten past this


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    manager: str
    customer_e164: str
    started: float
    answered: bool
    status: str  # "" while dialling, then the DialStatus (or HANGUP)
    final: bool
    uniqueid: str = ""  # the manager's channel
    ended: float | None = None


class AttemptDetector:
    """Feed every AMI frame; returns the attempts it saw begin or end."""

    __slots__ = ("_dials", "max_extension_digits", "region", "roster")

    def __init__(self, roster: Roster, region: str = "RU", max_extension_digits: int = 5) -> None:
        self.roster = roster
        self.region = region
        self.max_extension_digits = max_extension_digits
        # (manager's Uniqueid, DestUniqueid) → the attempt as it began
        self._dials: OrderedDict[tuple[str, str], CallbackAttempt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._dials)

    def feed(self, frame: Frame, now: float) -> list[CallbackAttempt]:
        event = frame.get("Event")
        if event == "DialBegin":
            begun = self._begin(frame, now)
            return [begun] if begun is not None else []
        if event == "DialEnd":
            key = (frame.get("Uniqueid", ""), frame.get("DestUniqueid", ""))
            att = self._dials.pop(key, None)
            return [] if att is None else [_end(att, frame.get("DialStatus", ""), now)]
        if event == "Hangup" and self._dials:
            uid = frame.get("Uniqueid", "")
            ended = [k for k in self._dials if k[0] == uid]
            return [_end(self._dials.pop(k), "HANGUP", now) for k in ended]
        return []

    def _begin(self, frame: Frame, now: float) -> CallbackAttempt | None:
        channel = frame.get("Channel")
        if not channel:
            return None
        manager = self.roster.owner(channel, frame.get("CallerIDNum", ""))
        if manager is None:
            return None
        e164 = self._number(frame)
        if e164 is None:
            return None  # an internal call (another extension) or nothing we can call a customer's
        att = CallbackAttempt(manager, e164, now, False, "", False, frame.get("Uniqueid", ""))
        self._dials[(att.uniqueid, frame.get("DestUniqueid", ""))] = att
        if len(self._dials) > MAX_OPEN_DIALS:
            self._dials.popitem(last=False)
        return att

    def _number(self, frame: Frame) -> str | None:
        """The dialled number: the agent channel's Exten, else the leg's DestExten, else the DialString."""
        dial = frame.get("DialString", "").rpartition("/")[2].partition("@")[0]
        for raw in (frame.get("Exten", ""), frame.get("DestExten", ""), dial):
            if raw:
                phone = normalise(raw, self.region, self.max_extension_digits)
                if phone.kind is Kind.NUMBER and phone.e164:
                    return phone.e164
        return None


def _end(att: CallbackAttempt, status: str, now: float) -> CallbackAttempt:
    return CallbackAttempt(att.manager, att.customer_e164, att.started, status == "ANSWER", status or "UNKNOWN",
                           True, att.uniqueid, now)
