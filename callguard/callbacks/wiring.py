"""Building the ``callbacks`` part from the config and the store (app.py calls this; nothing here is
imported by the other parts). The AMI client reaches the driver through ``fan_out``, one more handler
after the call flow's, and the link adapter gives the driver the login count and ``send_action``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callguard.ami.wire import Frame
from callguard.callbacks.actions import CallbackCrm, NoCrm
from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.notify import Notices
from callguard.callbacks.settings import Roster, parse_roster
from callguard.config import Config
from callguard.store import Store
from callguard.store.callbacks import Callbacks

Handler = Callable[[Frame, float], None]


def build_callback_crm(cfg: Config, store: Store | None) -> CallbackCrm:
    """The CRM the loop assigns in: only when leads go to that CRM (``outbox.sink = crm``)."""
    if cfg.outbox.sink != "crm":
        return NoCrm()
    if cfg.crm.kind == "amocrm":
        from callguard.crm.amocrm_api import AmoApi
        from callguard.crm.callbacks import AmoCallbacks

        return AmoCallbacks(AmoApi(cfg, store))
    if cfg.crm.kind == "bitrix24":
        from callguard.crm.bitrix24 import Bitrix24
        from callguard.crm.callbacks import Bitrix24Callbacks

        return Bitrix24Callbacks(Bitrix24(cfg))
    return NoCrm()


class ClientLink:
    """The AMI client as the driver sees it: how many logins so far, and an action with its reply."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def logins(self) -> int:
        return int(self.client.logins)

    async def send_action(self, action: dict[str, str]) -> Any:
        return await self.client.manager.send_action(action)


def owner_lookup(store: Store, roster: Roster) -> Callable[[str], Any]:
    async def owner_of(phone: str) -> str | None:
        contact = (await store.numbers.lookup(phone)).contact
        if contact is None or not str(contact.owner).isdigit():
            return None
        return roster.by_crm_user(int(contact.owner))

    return owner_of


def build_callbacks(cfg: Config, store: Store) -> tuple[CallbackDriver, Notices | None]:
    """The loop, and the part that POSTs its notices when ``callback.notify.url`` is set."""
    roster = parse_roster(cfg.callback)
    notices = Notices(cfg.callback.notify, roster) if cfg.callback.notify.url else None
    driver = CallbackDriver(
        cfg.callback, roster, Callbacks(store.db), build_callback_crm(cfg, store),
        region=cfg.phone.default_region, max_extension_digits=cfg.phone.max_extension_digits,
        owner_of=owner_lookup(store, roster), notices=notices,
    )
    return driver, notices


def fan_out(*handlers: Handler) -> Handler:
    def on_event(frame: Frame, now: float) -> None:
        for h in handlers:
            h(frame, now)

    return on_event
