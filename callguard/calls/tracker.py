"""The call tracker, pure: AMI frames (and FastAGI screens) in, ``CallOutcome``s out. No I/O, no clock.

A call is the set of channels sharing a Linkedid (DESIGN.md, the call model). It starts when a channel
shows up in one of ``ami.inbound_contexts``; every later channel with the same Linkedid (Local halves,
queue members, transfer targets) belongs to it, and it ends when its last known channel hangs up. The
channel technology never matters: the lab's caller is ``Local/…;2``, a real PBX's ``PJSIP/trunk-…``.

What the recordings (tests/fixtures/traces, Asterisk 22.10.1) show and this module relies on:
- answered = ``AgentConnect`` for the call, or a ``DialEnd ANSWER`` from a caller channel followed by that
  channel entering a bridge (an IVR ``Answer()`` has neither). ``AgentRingNoAnswer`` is not final.
- ``QueueCallerAbandon`` comes for a caller hang-up, a queue timeout and leave-when-empty alike; the caller
  left only if a (Soft)HangupRequest on a caller channel came while it was in the queue. ``QUEUESTATUS``
  arrives as ``VarSet`` (``dialplan`` class) or as the shipped dialplan's ``UserEvent CallguardQueue``.
- join-empty and a hang-up during screening give no Queue*/Agent* events at all.
- after a ``Redirect``, ``AgentComplete`` may come late without channel fields: ignored (no Linkedid).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from callguard.ami.wire import Frame, event_time, unescape
from callguard.config import Config
from callguard.leads.model import MissedCall
from callguard.phone import normalise
from callguard.store.screens import ScreenRecord


class Outcome(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    SPAM = "spam"
    SHORT = "short"  # unanswered but shorter than missed.min_ring_seconds: not a lead
    LOST = "lost"  # events went missing (AMI link down, stale): logged, never a lead


# QUEUESTATUS (app_queue) → missed reason. CONTINUE says nothing about why: fall through to inference.
QUEUE_REASONS = {
    "TIMEOUT": "timeout",
    "FULL": "no_agents",
    "JOINEMPTY": "no_agents",
    "LEAVEEMPTY": "no_agents",
    "JOINUNAVAIL": "no_agents",
    "LEAVEUNAVAIL": "no_agents",
    "WITHDRAW": "abandoned",
}
# DIALSTATUS (app_dial) → missed reason.
DIAL_REASONS = {
    "NOANSWER": "no_answer",
    "CHANUNAVAIL": "no_answer",
    "CONGESTION": "no_answer",
    "BUSY": "busy",
    "CANCEL": "abandoned",
}
_NO_CALLER = ("", "<unknown>")
SWEEP_EVERY = 1.0  # seconds (monotonic) between stale sweeps
DONE_MEMORY = 20_000  # finished Linkedids remembered so late events do not start a phantom call
BORN_MEMORY = 20_000  # Linkedids born outside the inbound contexts that may Goto one (e.g. from-pstn)
PENDING_SCREENS = 10_000  # screens whose channel AMI has not shown yet
CALL_CONTEXT_PREFIX = "callguard-"  # the shipped dialplan's contexts: a caller channel is in one mid-call


@dataclass(frozen=True, slots=True)
class CallOutcome:
    linkedid: str
    uniqueid: str  # the caller channel that ran the dialplan (= agi_uniqueid)
    caller: str
    did: str
    verdict: str
    outcome: Outcome
    reason: str
    started_at: float
    ended_at: float
    wait_s: float
    caller_name: str = ""
    contact_id: str = ""

    @property
    def is_lead(self) -> bool:
        return self.outcome is Outcome.MISSED

    def to_missed(self) -> MissedCall:
        return MissedCall(
            linkedid=self.linkedid, caller=self.caller, did=self.did, reason=self.reason,
            started_at=self.started_at, ended_at=self.ended_at, wait_s=self.wait_s,
            caller_name=self.caller_name, contact_id=self.contact_id,
        )


@dataclass(slots=True)
class _Call:
    linkedid: str
    started_at: float
    last_at: float  # event time of its last event
    seen: float = 0.0  # monotonic arrival of its last event: what expiry reads
    channels: set[str] = field(default_factory=set)
    inbound: set[str] = field(default_factory=set)  # caller-side channels (started in an inbound context)
    uniqueid: str = ""
    caller_raw: str = ""
    caller_name: str = ""
    did_raw: str = ""
    screen_caller: str = ""
    screen_did: str = ""
    verdict: str = ""
    contact_id: str = ""
    in_queue: bool = False
    joined_queue: bool = False
    left_queue_by_hangup: bool = False
    queue_status: str = ""
    dial_status: str = ""
    dial_ends: set[str] = field(default_factory=set)
    dial_answered: bool = False
    answered_at: float | None = None
    closed: bool = False
    cause21: bool = False
    caller_left_at: float | None = None
    gap: str = ""  # why this call's events are incomplete (never a lead): events_lost | start_unseen


class CallTracker:
    def __init__(self, cfg: Config) -> None:
        self.inbound_contexts = frozenset(cfg.ami.inbound_contexts)
        self.stale_after = float(cfg.calls.stale_after)
        self.max_calls = cfg.calls.max_calls
        self.min_ring = float(cfg.missed.min_ring_seconds)
        self.region = cfg.phone.default_region
        self.ext_digits = cfg.phone.max_extension_digits
        self.ts_ahead = float(cfg.calls.timestamp_ahead)
        self.ts_behind = float(cfg.calls.timestamp_behind)
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # least recently active first
        self._chan: dict[str, str] = {}  # uniqueid → linkedid, live channels of tracked calls
        self._done: OrderedDict[str, None] = OrderedDict()
        # Linkedid → (event time, monotonic arrival) of its first Newchannel
        self._born: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._pending: OrderedDict[str, ScreenRecord] = OrderedDict()
        self._last_sweep = 0.0
        self.events = 0
        self.ignored = 0
        self._gone: set[str] | None = None  # channels hung up while a CoreShowChannels snapshot is read
        self._fresh: set[str] = set()  # calls with events meanwhile: alive after the snapshot was taken
        self.clamps = 0  # events whose Timestamp was not used (out of bounds, garbage)
        self.last_clamp: tuple[str, str, str] = ("", "", "")  # (kind, event name, the Timestamp sent)

    def __len__(self) -> int:
        return len(self._calls)

    # --- input --------------------------------------------------------------------------------------

    def feed(self, frame: Frame, now: float, mono: float | None = None) -> list[CallOutcome]:
        """One AMI event. ``now`` = when it arrived (epoch s), ``mono`` = the same on the monotonic clock
        (None: ``now``, as in a replay). Event times come from ``Timestamp:`` within bounds of ``now``
        (amiwire.event_time); staleness only from ``mono``, so no stamp can age a live call out."""
        self.events += 1
        arrival = now
        mono = now if mono is None else mono
        now, clamp = event_time(frame, arrival, self.ts_ahead, self.ts_behind)
        if clamp:
            self.clamps += 1
            self.last_clamp = (clamp, frame.get("Event", ""), frame.get("Timestamp", "")[:40])
        out: list[CallOutcome] = []
        if mono - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = mono
            out.extend(self.expire(mono, arrival))
        lid = frame.get("Linkedid")
        if not lid:
            self.ignored += 1
            return out
        call = self._calls.get(lid)
        if call is None:
            call = self._maybe_start(frame, lid, now, mono)
            if call is None:
                self.ignored += 1
                return out
        else:
            self._calls.move_to_end(lid)
        call.last_at = now
        call.seen = mono
        handler = _HANDLERS.get(frame.get("Event", ""))
        uid = frame.get("Uniqueid", "")
        if uid and uid not in call.channels and handler is not _on_hangup:
            self._add_channel(call, uid, frame)
        if handler is not None:
            handler(call, frame, uid, now)
        if uid in call.inbound:
            _note_caller(call, frame)
        self._note_fresh(lid, uid, handler is _on_hangup)
        if handler is _on_hangup:
            self._chan.pop(uid, None)
            if not call.channels:
                out.append(self._finish(call, now))
        return out

    def screen(self, record: ScreenRecord) -> None:
        """A FastAGI verdict (``ScreenService.subscribe``): tied to its call by the caller's Uniqueid."""
        lid = self._chan.get(record.uniqueid)
        call = self._calls.get(lid) if lid else None
        if call is None:
            self._pending[record.uniqueid] = record
            while len(self._pending) > PENDING_SCREENS:
                self._pending.popitem(last=False)
            return
        _apply_screen(call, record)

    def link_lost(self) -> None:
        """The AMI link dropped: events of every open call may be missing, so none may become a lead."""
        for call in self._calls.values():
            call.gap = call.gap or "events_lost"
        self._born.clear()  # they may have reached an inbound context, even been answered, meanwhile

    def snapshot_begin(self) -> None:
        """A ``CoreShowChannels`` was sent: channels that hang up before its reply is read must not be
        re-attached by it (the reply may predate their Hangup event)."""
        self._gone = set()
        self._fresh = set()

    def reattach(self, channels: list[Frame], now: float, mono: float) -> list[CallOutcome]:
        """After a gap, the channels Asterisk says are up (``CoreShowChannel`` events, recorded in
        tests/fixtures/astdb/coreshowchannels.ami.txt). A tracked call none of whose channels is up ended
        unseen (lost: the AstDB record decides); one that is up gets its live channels; an untracked one
        with a channel in an inbound or a shipped ``callguard-*`` context is tracked from here on
        (``start_unseen``: never a lead from its events, its record decides), so its end is seen and
        ``callguard_calls_active`` is true again."""
        gone, self._gone = self._gone or set(), None
        fresh, self._fresh = self._fresh, set()
        live: dict[str, list[Frame]] = {}
        for ch in channels:
            lid, uid = ch.get("Linkedid", ""), ch.get("Uniqueid", "")
            if lid and uid and uid not in gone:
                live.setdefault(lid, []).append(ch)
        out = [self._finish(call, now, lost="ended_unseen")
               for lid, call in list(self._calls.items()) if lid not in live and lid not in fresh]
        for lid, chans in live.items():
            call = self._calls.get(lid)
            if call is None:
                if lid in self._done or not any(self._is_call_context(c.get("Context", "")) for c in chans):
                    continue
                call = self._calls[lid] = _Call(lid, now, now, mono, gap="start_unseen")
            call.seen = mono
            for ch in chans:
                uid = ch["Uniqueid"]
                if uid not in call.channels:
                    call.channels.add(uid)
                    self._chan[uid] = lid
                    if self._is_call_context(ch.get("Context", "")):
                        call.inbound.add(uid)
                        call.uniqueid = call.uniqueid or uid
                        _note_caller(call, ch)
        return out

    def _note_fresh(self, lid: str, uid: str, hangup: bool) -> None:
        if self._gone is not None:  # a CoreShowChannels reply is awaited
            self._fresh.add(lid)
            if hangup:
                self._gone.add(uid)

    def open_ids(self) -> set[str]:
        return set(self._calls)

    def _is_call_context(self, context: str) -> bool:
        return context in self.inbound_contexts or context.startswith(CALL_CONTEXT_PREFIX)

    def expire(self, mono: float, now: float | None = None) -> list[CallOutcome]:
        """Calls with no event for ``stale_after`` by the monotonic clock ``mono`` (and the oldest beyond
        ``max_calls``) end as lost, ended at ``now`` (epoch s; None: their last event's time)."""
        out: list[CallOutcome] = []
        limit = mono - self.stale_after
        while self._born and next(iter(self._born.values()))[1] <= limit:
            self._born.popitem(last=False)
        while self._calls:
            call = next(iter(self._calls.values()))
            if call.seen > limit and len(self._calls) <= self.max_calls:
                break
            reason = "stale" if call.seen <= limit else "overflow"
            out.append(self._finish(call, call.last_at if now is None else now, lost=reason))
        return out

    def drain(self, now: float, reason: str = "shutdown") -> list[CallOutcome]:
        """Every open call ends as lost: its end will never be seen (shutdown, end of a capture)."""
        return [self._finish(call, now, lost=reason) for call in list(self._calls.values())]

    # --- bookkeeping --------------------------------------------------------------------------------

    def _maybe_start(self, frame: Frame, lid: str, now: float, mono: float) -> _Call | None:
        event = frame.get("Event")
        if lid in self._done:
            return None
        if frame.get("Context") not in self.inbound_contexts:
            if event == "Newchannel" and frame.get("Uniqueid") == lid:
                self._born[lid] = (now, mono)  # may reach an inbound context later (Goto): its start is known
                if len(self._born) > BORN_MEMORY:
                    self._born.popitem(last=False)
            return None
        if event in ("Hangup", "Cdr"):
            return None
        born = self._born.pop(lid, None)
        call = _Call(lid, now if born is None else born[0], now, mono)
        if born is None and not (event == "Newchannel" and frame.get("Uniqueid") == lid):
            # First seen mid-way: the AMI link was down, or callguard (re)started, when it began. Its
            # answer may be among what was missed, so it can never be a lead (a phantom otherwise).
            call.gap = "start_unseen"
        self._calls[lid] = call
        return call

    def _add_channel(self, call: _Call, uid: str, frame: Frame) -> None:
        call.channels.add(uid)
        self._chan[uid] = call.linkedid
        if frame.get("Context") in self.inbound_contexts:
            call.inbound.add(uid)
            if not call.uniqueid:
                call.uniqueid = uid
            exten = frame.get("Exten", "")
            if not call.did_raw and exten not in ("", "s"):
                call.did_raw = exten
        record = self._pending.pop(uid, None)
        if record is not None:
            _apply_screen(call, record)

    def _finish(self, call: _Call, now: float, lost: str = "") -> CallOutcome:
        del self._calls[call.linkedid]
        for uid in call.channels:
            self._chan.pop(uid, None)
        self._done[call.linkedid] = None
        if len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)
        outcome, reason = self._classify(call, now)
        if lost and outcome not in (Outcome.ANSWERED, Outcome.SPAM):
            outcome, reason = Outcome.LOST, lost  # an answer or a spam verdict stays true without the end
        ended = call.caller_left_at or now
        waited_until = call.answered_at if call.answered_at is not None else ended
        return CallOutcome(
            linkedid=call.linkedid, uniqueid=call.uniqueid, caller=self._caller(call), did=self._did(call),
            verdict=call.verdict, outcome=outcome, reason=reason, started_at=call.started_at,
            ended_at=ended, wait_s=round(max(0.0, waited_until - call.started_at), 3),
            caller_name=call.caller_name, contact_id=call.contact_id,
        )

    def _classify(self, call: _Call, now: float) -> tuple[Outcome, str]:
        if call.answered_at is not None:
            return Outcome.ANSWERED, "queue" if call.joined_queue else "dial"
        if call.verdict == "spam" or (not call.verdict and call.cause21):
            return Outcome.SPAM, "screened"
        if call.gap:
            return Outcome.LOST, call.gap
        reason = _missed_reason(call)
        if (call.caller_left_at or now) - call.started_at < self.min_ring:
            return Outcome.SHORT, reason
        return Outcome.MISSED, reason

    def _caller(self, call: _Call) -> str:
        if call.screen_caller:
            return call.screen_caller
        return normalise(call.caller_raw, self.region, self.ext_digits).display

    def _did(self, call: _Call) -> str:
        if call.screen_did:
            return call.screen_did
        return normalise(call.did_raw, self.region, self.ext_digits).key or call.did_raw


