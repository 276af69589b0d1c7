"""A real headless Chromium through the pages: login, the dashboard over a seeded store, a number added to
and removed from the lists on /lists. The figures on the page must equal ``callguard stats --json`` run as
a separate process on the same store. Screenshots land in tests/artifacts/ (gitignored); their paths are
printed.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and pip ``selenium`` (the
test extra); without them the test is skipped with the reason, never passed. The machine's network is
closed: Chromium runs with everything that phones home switched off and a fresh profile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from callguard import passwords
from callguard.config import Config, load_config
from callguard.store import Store
from callguard.web.layout import duration, pct
from callguard.web.pages import PagesDeps, setup_pages
from tests.support.callback_seed import seed_callbacks
from tests.support.seed import DID_A, DID_B, SPAMMER, seed

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
PASSWORD = "correct horse battery"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")

webdriver = pytest.importorskip("selenium.webdriver", reason="pip selenium (the test extra) is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason=f"no headless browser: chromium={CHROMIUM} chromedriver={DRIVER} "
           "(apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def site_cfg(tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(
        '[store]\npath = "cg.sqlite3"\n[hours]\ntimezone = "Europe/Moscow"\n[web]\ntoken = "the-web-token-1"\n'
        f'[[web.users]]\nname = "olga"\npassword_hash = "{passwords.hash_password(PASSWORD)}"\n'
        '[callback]\nenabled = true\n[callback.head]\nname = "Olga"\ncrm_user_id = 7\n'
        '[[callback.managers]]\nname = "Ivan"\ncrm_user_id = 101\ndevices = ["PJSIP/101"]\n'
        '[[callback.managers]]\nname = "Petr"\ncrm_user_id = 102\ndevices = ["PJSIP/102"]\n'
    )
    return load_config(path, env={})


@pytest.fixture
async def site(site_cfg: Config) -> AsyncIterator[tuple[str, Store]]:
    store = await Store.open(site_cfg.store.path)
    now = time.time()
    await seed(store, now)
    await seed_callbacks(store, now)  # the week's call-backs, as the loop writes them

    async def readiness() -> dict[str, Any]:
        return {"ready": True, "parts": {"store": {"state": "ok"}, "agi": {"state": "ok"},
                                         "ami": {"state": "ok", "last_error": "", "reconnects": 0},
                                         "sync": {"state": "ok", "age_s": 42.0, "last_error": ""}}}

    app = web.Application()
    setup_pages(app, PagesDeps(site_cfg, store, readiness=readiness))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        await runner.cleanup()
        await store.close()


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def cli_stats(cfg: Config, since: str) -> dict[str, Any]:
    """``callguard stats --json`` as an admin runs it: another process, the same store."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callguard", "--config", str(cfg.source), "stats", "--since", since, "--by", "did",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert f"store {cfg.store.path}" in err.decode()  # it says which store it read
    return dict(json.loads(out))


class Page:
    """The driver's blocking calls on a thread, so the event loop keeps serving the pages meanwhile."""

    def __init__(self, driver: Any) -> None:
        self.d = driver

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def wait_for(self, css: str, within: float = 20.0) -> Any:
        def find() -> Any:
            return WebDriverWait(self.d, within).until(lambda d: d.find_elements(By.CSS_SELECTOR, css) or False)[0]
        return await self.run(find)

    async def text(self, css: str) -> str:
        el = await self.wait_for(css)
        return str(await self.run(lambda: el.text)).strip()

    async def shot(self, name: str, width: int) -> Path:
        """The whole page at ``width`` CSS pixels, not only the window (Chrome DevTools' capture)."""
        def take() -> Path:
            self.d.set_window_size(width, 900)
            size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = self.d.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            })
            ARTIFACTS.mkdir(exist_ok=True)
            path = ARTIFACTS / name
            path.write_bytes(base64.b64decode(shot["data"]))
            return path
        return Path(await self.run(take))


def figure(key: str) -> str:
    return f'[data-figure="{key}"] .value'


