"""The far end of each lead sink for the tests that run ``callguard run`` as a process (the SIGKILL test,
the live layer): the log sink's leads file, a webhook receiver keyed by ``Idempotency-Key``, the strict
amoCRM and Bitrix24 fakes; and each one's count of deliveries per Linkedid, by the sink's own key."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from aiohttp import web

from tests.fakes.amocrm import FakeAmo
from tests.fakes.bitrix24 import FakeBitrix

CRM_DELAY = 0.05  # the CRM fakes answer a create this long after making it
SINKS = ("log", "webhook", "amocrm", "bitrix24")


def outbox_toml(sink: str, base: str, leads_file: Path) -> str:
    """``[outbox]`` (and ``[crm]`` for a CRM sink) pointing callguard at the far end at ``base``."""
    kind = sink if sink in ("log", "webhook") else "crm"
    return (f'[outbox]\nsink = "{kind}"\npoll_interval = "50ms"\nbackoff_base = "100ms"\n'
            f'log_file = "{leads_file}"\n[outbox.webhook]\nurl = "{base}/lead"\n'
            + (crm_toml(sink, base) if kind == "crm" else ""))


def crm_toml(sink: str, base: str) -> str:
    common = '[crm]\nretry_base = "10ms"\ntimeout = "2s"\nmax_retries = 6\n'
    if sink == "amocrm":
        return (common + f'kind = "amocrm"\n[crm.amocrm]\nbase_url = "{base}"\ntoken = "amo-token"\n'
                'spam_field = "Спам"\nrate_rps = 50.0\nwebhook_secret = "hook-secret"\naccount_id = 28805383\n')
    return (common + f'kind = "bitrix24"\n[crm.bitrix24]\nwebhook_url = "{base}/rest/1/b24-secret/"\n'
            'spam_field = "UF_CRM_SPAM"\nrate_rps = 100.0\nrate_burst = 20\napplication_token = "app-token"\n'
            'register_call = true\n')



class Sink:
    """The far end of one sink kind, and its count of deliveries per Linkedid (by the sink's own key)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.leads_file = tmp / "leads.jsonl"
        self.keys: Counter[str] = Counter()  # webhook: POSTs per Idempotency-Key
        self.bodies: dict[str, dict[str, object]] = {}  # webhook: the last document per key
        self.amo = FakeAmo(rps=50) if kind == "amocrm" else None
        self.b24 = FakeBitrix(rate=20.0, burst=50) if kind == "bitrix24" else None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        if self.amo is not None:
            self.amo.slow_reply("POST /api/v4/leads", CRM_DELAY)  # unsorted/sip and notes
            return await self.amo.start()
        if self.b24 is not None:
            self.b24.slow_reply("crm.lead.add", CRM_DELAY)
            self.b24.slow_reply("crm.timeline.comment.add", CRM_DELAY)
            return await self.b24.start()
        app = web.Application()
        app.router.add_post("/lead", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def _hook(self, request: web.Request) -> web.Response:
        self.keys[request.headers["Idempotency-Key"]] += 1
        self.bodies[request.headers["Idempotency-Key"]] = await request.json()
        await asyncio.sleep(0.02)  # the receiver has it; the sender learns a little later
        return web.json_response({"id": f"hook-{request.headers['Idempotency-Key']}"})

    async def stop(self) -> None:
        for fake in (self.amo, self.b24):
            if fake is not None:
                await fake.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> Counter[str]:
        """Linkedid → how many leads/notes/lines/distinct keys the sink holds for it."""
        seen: Counter[str] = Counter()
        if self.kind == "log" and self.leads_file.exists():
            for line in self.leads_file.read_text(errors="replace").splitlines():
                seen[json.loads(line)["linkedid"]] += 1  # every line must be valid JSON: no torn lines
        elif self.kind == "webhook":
            seen.update(self.keys.keys())  # distinct keys; raw repeats are in self.keys
        elif self.amo is not None:
            seen.update(u["metadata"].get("uniq") for u in self.amo.unsorted)
            seen.update(lid for lead in self.amo.leads.values() for t in lead["tags"]
                        if (lid := t.removeprefix("callguard:")) != t)
            seen.update(n["params"].get("uniq") for n in self.amo.notes)
        elif self.b24 is not None:
            seen.update(lead.get("ORIGIN_ID") for lead in self.b24.leads.values())
            seen.update(c["COMMENT"].rsplit("[callguard:", 1)[1].rstrip("]") for c in self.b24.comments
                        if "[callguard:" in c["COMMENT"])
        seen.pop(None, None)  # type: ignore[call-overload]
        return seen

    def words_of(self, linkedid: str) -> str:
        """What the lead for ``linkedid`` says at the sink (title, comments, document), as one text."""
        if self.kind == "log" and self.leads_file.exists():
            return "\n".join(line for line in self.leads_file.read_text().splitlines() if linkedid in line)
        if self.kind == "webhook":
            return json.dumps(self.bodies.get(linkedid, {}), ensure_ascii=False)
        if self.amo is not None:
            ids = {u["lead_id"] for u in self.amo.unsorted if u["metadata"].get("uniq") == linkedid}
            ids |= {lead["id"] for lead in self.amo.leads.values() if f"callguard:{linkedid}" in lead["tags"]}
            return "\n".join(self.amo.leads[i]["name"] for i in ids)
        if self.b24 is not None:
            return "\n".join(f"{lead.get('TITLE', '')}\n{lead.get('COMMENTS', '')}"
                              for lead in self.b24.leads.values() if lead.get("ORIGIN_ID") == linkedid)
        return ""

    def leads_and_notes(self) -> tuple[int, int]:
        if self.amo is not None:
            return len(self.amo.unsorted), len(self.amo.notes)
        if self.b24 is not None:
            return len(self.b24.leads), len(self.b24.comments)
        return 0, 0

    def errors(self) -> list[str]:
        return [*(self.amo.errors if self.amo else []), *(self.b24.errors if self.b24 else [])]


