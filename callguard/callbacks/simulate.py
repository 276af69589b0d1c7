"""Test mode, pure: the call-back loop run over a recorded AMI capture, touching no CRM and no socket.

``simulate(frames, cfg, callback_cfg)`` feeds each ``(time, frame)`` to the call tracker (missed calls
open call-backs, an answered call from a waiting customer is "got through"), to the presence, and to
the attempt detector, and steps the loop; the clock is compressed: the pause is divided by
``time_scale``, and after the last frame the clock jumps from one due time to the next until every
call-back has settled. No CRM: the read the loop asks for before a hand-on is answered at once with
nothing changed (as with ``crm.kind = none``). Returns every step the loop took, in order (for
``callguard callbacks simulate``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from callguard.ami.wire import Frame, FrameFeeder
from callguard.callbacks.book import CallbackBook
from callguard.callbacks.detect import AttemptDetector, CallbackAttempt
from callguard.callbacks.loop import Action, Attempt, CrmChanged, Step
from callguard.callbacks.presence import Presence
from callguard.callbacks.settings import CallbackConfig, parse_roster, with_pause
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.config import Config

MAX_TAIL_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class SimStep:
    at: float
    key: str
    cause: str  # what moved it: lead | repeat_miss | timer | freed | attempt:<status> | got_through
    state: str
    manager: str
    actions: tuple[Action, ...]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "key": self.key, "cause": self.cause, "state": self.state,
                "manager": self.manager, "actions": [a.to_json() for a in self.actions]}


class _Sim:
    def __init__(self, cfg: Config, cb_cfg: CallbackConfig, time_scale: float, seed: int) -> None:
        cb_cfg = with_pause(cb_cfg, cb_cfg.pause / time_scale)
        self.roster = parse_roster(cb_cfg)
        self.presence = Presence(self.roster)
        self.detector = AttemptDetector(self.roster, cfg.phone.default_region, cfg.phone.max_extension_digits)
        self.tracker = CallTracker(cfg)
        self.book = CallbackBook(cb_cfg)
        self.book.bind(self.presence, random.Random(seed))
        self.steps: list[SimStep] = []

    def note(self, at: float, cause: str, steps: Iterable[Step]) -> None:
        for s in steps:
            s = self._read(at, s)
            cb = s.callback
            self.steps.append(SimStep(at, cb.key, cause, cb.state.value, cb.manager, s.actions))

    def _read(self, at: float, s: Step) -> Step:
        """A ``check`` answered by no CRM: nothing changed, so the hand-on goes ahead in the same step."""
        checks = [a for a in s.actions if a.kind == "check"]
        if not checks:
            return s
        read = self.book.apply(s.callback, CrmChanged(at, epoch=checks[0].epoch))
        return Step(read.callback, tuple(a for a in (*s.actions, *read.actions) if a.kind != "check"))

    def frame(self, at: float, frame: Frame) -> None:
        self.note(at, "timer", self.book.tick(at))
        owner = self.presence.feed(frame)
        if owner is not None and owner in self.presence.free(at):
            self.note(at, "freed", self.book.freed(at))
        for att in self.detector.feed(frame, at):
            self._attempt(at, att)
        for outcome in self.tracker.feed(frame, at):
            self._outcome(at, outcome)

    def _attempt(self, at: float, att: CallbackAttempt) -> None:
        event = Attempt(at, att.manager, att.answered, att.final, att.status)
        self.note(at, f"attempt:{att.status or 'DIALLING'}", self.book.attempt(att.customer_e164, event))

    def _outcome(self, at: float, o: CallOutcome) -> None:
        if not o.caller.startswith("+"):
            return  # anonymous or invalid: nobody to call back
        if o.outcome is Outcome.ANSWERED:
            self.note(at, "got_through", self.book.got_through(o.caller, at))
        elif o.is_lead:
            open_cbs = self.book.for_customer(o.caller)
            if open_cbs:
                self.note(at, "repeat_miss", [self.book.open(open_cbs[0].key, o.caller, at, repeat=True)])
            else:
                self.note(at, "lead", [self.book.open(o.linkedid, o.caller, at)])

    def tail(self) -> None:
        for _ in range(MAX_TAIL_STEPS):
            due = self.book.next_due()
            if due is None:
                return
            self.note(due, "timer", self.book.tick(due))


def simulate(
    frames: Iterable[tuple[float, Frame]], cfg: Config, cb_cfg: CallbackConfig, *,
    time_scale: float = 1.0, seed: int = 0, tail: bool = True,
) -> list[SimStep]:
    """Every step the loop would take over ``frames`` (epoch seconds, AMI frame), pauses compressed."""
    sim = _Sim(cfg, cb_cfg, time_scale, seed)
    for at, frame in frames:
        sim.frame(at, frame)
    if tail:
        sim.tail()
    return sim.steps


def timed_frames(chunks: Iterable[tuple[float, bytes]], base: float = 0.0) -> list[tuple[float, Frame]]:
    """A capture's ``(seconds since start, bytes read)`` chunks (the ``.ami.jsonl`` form) → timed frames."""
    feeder, out = FrameFeeder(), []
    for t, chunk in chunks:
        out.extend((base + t, f) for f in feeder.feed(chunk))
    return out
