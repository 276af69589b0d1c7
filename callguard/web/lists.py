"""``/lists``: search, add, remove, export and import the local allow/block lists from the browser.

The same rules as the CLI (callguard.listfile): numbers normalised to E.164, internal extensions refused
unless the box is ticked, CSV in ``;`` or ``,``, UTF-8 or Windows-1251. Every change is a POST with the
session's CSRF token (checked by ``Pages.guard``), answered by a redirect back to the list with a message
(post/redirect/get). After an import the message gives the totals read back from the store.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from callguard.listfile import ACTIONS, CSV_HEADER, MAX_NOTE, ListFileError, check_phone, csv_line, parse_bytes
from callguard.phone import normalise
from callguard.store.overrides import Override
from callguard.web.auth import Session
from callguard.web.deps import PagesDeps
from callguard.web.layout import HEADERS, esc, flashes, hidden_csrf, html, page, see_other

log = structlog.get_logger("callguard.web.lists")

PAGE_ROWS = 200
FILTERS = {"all": None, "block": "block", "allow": "allow"}
SHOWN_ERRORS = 5


def _back(q: str = "") -> web.Response:
    return see_other("/lists" + (f"?{urlencode({'q': q})}" if q else ""))


class ListsPage:
    def __init__(self, deps: PagesDeps) -> None:
        self.deps = deps
        self.overrides = deps.store.overrides
        self.phone_cfg = deps.cfg.phone
        self.tz = ZoneInfo(deps.cfg.hours.timezone)

    async def show(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query.get("q", "")[:100]
        which = request.query.get("list", "all")
        if which not in FILTERS:
            session.say("info", "Showing both lists.")
            which = "all"
        rows, matching = await self.overrides.search(q, FILTERS[which], limit=PAGE_ROWS)
        totals = await self.overrides.count()
        return html(self._render(session, q, which, rows, matching, totals))

    def _render(self, session: Session, q: str, which: str, rows: list[Override], matching: int,
                totals: dict[str, int]) -> str:
        csrf = hidden_csrf(session.csrf)
        options = "".join(f'<option value="{k}"{" selected" if k == which else ""}>{label}</option>' for k, label in
                          (("all", "both lists"), ("block", "blocked"), ("allow", "allowed")))
        search = (f'<form class="inline" method="get" action="/lists"><label>Search<input type="search" name="q" '
                  f'value="{esc(q)}" placeholder="number or note"></label><label>List<select name="list">{options}'
                  '</select></label><button class="primary" type="submit">Search</button></form>')
        add = (f'<form class="inline" method="post" action="/lists/add">{csrf}'
               '<label>Number<input type="text" name="phone" required inputmode="tel" placeholder="+7 912 345-67-89">'
               '</label><label>List<select name="action"><option value="block">blocked (spam)</option>'
               '<option value="allow">allowed</option></select></label>'
               f'<label>Note<input type="text" name="note" maxlength="{MAX_NOTE}"></label>'
               '<label class="check"><input type="checkbox" name="allow_internal" value="1">internal number</label>'
               '<button class="primary" type="submit" data-action="add">Add</button></form>')
        body_rows = "".join(self._row(r, csrf) for r in rows)
        shown = f"{len(rows)} of {matching}" if matching > len(rows) else str(matching)
        what = f" matching “{esc(q)}” · <a href=\"/lists\">show all</a>" if q else ""
        table = (f'<p class="muted small"><span data-figure="matching">{shown}</span> shown{what}</p>'
                 '<div class="scroll"><table>'
                 '<tr><th>Number</th><th>List</th><th>Note</th><th class="hide-narrow">Added</th><th></th></tr>'
                 f"{body_rows}</table></div>") if rows else '<p class="muted">No numbers match.</p>'
        files = (f'<form class="inline" method="post" action="/lists/import" enctype="multipart/form-data">{csrf}'
                 '<label>CSV file (phone;action;note)<input type="file" name="file" accept=".csv,text/csv" required>'
                 '</label><label class="check"><input type="checkbox" name="allow_internal" value="1">'
                 'internal numbers too</label><button class="primary" type="submit">Import</button></form>'
                 '<p class="small">Download: <a href="/lists/export.csv">both lists</a> · '
                 '<a href="/lists/export.csv?list=block">blocked</a> · <a href="/lists/export.csv?list=allow">allowed'
                 "</a></p>")
        body = (f"{flashes(session.take_flash())}<h1>Allow / block lists</h1>"
                f'<p class="muted" data-figure="totals"><b data-figure="blocked">{totals.get("block", 0)}</b> blocked'
                f' and <b data-figure="allowed">{totals.get("allow", 0)}</b> allowed numbers. Local lists win over '
                "the CRM's spam flag.</p>"
                f'<div class="grid"><section class="card"><h2>Find</h2>{search}</section>'
                f'<section class="card"><h2>Add a number</h2>{add}</section>'
                f'<section class="card wide">{table}</section>'
                f'<section class="card wide"><h2>Import and export</h2>{files}</section></div>')
        return page("Lists", body, user=session.user, csrf=session.csrf, active="lists")

    def _row(self, r: Override, csrf: str) -> str:
        phone, action, note = r.phone, r.action, r.note
        added = datetime.fromtimestamp(r.created_at, self.tz).strftime("%Y-%m-%d %H:%M")
        label = "blocked" if action == "block" else "allowed"
        return (f'<tr data-phone="{esc(phone)}"><td class="tel">{esc(phone)}</td><td><span class="tag {esc(action)}">'
                f'{label}</span></td><td class="note">{esc(note)}</td>'
                f'<td class="hide-narrow muted small">{esc(added)}</td><td>'
                f'<form method="post" action="/lists/remove">{csrf}'
                f'<input type="hidden" name="phone" value="{esc(phone)}">'
                '<button class="danger" type="submit" data-action="remove">Remove</button></form></td></tr>')

    async def add(self, request: web.Request, session: Session) -> web.StreamResponse:
        form = await request.post()
        raw, action = str(form.get("phone", "")), str(form.get("action", "")).strip().lower()
        note = str(form.get("note", "")).strip()[:MAX_NOTE]
        if action not in ACTIONS:
            session.say("error", "Choose blocked or allowed.")
            return _back()
        key, error = check_phone(raw, self.phone_cfg.default_region, self.phone_cfg.max_extension_digits,
                                 allow_internal=bool(form.get("allow_internal")))
        if error:
            session.say("error", f"Not added: {error.replace('allow internal numbers', 'tick internal number')}.")
            return _back()
        await self.overrides.upsert_many([(key, ACTIONS[action], note)])
        log.info("web_lists_changed", user=session.user, change="add", phone=key, action=ACTIONS[action])
        session.say("ok", f"{key} is now {'blocked' if ACTIONS[action] == 'block' else 'allowed'}.")
        return _back(key)

    async def remove(self, request: web.Request, session: Session) -> web.StreamResponse:
        form = await request.post()
        raw = str(form.get("phone", "")).strip()
        key = normalise(raw, self.phone_cfg.default_region, self.phone_cfg.max_extension_digits).key or raw
        if key and await self.overrides.delete(key):
            log.info("web_lists_changed", user=session.user, change="remove", phone=key)
            session.say("ok", f"{key} removed from the lists.")
        else:
            session.say("error", f"{key or 'That number'} is not in the lists.")
        return _back()

    async def upload(self, request: web.Request, session: Session) -> web.StreamResponse:
        form = await request.post()
        field = form.get("file")
        if not isinstance(field, web.FileField):
            session.say("error", "Choose a CSV file to import.")
            return _back()
        name = field.filename or "the file"
        try:
            result = parse_bytes(field.file.read(), self.phone_cfg.default_region,
                                 self.phone_cfg.max_extension_digits, bool(form.get("allow_internal")))
        except ListFileError as e:
            session.say("error", f"{name} was not imported: {e}.")
            return _back()
        if result.rows:
            await self.overrides.upsert_many(result.rows)
        totals = await self.overrides.count()  # what the store holds now, whatever happened above
        log.info("web_lists_changed", user=session.user, change="import", rows=len(result.rows),
                 skipped=result.skipped, encoding=result.encoding)
        sep = {";": "semicolon", ",": "comma", "\t": "tab"}[result.delimiter]
        kind = "ok" if result.rows else "error"
        session.say(kind, f"{name} ({result.encoding}, {sep}-separated): imported {len(result.rows)} rows, skipped "
                    f"{result.skipped}. The lists now hold {totals.get('block', 0)} blocked and "
                    f"{totals.get('allow', 0)} allowed numbers.")
        if not result.rows and not result.errors:
            session.say("error", f"{name} holds no rows: expected phone;action;note on each line.")
        if result.errors:
            shown = "; ".join(f"line {line}: {err}" for line, err in result.errors[:SHOWN_ERRORS])
            more = f" (and {result.skipped - SHOWN_ERRORS} more)" if result.skipped > SHOWN_ERRORS else ""
            session.say("error", f"Skipped {shown}{more}.")
        return _back()

    async def export(self, request: web.Request, session: Session) -> web.StreamResponse:
        which = request.query.get("list", "all")
        action = FILTERS.get(which)
        stamp = datetime.fromtimestamp(self.deps.clock(), self.tz).strftime("%Y%m%d")
        filename = f"callguard-{which if which in FILTERS else 'all'}-{stamp}.csv"
        resp = web.StreamResponse(headers={
            **HEADERS, "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        })
        await resp.prepare(request)
        await resp.write(("\ufeff" + CSV_HEADER).encode())  # a BOM: Excel then reads the UTF-8 as UTF-8
        n = 0
        async for r in self.overrides.iterate(action):  # a batch at a time, never the whole table
            await resp.write(csv_line(r.phone, r.action, r.note).encode("utf-8"))
            n += 1
        await resp.write_eof()
        log.info("web_lists_exported", user=session.user, rows=n)
        return resp