def _missed_reason(call: _Call) -> str:
    if call.verdict == "closed" or call.closed:
        return "after_hours"
    if call.left_queue_by_hangup:
        return "abandoned"
    if call.queue_status in QUEUE_REASONS:
        return QUEUE_REASONS[call.queue_status]
    if call.joined_queue:
        return "timeout"  # the queue let go of a caller who had not hung up
    if call.dial_status in DIAL_REASONS:
        return DIAL_REASONS[call.dial_status]
    for status in ("BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL"):
        if status in call.dial_ends:
            return DIAL_REASONS[status]
    return "hangup_before_queue"


def _apply_screen(call: _Call, record: ScreenRecord) -> None:
    call.verdict = record.verdict
    call.screen_caller = record.caller
    call.screen_did = record.did
    call.uniqueid = record.uniqueid


def _note_caller(call: _Call, frame: Frame) -> None:
    if call.caller_raw in _NO_CALLER:
        num = frame.get("CallerIDNum", "")
        if num not in _NO_CALLER:
            call.caller_raw = num
    if not call.caller_name:
        name = frame.get("CallerIDName", "")
        if name not in _NO_CALLER:
            call.caller_name = unescape(name)[:80]


# --- event handlers: (call, frame, uniqueid, now) ------------------------------------------------------


