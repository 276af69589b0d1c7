"""Live: the shipped AMI user (dialplan/manager_callguard.conf, as shipped but for its secret) may do all
callguard asks of it, and its event filter lets through what callguard reads.

The lab's own user (read/write all) places the calls; callguard's minimal user only watches and asks:
Ping, CoreShowChannels (re-attach), DBGet/DBGetTree (the call record), QueueStatus (who is free).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.live.lab import DIALPLAN, Ami, Lab, inbound_channel_of

pytestmark = pytest.mark.live

MINIMAL_SECRET = "minimal-secret"
MINIMAL_USER = "shipped"


def shipped_user() -> str:
    text = (DIALPLAN / "manager_callguard.conf").read_text()
    text = re.sub(r"(?m)^secret = .*$", f"secret = {MINIMAL_SECRET}", text)
    return "\n" + text.replace("[callguard]", f"[{MINIMAL_USER}]")  # the harness's own user is [callguard]


async def test_the_shipped_user_can_do_what_callguard_asks(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(manager_extra=shipped_user())
    admin, watcher = Ami(), Ami()
    await admin.connect(lab.ami_port)
    await watcher.connect(lab.ami_port, MINIMAL_USER, MINIMAL_SECRET)
    try:
        await admin.originate("5551000", "+79165550123", wait_s=6, tag="rights")
        chan = (await admin.wait_for(inbound_channel_of(admin, "rights")))["Channel"]
        await admin.wait_for(lambda f: f.get("Event") == "QueueCallerJoin" and f.get("Channel") == chan)
        for action in ("Ping", "CoreShowChannels", "QueueStatus", "DBGetTree", "DBGet"):
            fields = {"Action": action, "ActionID": action}
            if action.startswith("DB"):
                fields |= {"Family": "callguard/calls"} | ({"Key": "nothing"} if action == "DBGet" else {})
            await watcher.send(fields)
            reply = await watcher.wait_for(lambda f, a=action: f.get("ActionID") == a and "Response" in f)
            assert "ermission denied" not in reply.get("Message", ""), (action, reply)
            # DBGet of a missing key and DBGetTree of an empty family answer Error "not found"; anything
            # but a permission refusal means the class is granted
        listed = [f for f in watcher.frames
                  if f.get("ActionID") == "CoreShowChannels" and f.get("Event") == "CoreShowChannel"]
        assert chan in {f.get("Channel") for f in listed}  # the list events of a reply are not filtered away
        members = [f for f in watcher.frames if f.get("ActionID") == "QueueStatus" and f.get("Event") == "QueueMember"]
        assert members, "QueueStatus listed no member to the shipped user"
        # the events callguard follows reach it through the filter
        seen = {f.get("Event") for f in watcher.frames}
        assert {"Newchannel", "QueueCallerJoin"} <= seen, seen
        await admin.send({"Action": "QueuePause", "Interface": "Local/101@agents", "Paused": "true",
                          "ActionID": "pause"})
        await watcher.wait_for(lambda f: f.get("Event") == "QueueMemberPause", within=10)
    finally:
        await admin.close()
        await watcher.close()
