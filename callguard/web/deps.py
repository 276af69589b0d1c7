"""What the browser pages are given (no service locator): one small module, so the pages and the lists
page both name it without importing each other."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from callguard.config import Config
from callguard.store import Store
from callguard.web import dashboard
from callguard.web.auth import Sessions


@dataclass
class PagesDeps:
    """What the pages need, passed in explicitly (no service locator): the config, the open store, the
    readiness data (the ``/readyz`` parts as a dict; None shows "not reported"). The call-back figures come
    from the store's report (``callback_sla(cfg)``), like every other figure."""

    cfg: Config
    store: Store
    readiness: dashboard.Readiness | None = None
    clock: Callable[[], float] = time.time
    sessions: Sessions = field(default_factory=Sessions)
