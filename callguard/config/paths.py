"""File paths the config names relative to something else: ``outbox.log_file`` (the log sink's leads
file, leads/leadfile.py), by default ``leads.jsonl`` next to ``store.path``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from callguard.config.sections import Config
from callguard.errors import ConfigError

LOG_FILE_KEY = "outbox.log_file"
DEFAULT_LOG_FILE = "leads.jsonl"


def log_file_of(cfg: Config, base: Path | None = None) -> Path:
    """Where the log sink writes: the key as given (relative to ``base``, the config's folder), else
    ``leads.jsonl`` beside the store (beside the config for an in-memory store)."""
    given = cfg.outbox.log_file
    base = base if base is not None else Path.cwd()
    if given:
        path = Path(given)
        return path if path.is_absolute() else base / path
    store = cfg.store.path
    return (base if str(store) == ":memory:" else store.parent) / DEFAULT_LOG_FILE


def resolve_log_file(cfg: Config, base: Path) -> Config:
    """The config with ``outbox.log_file`` absolute; a value that can never be a file is a ConfigError."""
    given = cfg.outbox.log_file
    if given and not given.strip():
        raise ConfigError("is blank: leave it out for leads.jsonl next to store.path", LOG_FILE_KEY)
    if "\0" in given:
        raise ConfigError("contains a NUL character", LOG_FILE_KEY)
    if given.endswith("/"):
        raise ConfigError(f"names a folder ({given!r}): give a file name, e.g. {given}leads.jsonl", LOG_FILE_KEY)
    path = log_file_of(cfg, base)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: give a file name", LOG_FILE_KEY)
    # the default follows store.path, whose own start-up check names a bad folder (exit 73, not 78)
    if given and path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is not a folder", LOG_FILE_KEY)
    if str(cfg.store.path) != ":memory:" and path.resolve() == Path(cfg.store.path).resolve():
        raise ConfigError("is store.path: the leads file must be a file of its own", LOG_FILE_KEY)
    return dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, log_file=str(path)))
