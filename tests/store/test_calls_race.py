"""hypothesis: the live event path and reconciliation racing over a real store, in any interleaving.

A model of Asterisk runs recorded calls (each scenario's AMI events, ids made unique): every step emits
one event of one call, cuts or restores the AMI link, lets callguard's writer run, or has callguard look
for a lost call's record and find none. The link down drops the events emitted meanwhile (AMI has no
replay); a restored link runs callguard's own ``resync`` against a fake AMI session that answers from the
model: ``CoreShowChannels`` lists the channels still up, ``DBGet``/``DBGetTree`` the records written by the
hang-up handler (the recorded AstDB entry of the call's shape, its times moved to when the model ended
the call). At the end every call has ended, the link is up, and callguard resyncs and looks at its lost
calls once more.

Then, per Linkedid: the call row says what the trace says (answered / missed with its reason, never
``lost``), a missed call has exactly one lead, an answered one none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callguard.ami.wire import Frame
from callguard.calls.recorder import CallFlow
from callguard.calls.records import bucket_of
from callguard.calls.tracker import CallTracker
from callguard.config import Config
from callguard.store import Store
from tests.conftest import FIXTURES
from tests.fakes.asterisk_ami import EXPECTED, frames, recorded_astdb, relabel

LIDS = json.loads((FIXTURES / "astdb" / "scenarios.json").read_text())
# trace scenario → the recorded AstDB entry of the same call shape
SHAPES = {name: name for name in ("s02_clean_answered", "s03_queue_timeout", "s04_caller_abandon",
                                   "s05_queue_no_members", "s10_short_hangup_before_queue",
                                   "s13_ringgroup_noanswer", "s14_direct_busy")}
ENTRY = {name: next(v for k, v in recorded_astdb().items() if k.endswith("/" + LIDS[shape]))
         for name, shape in SHAPES.items()}
T0 = time.time() - 600.0


@dataclass
class SimCall:
    name: str
    events: list[Frame]
    linkedid: str
    sent: int = 0
    channels: dict[str, str] = field(default_factory=dict)  # uniqueid → context, while up

    @property
    def over(self) -> bool:
        return self.sent == len(self.events)


class Pbx:
    """The model of Asterisk: calls, their channels, the AstDB records, the link."""

    def __init__(self, names: list[str]) -> None:
        self.calls = []
        for i, name in enumerate(names):
            evs = [f for f in relabel(frames(name), f"r{i}") if f.get("Event") and f.get("Event") != "FullyBooted"]
            lid = next(f["Linkedid"] for f in evs if f.get("Linkedid"))
            self.calls.append(SimCall(name, evs, lid))
        self.astdb: dict[str, dict[str, str]] = {}  # family → key → value
        self.now = T0
        self.up = True

    def emit(self, i: int) -> Frame | None:
        call = self.calls[i]
        if call.over:
            return None
        frame = call.events[call.sent]
        call.sent += 1
        self.now += 0.5
        uid = frame.get("Uniqueid", "")
        if frame.get("Event") == "Hangup":
            call.channels.pop(uid, None)
        elif uid and frame.get("Context"):
            call.channels[uid] = frame["Context"]
        if call.over:  # the hang-up handler has written the call's record
            fields = ENTRY[call.name].split("|")
            length = float(fields[3]) - float(fields[2])
            shift = self.now - float(fields[3])
            fields[2], fields[3] = f"{self.now - length:.3f}", f"{self.now:.3f}"
            if fields[9]:
                fields[9] = f"{float(fields[9]) + shift:.3f}"
            self.astdb.setdefault(f"callguard/calls/{bucket_of(self.now)}", {})[call.linkedid] = "|".join(fields)
        return frame if self.up else None

    async def request(self, action: dict[str, str]) -> list[Frame]:
        """The replies of a real AMI session (tests/fixtures/astdb/*.ami.txt), already framed."""
        name = action["Action"]
        if name == "CoreShowChannels":
            return [{"Response": "Success", "EventList": "start"}] + [
                {"Event": "CoreShowChannel", "Uniqueid": uid, "Linkedid": c.linkedid, "Context": ctx}
                for c in self.calls for uid, ctx in c.channels.items()
            ] + [{"Event": "CoreShowChannelsComplete", "EventList": "Complete"}]
        if name == "DBGetTree":
            family = action["Family"]
            return [{"Response": "Success", "EventList": "start"}] + [
                {"Event": "DBGetTreeResponse", "Key": f"/{family}/{k}", "Val": v}
                for k, v in self.astdb.get(family, {}).items()
            ] + [{"Event": "DBGetTreeComplete", "EventList": "Complete"}]
        if name == "DBGet":
            val = self.astdb.get(action["Family"], {}).get(action["Key"])
            if val is None:
                return [{"Response": "Error", "Message": "Database entry not found"}]
            return [{"Response": "Success", "EventList": "start"},
                    {"Event": "DBGetResponse", "Family": action["Family"], "Key": action["Key"], "Val": val},
                    {"Event": "DBGetComplete", "EventList": "Complete"}]
        raise AssertionError(name)


class Session:
    def __init__(self, pbx: Pbx) -> None:
        self.request = pbx.request


# ("emit", call, n): the next n events of a call (calls have 34–181 events, so a run of ~40 steps ends some
# of them mid-run, in every state of the link); the others take no arguments.
STEP = st.one_of(
    st.tuples(st.just("emit"), st.integers(0, 2), st.integers(1, 60)),
    st.tuples(st.sampled_from(["cut", "restore", "flush", "no_record", "late_look"]), st.just(0), st.just(0)),
)


async def step(pbx: Pbx, flow: CallFlow, op: str, i: int, n: int) -> None:
    if op == "emit" and i < len(pbx.calls):
        for _ in range(n):
            if (frame := pbx.emit(i)) is not None:
                flow.on_event(frame, pbx.now)
    elif op == "cut" and pbx.up:
        pbx.up = False
        flow.on_link_lost()
    elif op == "restore" and not pbx.up:
        pbx.up = True
        await flow.resync(Session(pbx))
    elif op == "flush":
        await flow.flush()
    elif op == "no_record" and pbx.up:
        # the look for a lost call's record ran before its record was there: written as lost
        saved, pbx.astdb = pbx.astdb, {}
        await flow.recheck_pending()
        pbx.astdb = saved
    elif op == "late_look" and pbx.up:
        await flow.recheck_stored_lost(Session(pbx).request)


async def finish(pbx: Pbx, flow: CallFlow) -> None:
    """Every call ends (its events seen only while the link is up), the link comes back, callguard resyncs,
    writes what is queued, and takes its later look at the calls it stored as lost."""
    for i, call in enumerate(pbx.calls):
        while not call.over:
            await step(pbx, flow, "emit", i, 1)
    pbx.up = True
    await flow.resync(Session(pbx))
    await flow.recheck_pending()
    await flow.flush()
    await flow.recheck_stored_lost(Session(pbx).request)
    await flow.flush()


async def leads_by_linkedid(store: Store) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for state in ("pending", "sending", "sent", "dead"):
        for item in await store.outbox.in_state(state):
            out.setdefault(item.linkedid, []).append(item.payload)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=3),
       steps=st.lists(STEP, max_size=40))
# The case behind ``Calls.record``'s one upgrade: the link cut mid-call, back while the call is still up, the
# call ends (lost: its events had a hole), the look for its record runs before the record is there → a
# ``lost`` row; the record read later must still give the lead.
@example(names=["s04_caller_abandon"], steps=[("emit", 0, 30), ("cut", 0, 0), ("restore", 0, 0), ("emit", 0, 60),
                                               ("emit", 0, 60), ("no_record", 0, 0), ("late_look", 0, 0)])
@example(names=["s02_clean_answered", "s03_queue_timeout"],
         steps=[("emit", 1, 50), ("emit", 0, 40), ("cut", 0, 0), ("emit", 1, 60), ("restore", 0, 0),
                ("emit", 0, 60), ("emit", 1, 80), ("no_record", 0, 0), ("emit", 0, 40), ("no_record", 0, 0)])
async def test_any_interleaving_of_events_and_records_gives_each_call_its_one_true_outcome(
    cfg: Config, names: list[str], steps: list[tuple[str, int, int]],
) -> None:
    pbx = Pbx(names)
    store = await Store.open(":memory:")
    flow = CallFlow(CallTracker(cfg), store, clock=lambda: pbx.now, mono=lambda: pbx.now)
    try:
        await flow.resync(Session(pbx))  # the start: linked, nothing to rebuild yet
        for op, i, n in steps:
            await step(pbx, flow, op, i, n)
        await finish(pbx, flow)
        leads = await leads_by_linkedid(store)
        for call in pbx.calls:
            outcome, reason = EXPECTED[call.name]
            row = await store.calls.get(call.linkedid)
            assert row is not None, (call.name, steps)
            assert (row.outcome, row.reason) == (outcome, reason), (call.name, row, steps)
            got = leads.pop(call.linkedid, [])
            if outcome == "missed":
                assert len(got) == 1 and got[0]["reason"] == reason, (call.name, got, steps)
            else:
                assert got == [], (call.name, got, steps)
        assert leads == {}
    finally:
        await store.close()