def _on_varset(call: _Call, frame: Frame, uid: str, now: float) -> None:
    name, value = frame.get("Variable", ""), unescape(frame.get("Value", ""))
    if not value:
        return  # Dial() clears DIALSTATUS before it starts
    if name == "CALLGUARD_VERDICT":
        call.verdict = value
        if uid in call.inbound:
            call.uniqueid = uid
    elif name == "QUEUESTATUS":
        call.queue_status = value
    elif name == "DIALSTATUS":
        call.dial_status = value
        if value == "ANSWER" and call.dial_answered and call.answered_at is None:
            call.answered_at = now
    elif name == "CALLGUARD_CONTACT_ID":
        call.contact_id = value


def _on_userevent(call: _Call, frame: Frame, uid: str, now: float) -> None:
    kind, status = frame.get("UserEvent", ""), frame.get("Status", "")
    if kind == "CallguardQueue" and status:
        call.queue_status = status
    elif kind == "CallguardDial" and status:
        call.dial_status = status
    elif kind == "CallguardClosed":
        call.closed = True


def _on_queue_join(call: _Call, frame: Frame, uid: str, now: float) -> None:
    call.in_queue = call.joined_queue = True
    if uid in call.inbound:
        call.uniqueid = uid


def _on_queue_leave(call: _Call, frame: Frame, uid: str, now: float) -> None:
    call.in_queue = False


