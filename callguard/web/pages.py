"""The browser pages: ``/`` (dashboard), ``/lists`` (allow/block lists), ``/login``, ``/logout``.

``setup_pages(app, deps)`` adds them to an aiohttp application and returns the resources it added. The
pages carry their own login (callguard.web.auth: a session cookie, CSRF on every POST), so whoever mounts
them beside the bearer-token API exempts these resources from the bearer check, as it does for the CRM
webhooks: ``exempt |= setup_pages(app, deps)``. Without a session every page answers with the login page
(a redirect to it for GET, 403 for POST); nothing else is shown.

Thin handlers (STYLE.md rule 11): check the session, parse, call the store or the report, render.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from callguard.store.stats import callback_sla
from callguard.web import dashboard
from callguard.web.auth import LOGIN_COOKIE, SESSION_COOKIE, Authenticator, FailureLimiter, Session, same
from callguard.web.auth import new_token as _new_token
from callguard.web.deps import PagesDeps
from callguard.web.layout import esc, flashes, hidden_csrf, html, page, see_other

log = structlog.get_logger("callguard.web.pages")

Guarded = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def local_path(target: str | None) -> str:
    """Where to go after login: a path on this server only (never ``//host`` or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def set_cookie(request: web.Request, resp: web.StreamResponse, name: str, value: str) -> None:
    resp.set_cookie(name, value, path="/", httponly=True, samesite="Strict", secure=request.secure)


class Pages:
    def __init__(self, deps: PagesDeps) -> None:
        self.deps = deps
        self.cfg = deps.cfg
        self.sessions = deps.sessions
        self.auth = Authenticator(deps.cfg.web.token, deps.cfg.web.users)
        self.limiter = FailureLimiter()
        self.tz = ZoneInfo(deps.cfg.hours.timezone)

    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def guard(self, handler: Guarded) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A session for every request, and its CSRF token on every POST (read from the form)."""

        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self.session_of(request)
            if request.method not in ("GET", "HEAD"):
                if session is None:
                    return html(_gone("Your session has ended. Log in again."), 403)
                try:
                    form = await request.post()
                except web.HTTPRequestEntityTooLarge:
                    session.say("error", f"That file is too large: at most {self.cfg.web.max_body_bytes // 1024} KB "
                                "(web.max_body_bytes).")
                    return see_other("/lists" if request.path.startswith("/lists") else "/")
                if not same(str(form.get("csrf", "")), session.csrf):
                    log.warning("web_csrf_rejected", path=request.path, peer=request.remote, user=session.user)
                    return html(_gone("This form has expired. Go back, reload the page and try again."), 403)
            elif session is None:
                return see_other("/login?next=" + quote(request.path_qs, safe="/"))
            return await handler(request, session)

        return guarded

    # --- login ------------------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.session_of(request) is not None:
            return see_other(local_path(request.query.get("next")))
        token = request.cookies.get(LOGIN_COOKIE) or _new_token()
        resp = html(self._login_page(token, request.query.get("next", "/")))
        set_cookie(request, resp, LOGIN_COOKIE, token)
        return resp

    def _login_page(self, csrf: str, target: str, error: str = "") -> str:
        if not self.auth.configured:
            inner = ('<p>No login is configured yet. Set <code>web.token</code> (or <code>CALLGUARD_WEB_TOKEN</code>), '
                     'or add users with <code>callguard passwd NAME</code> to <code>[[web.users]]</code>, '
                     "then restart callguard.</p>")
        else:
            hint = "Name and password, or leave the name empty and give the web token."
            inner = (f'{flashes([("error", error)] if error else [])}'
                     f'<form method="post" action="/login">{hidden_csrf(csrf)}'
                     f'<input type="hidden" name="next" value="{esc(local_path(target))}">'
                     '<label>Name<input type="text" name="name" autocomplete="username" autocapitalize="none"></label>'
                     '<label>Password<input type="password" name="password" autocomplete="current-password" '
                     'required></label><button class="primary" type="submit">Log in</button>'
                     f'<p class="muted small">{hint}</p></form>')
        return page("Log in", f'<section class="card login"><h1>Log in</h1>{inner}</section>')

    async def login(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return html(_gone("That request was too large."), 413)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        target = str(form.get("next", "/"))
        if not cookie or not same(str(form.get("csrf", "")), cookie):
            log.warning("web_csrf_rejected", path=request.path, peer=peer, user="")
            return see_other("/login?next=" + quote(local_path(target), safe="/"))
        if self.limiter.blocked(peer):
            log.warning("web_login_throttled", peer=peer)
            return html(self._login_page(cookie, target, "Too many failed attempts. Wait a few minutes."), 429)
        name = str(form.get("name", ""))[:64]
        user = await self.auth.check(name, str(form.get("password", "")))
        if user is None:
            self.limiter.failed(peer)
            log.warning("web_login_failed", name=name, peer=peer)
            return html(self._login_page(cookie, target, "Wrong name or password."), 401)
        self.limiter.succeeded(peer)
        session = self.sessions.create(user)
        log.info("web_login", user=user, peer=peer, sessions=len(self.sessions))
        resp = see_other(local_path(target))
        set_cookie(request, resp, SESSION_COOKIE, session.id)
        resp.del_cookie(LOGIN_COOKIE, path="/")
        return resp

    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.drop(session.id)
        log.info("web_logout", user=session.user)
        resp = see_other("/login")
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    # --- dashboard --------------------------------------------------------------------------------

    async def dashboard(self, request: web.Request, session: Session) -> web.StreamResponse:
        period = request.query.get("period", dashboard.DEFAULT_PERIOD)
        if period not in dashboard.PERIODS:
            session.say("info", f"There is no period {period[:20]!r}; showing the last 7 days.")
            period = dashboard.DEFAULT_PERIOD
        fig = await dashboard.gather(self.deps.store, period, self.deps.clock(), self.tz,
                                     callback_sla=callback_sla(self.deps.cfg), readiness=self.deps.readiness)
        return html(dashboard.render(fig, user=session.user, csrf=session.csrf, flash=session.take_flash()))


def _gone(text: str) -> str:
    return page("callguard", f'<section class="card login"><p>{esc(text)}</p><p><a href="/login">Log in</a> · '
                '<a href="/">Dashboard</a></p></section>')


PAGES_KEY = web.AppKey("callguard_pages", Pages)


def setup_pages(app: web.Application, deps: PagesDeps) -> set[AbstractResource]:
    """Register the pages on ``app``; the resources added (exempt them from a bearer-token check)."""
    from callguard.web.lists import ListsPage

    pages = Pages(deps)
    lists = ListsPage(deps)
    app[PAGES_KEY] = pages
    before = set(app.router.resources())
    g = pages.guard
    app.router.add_get("/", g(pages.dashboard))
    app.router.add_get("/login", pages.login_form)
    app.router.add_post("/login", pages.login)
    app.router.add_post("/logout", g(pages.logout))
    app.router.add_get("/lists", g(lists.show))
    app.router.add_post("/lists/add", g(lists.add))
    app.router.add_post("/lists/remove", g(lists.remove))
    app.router.add_post("/lists/import", g(lists.upload))
    app.router.add_get("/lists/export.csv", g(lists.export))
    return set(app.router.resources()) - before
