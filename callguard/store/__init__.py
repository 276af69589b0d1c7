"""The SQLite store: one file, WAL, numbered migrations, one writer. All SQL lives in this package.

``Store`` groups one repository per table family; each module owns its tables' SQL.
"""

from __future__ import annotations

from pathlib import Path

from callguard.store.calls import Calls
from callguard.store.db import Database
from callguard.store.numbers import Contact, Lookup, Numbers
from callguard.store.outbox import Outbox
from callguard.store.overrides import Override, Overrides
from callguard.store.screens import Screens
from callguard.store.stats import Stats
from callguard.store.sync_state import SyncState

__all__ = ["Contact", "Database", "Lookup", "Override", "Store"]


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.numbers = Numbers(db)
        self.overrides = Overrides(db)
        self.screens = Screens(db)
        self.calls = Calls(db)
        self.outbox = Outbox(db)
        self.stats = Stats(db)
        self.sync_state = SyncState(db)

    @classmethod
    async def open(cls, path: Path | str, busy_timeout_ms: int = 5000) -> Store:
        return cls(await Database.open(path, busy_timeout_ms))

    async def close(self) -> None:
        await self.db.close()
