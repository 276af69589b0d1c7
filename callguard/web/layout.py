"""The page shell shared by the dashboard, the lists and the login page: head, inline CSS, header, flash.

One stylesheet inline (no file to fetch, nothing to build); CSS grid and flex so the same page reads on a
laptop and a phone. ``esc`` is the one escape for everything from data; the helpers here format numbers
and durations the way the pages say them.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from aiohttp import web

# No script runs on these pages; styles and images are inline; forms post only to us; never framed.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;
 color:#202124;background:#f4f6f8}
header{background:#1f3a5f;color:#fff;padding:.7rem 1.2rem;display:flex;flex-wrap:wrap;gap:.6rem 1.4rem;
 align-items:center}
header .brand{font-weight:700;font-size:1.15rem;margin-right:auto}
header a{color:#fff;text-decoration:none;opacity:.85}
header a.on,header a:hover{opacity:1;text-decoration:underline}
header form{margin:0}
header button{background:transparent;color:#fff;border:1px solid #ffffff88;border-radius:6px;padding:.25rem .7rem;
 font:inherit;cursor:pointer}
main{max-width:1180px;margin:0 auto;padding:1rem 1.2rem 3rem}
h1{font-size:1.5rem;margin:.6rem 0 .2rem}
h2{font-size:1.1rem;margin:0 0 .7rem}
.muted{color:#5f6368}
.small{font-size:.875rem}
.tabs{display:flex;gap:.4rem;flex-wrap:wrap;margin:.8rem 0 1rem}
.tabs a{padding:.35rem .9rem;border-radius:999px;background:#fff;border:1px solid #d0d5dc;color:#1f3a5f;
 text-decoration:none}
.tabs a.on{background:#1f3a5f;color:#fff;border-color:#1f3a5f}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,160px),1fr));gap:.8rem;margin-bottom:1rem}
.card{background:#fff;border-radius:10px;padding:.9rem 1rem;box-shadow:0 1px 2px #0000001a}
.kpi .label{color:#5f6368;font-size:.9rem}
.kpi .value{font-size:2rem;font-weight:700;line-height:1.2}
.kpi .sub{color:#5f6368;font-size:.85rem}
.kpi.spam .value{color:#c62828}.kpi.ok .value{color:#2e7d32}.kpi.warn .value{color:#ef6c00}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:.8rem;margin-bottom:.8rem}
.grid>*{min-width:0}
.wide{grid-column:1/-1}
.hbars{display:flex;flex-direction:column;gap:.35rem}
.hbar{display:grid;grid-template-columns:minmax(7rem,38%) 1fr 2.2rem;gap:.6rem;align-items:center}
.hbar svg{width:100%;height:.9rem;display:block}
.hbar .v{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:grid;grid-template-columns:2.2rem 1fr;grid-template-rows:200px auto;column-gap:.4rem}
.cols .y{display:flex;flex-direction:column;justify-content:space-between;text-align:right;font-size:.8rem;
 color:#5f6368}
.cols svg{width:100%;height:200px;display:block;border-bottom:1px solid #d0d5dc}
.cols .x{grid-column:2;display:grid;font-size:.8rem;color:#5f6368;text-align:center;padding-top:.2rem}
.cols .x span{white-space:nowrap;overflow:visible}
.legend{display:flex;gap:1rem;flex-wrap:wrap;font-size:.85rem;color:#5f6368;margin-top:.4rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-1px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid #eceff1;vertical-align:middle}
td.note{overflow-wrap:anywhere}
td.tel{white-space:nowrap}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:#5f6368;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.health{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,220px),1fr));gap:.6rem}
.health div{display:flex;gap:.6rem;align-items:flex-start}
.dot{flex:none;width:.8rem;height:.8rem;border-radius:50%;margin-top:.35rem;background:#9e9e9e}
.dot.ok{background:#2e7d32}.dot.warn{background:#ef6c00}.dot.bad{background:#c62828}
.flash{padding:.6rem .9rem;border-radius:8px;margin:.6rem 0}
.flash.ok{background:#e6f4ea;color:#1e4620}.flash.error{background:#fce8e6;color:#8c1d18}
.flash.info{background:#e8f0fe;color:#174ea6}
form.inline{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin:0}
label{display:flex;flex-direction:column;font-size:.85rem;color:#5f6368;gap:.2rem}
label.check{flex-direction:row;align-items:center;gap:.35rem}
input[type=text],input[type=password],input[type=search],select{font:inherit;padding:.4rem .55rem;
 border:1px solid #c4c9d0;border-radius:6px;min-width:0;background:#fff;color:#202124}
button.primary,button.danger,a.button{font:inherit;padding:.42rem .9rem;border-radius:6px;border:0;cursor:pointer;
 background:#1f3a5f;color:#fff;text-decoration:none;display:inline-block}
button.danger{background:#fff;color:#c62828;border:1px solid #c62828;padding:.2rem .6rem}
.tag{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;font-weight:600}
.tag.block{background:#fce8e6;color:#a50e0e}.tag.allow{background:#e6f4ea;color:#137333}
.login{max-width:380px;margin:8vh auto;padding:1.6rem}
.login form{display:flex;flex-direction:column;gap:.8rem}
@media (max-width:560px){main{padding:.6rem .6rem 2rem}.kpi .value{font-size:1.6rem}
 .kpis{grid-template-columns:repeat(2,minmax(0,1fr))}.grid{grid-template-columns:minmax(0,1fr)}
 .hide-narrow{display:none}th,td{padding:.4rem .3rem}.card{padding:.8rem .7rem}}
"""


def esc(value: object) -> str:
    """The one escape for anything from data (DIDs, numbers, notes, CRM names, errors): text and attributes."""
    return escape(str(value), quote=True)


def pct(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 10 min``, ``3 d 4 h``; ``–`` for none."""
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def hidden_csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def flashes(items: Iterable[tuple[str, str]]) -> str:
    return "".join(f'<div class="flash {esc(kind)}" role="status">{esc(text)}</div>' for kind, text in items)


def page(title: str, body: str, *, user: str | None = None, csrf: str = "", active: str = "") -> str:
    nav = ""
    if user is not None:
        links = "".join(
            f'<a href="{href}"{" class=on" if key == active else ""}>{label}</a>'
            for key, href, label in (("dashboard", "/", "Dashboard"), ("lists", "/lists", "Allow / block lists"))
        )
        nav = (f'{links}<span class="small">{esc(user)}</span>'
               f'<form method="post" action="/logout">{hidden_csrf(csrf)}<button type="submit">Log out</button></form>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · callguard</title><style>{CSS}</style></head><body>"
        f'<header><span class="brand">callguard</span>{nav}</header><main>{body}</main></body></html>'
    )


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def see_other(location: str) -> web.Response:
    """303 after a POST (post/redirect/get) and to the login page."""
    return web.Response(status=303, headers={**HEADERS, "Location": location})
