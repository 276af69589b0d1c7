"""The one way a command opens the store: say which file on stderr, and never create one just to read.

Without ``--config`` a command used to fall back to ``./callguard.sqlite3`` in the current folder, silently
create it, and report zeros (or import into the wrong file). Now every command names the store it opened,
and a read-only command (``stats``, ``check``, ``list``, ``export``) refuses a store that does not exist with
a ``StoreOpenError`` (exit 73, ``errors.EXIT_CANTCREAT``) naming the path and the fix.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from callguard.config import Config
from callguard.errors import StoreOpenError
from callguard.store import Store

MISSING_FIX = (
    "pass --config FILE (or set CALLGUARD_CONFIG) to the config.toml the service runs with, "
    "so store.path points at its store"
)


def describe(cfg: Config) -> str:
    source = str(cfg.source) if cfg.source else "embedded defaults, no config file"
    return f"store {cfg.store.path} (config: {source})"


def require_existing(cfg: Config) -> None:
    path = cfg.store.path
    if str(path) != ":memory:" and not Path(path).exists():
        raise StoreOpenError(str(path), "no store there (this command only reads and never creates one)",
                             MISSING_FIX)


async def open_store(cfg: Config, *, readonly: bool, stream: TextIO | None = None) -> Store:
    """Open ``cfg.store.path``; with ``readonly`` a missing file is an error, not a new empty store."""
    if readonly:
        require_existing(cfg)
    print(f"callguard: {describe(cfg)}", file=stream or sys.stderr)
    return await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
