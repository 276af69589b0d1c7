"""``callguard list · remove · export · import · passwd`` through main(), and the store-opening rules: every
command names its store, read-only ones never create one (exit 73 with the path and the --config hint)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from callguard import errors, passwords
from callguard.cli import main
from callguard.config import load_config
from callguard.store import Store


def _config(tmp_path: Path, store: str = "cg.sqlite3") -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "{store}"\n')
    return str(path)


def _fill(config: str, rows: list[tuple[str, str, str]]) -> None:
    async def go() -> None:
        store = await Store.open(load_config(config, env={}).store.path)
        try:
            await store.overrides.upsert_many(rows)
        finally:
            await store.close()

    asyncio.run(go())


SEVEN = [(f"+7912000000{i}", "block", f"spam {i}") for i in range(7)] + [("+79120000099", "allow", "boss")]


@pytest.mark.parametrize("argv", [["stats"], ["stats", "--json"], ["check", "+79123456789"], ["list"],
                                  ["list", "--spam"], ["export", "-"], ["remove", "+79123456789"]])
def test_read_only_commands_never_create_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 argv: list[str]) -> None:
    config = _config(tmp_path, "missing/cg.sqlite3")
    assert main(["--config", config, *argv]) == errors.EXIT_CANTCREAT
    err = capsys.readouterr().err
    assert str(tmp_path / "missing" / "cg.sqlite3") in err and "--config" in err
    assert not (tmp_path / "missing").exists()


def test_every_store_command_names_its_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("+79123456789,spam,x\n")
    for argv in (["import", str(csv_path)], ["list"], ["stats"], ["check", "+79123456789"], ["export", "-"]):
        assert main(["--config", config, *argv]) == 0, argv
        err = capsys.readouterr().err
        assert f"callguard: store {tmp_path / 'cg.sqlite3'} (config: {tmp_path / 'config.toml'})" in err, argv


def test_import_of_a_russian_excel_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    csv_path = tmp_path / "список.csv"
    csv_path.write_bytes("Телефон;Действие;Примечание\r\n8 912 000-00-01;спам;робот; звонит\r\n"
                         "+79120000002;allow;\r\n".encode("cp1251"))
    assert main(["--config", config, "import", str(csv_path)]) == 0
    out = capsys.readouterr()
    assert "read" in out.err and "as cp1251, semicolon-separated" in out.err
    assert "imported 2 rows, skipped 0; lists now hold 1 blocked and 1 allowed numbers" in out.out
    assert main(["--config", config, "list", "--json"]) == 0
    rows = {r["phone"]: (r["action"], r["note"]) for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows == {"+79120000001": ("block", "робот; звонит"), "+79120000002": ("allow", "")}


def test_a_refused_import_reports_what_the_store_really_holds(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    _fill(config, SEVEN)
    bad = tmp_path / "bad.csv"
    bad.write_text("abc,spam\n123,spam,an extension\n")
    assert main(["--config", config, "import", str(bad)]) == 1
    out = capsys.readouterr()
    assert "imported 0 rows, skipped 2; lists now hold 7 blocked and 1 allowed numbers" in out.out
    assert "--allow-internal" in out.err
    assert main(["--config", config, "import", "--allow-internal", str(bad)]) == 0
    assert "lists now hold 8 blocked" in capsys.readouterr().out


def test_a_refused_import_does_not_create_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x98\x98;spam\n")
    assert main(["--config", config, "import", str(bad)]) == 1
    assert "neither UTF-8 nor Windows-1251" in capsys.readouterr().err
    bad.write_text("abc,spam\n")
    assert main(["--config", config, "import", str(bad)]) == 1
    assert "no store at" in capsys.readouterr().out
    assert not (tmp_path / "cg.sqlite3").exists()


def test_list_search_filter_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    _fill(config, SEVEN)
    assert main(["--config", config, "list", "--allow"]) == 0
    out = capsys.readouterr().out
    assert "+79120000099" in out and "+79120000001" not in out and out.rstrip().endswith("1 numbers")
    assert main(["--config", config, "list", "--spam", "--search", "spam 3"]) == 0
    out = capsys.readouterr().out
    assert "+79120000003" in out and "+79120000004" not in out
    assert main(["--config", config, "list", "--limit", "2"]) == 0
    assert "2 of 8 numbers" in capsys.readouterr().out
    assert main(["--config", config, "remove", "8 (912) 000-00-03"]) == 0
    assert "removed +79120000003; lists now hold 6 blocked" in capsys.readouterr().out
    assert main(["--config", config, "remove", "+79120000003"]) == 1
    assert "is not in the lists" in capsys.readouterr().err


def test_export_then_import_gives_the_same_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    tricky = [("+79120000011", "block", '=HYPERLINK("x"), "quoted"'), ("101", "allow", "reception; desk")]
    _fill(config, SEVEN + tricky)
    out_file = tmp_path / "lists.csv"
    assert main(["--config", config, "export", str(out_file)]) == 0
    assert "exported 10 numbers" in capsys.readouterr().err
    assert out_file.read_bytes().startswith(b"\xef\xbb\xbfphone,action,note\r\n")
    other = tmp_path / "other"
    other.mkdir()
    config2 = _config(other)
    assert main(["--config", config2, "import", "--allow-internal", str(out_file)]) == 0
    capsys.readouterr()
    for cfg in (config, config2):
        assert main(["--config", cfg, "list", "--json"]) == 0
    first, second = (json.loads(x) for x in capsys.readouterr().out.strip().split("\n"))
    assert {(r["phone"], r["action"], r["note"]) for r in first["rows"]} == \
        {(r["phone"], r["action"], r["note"]) for r in second["rows"]} == set(SEVEN + tricky)


def test_passwd_prints_an_entry_the_config_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough secret\n"))
    assert main(["passwd", "olga", "--stdin"]) == 0
    out = capsys.readouterr()
    assert "long enough secret" not in out.out + out.err
    path = tmp_path / "config.toml"
    path.write_text(f"[web]\n{out.out}")
    cfg = load_config(path, env={})
    (user,) = cfg.web.users
    assert user.name == "olga" and passwords.verify("long enough secret", user.password_hash)
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["passwd", "olga", "--stdin"]) == 1
    assert "at least" in capsys.readouterr().err
