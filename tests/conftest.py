"""Shared fixtures. Area-specific fixtures live in their own test modules or tests/fakes/."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

from callguard.config import Config, load_config
from callguard.store import Store

FIXTURES = Path(__file__).parent / "fixtures"

# CI must be reproducible: a fixed seed there; locally hypothesis explores new examples on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# Tests are laid out by layer; each folder's tests carry its marker, so `pytest -m unit` runs the
# pure layer alone and `-m "not live and not browser"` skips what needs a real Asterisk or Chromium.
LAYERS = ("unit", "store", "loopback", "service", "browser", "live")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """``cli.main()`` points structlog at the captured stderr, which pytest closes after the test."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Embedded defaults with the SQLite file in a temp folder."""
    path = tmp_path / "config.toml"
    path.write_text('[store]\npath = "cg.sqlite3"\n')
    return load_config(path, env={})


@pytest.fixture
async def store(cfg: Config) -> AsyncIterator[Store]:
    s = await Store.open(cfg.store.path)
    try:
        yield s
    finally:
        await s.close()
