"""`callguard import` and `callguard check` end to end through main()."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from callguard.cli import main
from callguard.cli.importer import parse_csv


def test_parse_csv_reports_bad_rows_with_line_numbers() -> None:
    text = (
        "phone,action,note\n"
        "+79123456789,spam,robocall\n"
        "8 (912) 000-00-01,allow,the boss, really\n"
        "\n"
        "# a comment\n"
        "not a number,spam,x\n"
        "+79120000002,frobnicate,\n"
        "+79120000003\n"
        "101,spam,internal test\n"
    )
    result = parse_csv(io.StringIO(text))
    assert result.rows == [
        ("+79123456789", "block", "robocall"),
        ("+79120000001", "allow", "the boss, really"),
    ]
    # 101 is an internal extension: refused unless asked for (a typo, or a colleague blocked).
    assert [line for line, _ in result.errors] == [6, 7, 8, 9]
    assert "internal extension" in result.errors[-1][1]
    assert parse_csv(io.StringIO(text), allow_internal=True).rows[-1] == ("101", "block", "internal test")


def _config(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text('[store]\npath = "cg.sqlite3"\n')
    return str(path)


def test_import_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    csv_path = tmp_path / "lists.csv"
    csv_path.write_text("+79123456789,spam,robocall\n89120000001,allow,boss\nbad,spam,\n", encoding="utf-8")
    assert main(["--config", config, "import", str(csv_path)]) == 0
    out = capsys.readouterr()
    assert "imported 2 rows, skipped 1" in out.out
    assert f"{csv_path}:3: skipped" in out.err

    assert main(["--config", config, "check", "8 (912) 345-67-89", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["normalised"], result["verdict"], result["reason"]) == ("+79123456789", "spam", "local_block")
    assert result["variables"] == {"CALLGUARD_VERDICT": "spam"}

    assert main(["--config", config, "check", "+79120000001"]) == 0
    text = capsys.readouterr().out
    assert "verdict:    whitelist" in text and "local_allow" in text

    assert main(["--config", config, "check", "anonymous", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "anonymous"


def test_import_of_a_file_with_only_bad_rows_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("x,y\n")
    assert main(["--config", _config(tmp_path), "import", str(csv_path)]) == 1
    assert main(["--config", _config(tmp_path), "import", str(tmp_path / "missing.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err
