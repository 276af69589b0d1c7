"""Config: defaults, env secrets, one clear error naming the key, documented keys."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

from callguard.cli import main
from callguard.config import Config, load_config, parse_duration, redacted, resolve_config_path
from callguard.errors import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_shipped_config_is_the_defaults() -> None:
    shipped = load_config(ROOT / "config.toml", env={})
    defaults = load_config(None, env={})
    strip = {"store", "source"}
    for f in dataclasses.fields(Config):
        if f.name not in strip:
            assert getattr(shipped, f.name) == getattr(defaults, f.name), f.name
    assert shipped.store.path == ROOT / "callguard.sqlite3"


def _keys(cls: typing.Any, prefix: str = "") -> set[str]:
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _keys(hints[f.name], key + ".")
        else:
            out.add(key)
    return out


def _toml_keys(table: dict[str, typing.Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in table.items():
        if isinstance(v, dict) and k not in ("days", "per_did"):
            out |= _toml_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_every_key_is_documented_in_config_toml() -> None:
    documented = _toml_keys(tomllib.loads((ROOT / "config.toml").read_text()))
    documented.add("hours.per_did")  # shown as a commented example table
    assert _keys(Config) == documented


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[agi]\nprot = 1\n", "agi.prot"),
        ("[agi]\nport = 'x'\n", "agi.port"),
        ("[agi]\nport = 70000\n", "agi.port"),
        ("[agi]\ndeadline_ms = true\n", "agi.deadline_ms"),
        ("[crm]\nkind = 'salesforce'\n", "crm.kind"),
        ("[calls]\nstale_after = 'soon'\n", "calls.stale_after"),
        ("[phone]\ndefault_region = 'XX'\n", "phone.default_region"),
        ("[hours]\ntimezone = 'Mars/Olympus'\n", "hours.timezone"),
        ("[hours]\ndays = { mon = '9 to 5' }\n", "hours.days.mon"),
        ("[nonsense]\n", "nonsense"),
        ("agi = 5\n", "agi"),
        ("[outbox]\nsink = 'webhook'\n", "outbox.webhook.url"),
        ("[ami]\ninbound_contexts = 'from-trunk'\n", "ami.inbound_contexts"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text), env={})
    assert e.value.key == key
    assert key in str(e.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[agi\n"), env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_cli_exits_78_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "[agi]\nprot = 1\n")
    assert main(["--config", str(path), "check", "+79123456789"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "agi.prot" in err


def test_env_secrets_win_and_are_redacted(tmp_path: Path) -> None:
    path = _write(tmp_path, "[ami]\nsecret = 'from-file'\n")
    env = {"CALLGUARD_AMI_SECRET": "s3cr3t", "CALLGUARD_CRM_TOKEN": "tok", "CALLGUARD_WEB_TOKEN": "w"}
    cfg = load_config(path, env=env)
    assert (cfg.ami.secret, cfg.crm.amocrm.token, cfg.web.token) == ("s3cr3t", "tok", "w")
    text = repr(redacted(cfg))
    assert "s3cr3t" not in text and "tok'" not in text and "'***'" in text


def test_relative_store_path_resolves_against_the_config(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = load_config(_write(sub, "[store]\npath = 'db/cg.sqlite3'\n"), env={})
    assert cfg.store.path == sub / "db" / "cg.sqlite3"


def test_config_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, env={}) is None
    (tmp_path / "config.toml").write_text("")
    assert resolve_config_path(None, env={}) == Path("config.toml")
    assert resolve_config_path(None, env={"CALLGUARD_CONFIG": "/x.toml"}) == Path("/x.toml")
    assert resolve_config_path("/y.toml", env={"CALLGUARD_CONFIG": "/x.toml"}) == Path("/y.toml")


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("4h", 14400), ("1d", 86400), ("250ms", 0.25), (90, 90),
                                               ("1.5m", 90)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_config_is_frozen() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.agi.port = 1  # type: ignore[misc]
