"""Project text speaks of behaviour: a reader of the code, config or docs has no tracker to look a number
up in, so no file names a ticket (by its number, or "the note" on it) in place of saying what or why."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
TOP = ("callguard", "dialplan", "tests", "scripts", "docs", ".ci", "config.toml", "README.md", "pyproject.toml")
SKIP_DIRS = {"__pycache__", ".venv", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}
SUFFIXES = {".py", ".md", ".toml", ".conf", ".sh", ".service", ".yml", ".yaml", ".json", ".txt", ".html", ".cfg", ""}
TICKET = re.compile(r"\bissues?\s*#?\s*\d|\bissue note|\(#\d+\)", re.IGNORECASE)


def project_files() -> list[Path]:
    out: list[Path] = []
    for name in TOP:
        path = ROOT / name
        if path.is_file():
            out.append(path)
            continue
        for p in path.rglob("*") if path.is_dir() else ():
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts) and p.suffix in SUFFIXES:
                out.append(p)
    return out


def ticket_mentions(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if TICKET.search(line)]


def test_the_pattern_catches_what_it_is_for() -> None:
    word = "iss" + "ue"  # spelled apart so this file does not match itself
    sample = f"a ({word} 16) b\nwent with {word} 13\nTargets ({word}s 4, 13)\nsee the {word} note\nok (#{12})"
    assert ticket_mentions(sample) == [1, 2, 3, 4, 5]
    assert ticket_mentions("an issue the admin trips over\nissued at 12:00\nreissue 3 leads") == []


def test_no_project_file_names_a_ticket() -> None:
    files = project_files()
    assert len(files) > 100, "the walk found the project"
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        for n in ticket_mentions(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert found == [], found