def _on_hangup_request(call: _Call, frame: Frame, uid: str, now: float) -> None:
    if call.in_queue and uid in call.inbound:
        call.left_queue_by_hangup = True


def _on_agent_connect(call: _Call, frame: Frame, uid: str, now: float) -> None:
    if call.answered_at is None:
        call.answered_at = now


def _on_dial_end(call: _Call, frame: Frame, uid: str, now: float) -> None:
    if uid not in call.inbound:
        return  # a queue member's own legs, or an Originate's
    status = frame.get("DialStatus", "")
    if status == "ANSWER":
        call.dial_answered = True
    elif status:
        call.dial_ends.add(status)


def _on_bridge_enter(call: _Call, frame: Frame, uid: str, now: float) -> None:
    if call.dial_answered and uid in call.inbound and call.answered_at is None:
        call.answered_at = now


def _on_hangup(call: _Call, frame: Frame, uid: str, now: float) -> None:
    call.channels.discard(uid)
    if uid in call.inbound:
        if call.caller_left_at is None:
            call.caller_left_at = now
        if frame.get("Cause") == "21":
            call.cause21 = True


_HANDLERS = {
    "VarSet": _on_varset,
    "UserEvent": _on_userevent,
    "QueueCallerJoin": _on_queue_join,
    "QueueCallerLeave": _on_queue_leave,
    "HangupRequest": _on_hangup_request,
    "SoftHangupRequest": _on_hangup_request,
    "AgentConnect": _on_agent_connect,
    "DialEnd": _on_dial_end,
    "BridgeEnter": _on_bridge_enter,
    "Hangup": _on_hangup,
}
