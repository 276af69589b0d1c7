"""Who is free right now, from AMI frames. Pure: frames in, state out; time is passed to ``free``.

Free = logged into a counted queue, not paused, not in a call, within working hours.
* Membership and pause come from app_queue's member events, which all carry the whole member
  (recorded on 22.10.1: ``QueueMember`` in the ``QueueStatus`` list, s00; ``QueueMemberStatus``, s02;
  ``QueueMemberPause``, s05; ``QueueMemberAdded``/``QueueMemberRemoved``, s22). ``QueueMember`` names
  the fields ``Name``/``Location`` where the events say ``MemberName``/``Interface``.
* ``Status`` is the member's device state (include/asterisk/devicestate.h ``ast_device_state``):
  0 unknown, 1 not in use, 2 in use, 3 busy, 4 invalid, 5 unavailable, 6 ringing, 7 ring+in use,
  8 on hold. 4/5 = not logged in (app_queue does not ring them); 2, 3, 6, 7, 8 or ``InCall: 1`` = in a
  call. Asterisk rings a member whose state is unknown, so 0 counts as free here too.
* A Local/ interface's device state does not follow the phone behind it (s21: an agent dialling out
  from their phone leaves ``Local/101@agents`` at 1), so the manager's own channels count too: a channel
  of one of their devices, or one dialling out with their caller ID, is a call from ``DialBegin`` (either
  side) until its ``Hangup``.
Call ``reset()`` when the AMI link is (re)established, before the ``QueueStatus`` list arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from callguard.ami.wire import Frame
from callguard.callbacks.settings import Roster

NOT_LOGGED_IN = frozenset({4, 5})
IN_A_CALL = frozenset({2, 3, 6, 7, 8})
MEMBER_EVENTS = frozenset({"QueueMember", "QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded"})
MAX_CALL_CHANNELS = 10_000  # a bound for channels whose Hangup never came (an AMI gap): reset() clears


@dataclass(frozen=True, slots=True)
class MemberState:
    queue: str
    interface: str
    status: int
    paused: bool
    in_call: bool

    @property
    def available(self) -> bool:
        return self.status not in NOT_LOGGED_IN and not self.paused

    @property
    def busy(self) -> bool:
        return self.in_call or self.status in IN_A_CALL


class Presence:
    """Queue membership and calls per roster manager; ``free(now)`` is what the picking rule reads."""

    __slots__ = ("_calls", "_members", "roster")

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self._members: dict[tuple[str, str], tuple[str, MemberState]] = {}  # (queue, interface) → owner
        self._calls: dict[str, str] = {}  # Uniqueid of a live channel → the manager it belongs to

    def reset(self) -> None:
        """The link was (re)established: what we knew may be stale; the QueueStatus list rebuilds it."""
        self._members.clear()
        self._calls.clear()

    def feed(self, frame: Frame) -> str | None:
        """One AMI frame; returns the manager whose state it may have changed (None: nobody's)."""
        event = frame.get("Event")
        if event in MEMBER_EVENTS:
            return self._on_member(frame, event)
        if event == "QueueMemberRemoved":
            return self._on_removed(frame)
        if event == "DialBegin":
            return self._on_dial(frame)
        if event == "Hangup":
            return self._calls.pop(frame.get("Uniqueid", ""), None)
        return None

    def _member_key(self, frame: Frame, event: str | None) -> tuple[str, str, str] | None:
        interface = frame.get("Location" if event == "QueueMember" else "Interface", "")
        state_interface = frame.get("StateInterface", "")
        owner = self.roster.by_device.get(interface) or self.roster.by_device.get(state_interface)
        queue = frame.get("Queue", "")
        if owner is None or (self.roster.queues and queue not in self.roster.queues):
            return None
        return queue, interface, owner

    def _on_member(self, frame: Frame, event: str | None) -> str | None:
        key = self._member_key(frame, event)
        if key is None:
            return None
        queue, interface, owner = key
        try:
            status = int(frame.get("Status", "0"))
        except ValueError:
            status = 0
        state = MemberState(queue, interface, status, frame.get("Paused") == "1", frame.get("InCall") == "1")
        self._members[(queue, interface)] = (owner, state)
        return owner

    def _on_removed(self, frame: Frame) -> str | None:
        key = self._member_key(frame, "QueueMemberRemoved")
        if key is None:
            return None
        self._members.pop(key[:2], None)
        return key[2]

    def _on_dial(self, frame: Frame) -> str | None:
        owner = None
        if frame.get("Channel"):
            owner = self.roster.owner(frame["Channel"], frame.get("CallerIDNum", ""))
            if owner is not None:
                self._note_call(frame.get("Uniqueid", ""), owner)
        dest = self.roster.owner(frame.get("DestChannel", ""))  # a call to the manager's device
        if dest is not None:
            self._note_call(frame.get("DestUniqueid", ""), dest)
        return owner or dest

    def _note_call(self, uid: str, owner: str) -> None:
        if uid and len(self._calls) < MAX_CALL_CHANNELS:
            self._calls[uid] = owner

    # --- queries ------------------------------------------------------------------------------------

    def _mine(self, name: str) -> list[MemberState]:
        return [s for owner, s in self._members.values() if owner == name]

    def logged_in(self, name: str) -> bool:
        return any(s.status not in NOT_LOGGED_IN for s in self._mine(name))

    def in_call(self, name: str) -> bool:
        return name in self._calls.values() or any(s.busy for s in self._mine(name))

    def reachable(self, name: str) -> bool:
        """Logged in, not paused, not in a call (hours aside)."""
        return name in self._reachable()

    def _reachable(self) -> set[str]:
        ok: set[str] = set()
        busy = set(self._calls.values())
        for owner, s in self._members.values():
            if s.busy:
                busy.add(owner)
            elif s.available:
                ok.add(owner)
        return ok - busy

    def free(self, now: float) -> list[str]:
        """Managers free at ``now`` (epoch seconds), in roster order."""
        ok = self._reachable()
        return [m.name for m in self.roster.managers if m.name in ok and m.on_duty(now)]

    def on_duty(self, now: float) -> list[str]:
        return [m.name for m in self.roster.managers if m.on_duty(now)]

    def snapshot(self, now: float) -> tuple[list[str], list[str]]:
        """(free, on duty) at ``now`` in one pass over the hours: what the picker asks per decision."""
        on_duty = self.on_duty(now)
        ok = self._reachable()
        return [n for n in on_duty if n in ok], on_duty

    def members(self) -> dict[tuple[str, str], tuple[str, MemberState]]:
        return dict(self._members)