async def test_dashboard_and_lists_in_a_real_browser(
    site: tuple[str, Store], site_cfg: Config, browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base, store = site
    page = Page(browser)
    # No session: the dashboard is the login page, and the login works with a configured user.
    await page.run(browser.get, base + "/")
    await page.wait_for('input[name="password"]')
    assert "/login" in browser.current_url and "Calls screened" not in browser.page_source
    await page.run(lambda: browser.find_element(By.NAME, "name").send_keys("olga"))
    await page.run(lambda: browser.find_element(By.NAME, "password").send_keys(PASSWORD))
    await page.run(lambda: browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click())
    await page.wait_for(figure("screened"))

    stats = await cli_stats(site_cfg, "7d")
    t = stats["total"]
    shown = {key: await page.text(figure(key)) for key in
             ("screened", "spam_blocked", "answered_share", "missed", "median_abandon_wait_s")}
    assert shown == {
        "screened": str(t["screened"]), "spam_blocked": str(t["spam_blocked"]), "missed": str(t["missed"]),
        "answered_share": pct(t["answered_share"]), "median_abandon_wait_s": duration(t["median_abandon_wait_s"]),
    }
    assert await page.text('[data-figure="spam_share"]') == pct(t["spam_share"])
    assert await page.text('[data-figure="answered"]') == str(t["answered"])
    for code, n in t["missed_by_reason"].items():
        assert await page.text(f'[data-figure="reasons"] [data-key="{code}"] .v') == str(n)
    for row in stats["rows"]:
        assert await page.text(f'tr[data-did="{row["key"]}"] [data-col="answered_share"]') == pct(row["answered_share"])
    blocked = [b["caller"] for b in stats["top_blocked"]]
    assert blocked[0] == SPAMMER
    assert [await page.text(f'tr[data-caller="{c}"] td') for c in blocked] == blocked
    assert {DID_A, DID_B} <= {r["key"] for r in stats["rows"]}
    # The call-back panel: the same figures as `callguard stats --json`'s "callbacks", per manager too.
    cb = stats["callbacks"]["total"]
    assert await page.text(figure("callback_median_s")) == duration(cb["median_s"])
    assert await page.text(figure("callback_p90_s")) == duration(cb["p90_s"])
    assert await page.text(figure("callback_within_sla")) == pct(cb["within_sla_share"])
    assert await page.text(figure("callback_never")) == str(cb["never_called_back"])
    assert await page.text('[data-figure="callback_escalated"]') == str(cb["escalated"])
    for g in stats["callbacks"]["by_manager"]:
        row = f'tr[data-callbacks-manager="{g["key"]}"] [data-col="within_sla_share"]'
        assert await page.text(row) == pct(g["within_sla_share"])
    assert cb["misses"] > 0 and stats["callbacks"]["by_manager"]
    main_html = await page.run(lambda: browser.find_element(By.TAG_NAME, "main").get_attribute("innerHTML"))
    assert "<script>" not in main_html and "&lt;script&gt;" in main_html
    figures = {**shown, "spam_share": pct(t["spam_share"]), "missed_by_reason": t["missed_by_reason"],
               "answer_rate_by_did": {r["key"]: pct(r["answered_share"]) for r in stats["rows"]},
               "top_blocked": blocked, "callbacks": cb}
    wide = await page.shot("dashboard.png", 1280)
    narrow = await page.shot("dashboard-phone.png", 390)

    # Another period: the same function with --since 30d.
    await page.run(browser.get, base + "/?period=30d")
    month = await cli_stats(site_cfg, "30d")
    assert await page.text(figure("screened")) == str(month["total"]["screened"])

    # /lists: add a number typed as people type it, see it, remove it.
    await page.run(browser.set_window_size, 1280, 900)
    await page.run(browser.get, base + "/lists")
    before = int(await page.text('[data-figure="blocked"]'))
    await page.run(lambda: browser.find_element(By.NAME, "phone").send_keys("8 (912) 555-01-02"))
    await page.run(lambda: browser.find_element(By.NAME, "note").send_keys("called 40 times <b>today</b>"))
    await page.run(lambda: browser.find_element(By.CSS_SELECTOR, 'button[data-action="add"]').click())
    await page.wait_for('tr[data-phone="+79125550102"]')
    assert int(await page.text('[data-figure="blocked"]')) == before + 1
    entry = await store.overrides.get("+79125550102")
    assert entry is not None and (entry.action, entry.note) == ("block", "called 40 times <b>today</b>")
    lists_shot = await page.shot("lists.png", 1280)
    await page.run(lambda: browser.find_element(
        By.CSS_SELECTOR, 'tr[data-phone="+79125550102"] button[data-action="remove"]').click())
    await page.wait_for(".flash.ok")
    assert "+79125550102 removed" in await page.text(".flash.ok")
    assert not await page.run(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-phone="+79125550102"]'))
    assert await store.overrides.get("+79125550102") is None
    assert int(await page.text('[data-figure="blocked"]')) == before

    with capsys.disabled():
        print(f"\nbrowser test: figures shown (7 days) = {json.dumps(figures, ensure_ascii=False)}")
        print(f"browser test: screenshots {wide} {narrow} {lists_shot}")
