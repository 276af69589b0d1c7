"""Config: defaults, env secrets, one clear error naming the key, documented keys."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path

import pytest

from callguard.cli import main
from callguard.config import (
    META_FIELDS,
    Config,
    Duration,
    format_duration,
    load_config,
    parse_duration,
    redacted,
    resolve_config_path,
)
from callguard.errors import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_shipped_config_is_the_defaults() -> None:
    shipped = load_config(ROOT / "config.toml", env={})
    defaults = load_config(None, env={})
    strip = {"store"} | META_FIELDS
    for f in dataclasses.fields(Config):
        if f.name not in strip:
            assert getattr(shipped, f.name) == getattr(defaults, f.name), f.name
    assert shipped.store.path == ROOT / "callguard.sqlite3"


def _keys(cls: typing.Any, prefix: str = "") -> set[str]:
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in META_FIELDS:
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


# --- ranges: every number and duration has one, checked with one line naming key, value and range ------


def _ranged(cls: typing.Any = Config, prefix: str = "") -> list[tuple[str, dataclasses.Field[typing.Any], typing.Any]]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _ranged(tp, f"{prefix}{f.name}.")
        elif tp in (int, float, Duration):
            out.append((f"{prefix}{f.name}", f, tp))
    return out


RANGED = _ranged()


def _toml_for(key: str, value: object, extra: dict[str, object] | None = None) -> str:
    tables: dict[str, list[str]] = {}
    for k, v in {key: value, **(extra or {})}.items():
        section, _, name = k.rpartition(".")
        tables.setdefault(section, []).append(f"{name} = {json.dumps(v)}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in tables.items())


# A bound of one key may break a rule across two; these partners make room for it.
PARTNERS: dict[str, dict[str, object]] = {
    "ami.pong_timeout": {"ami.ping_interval": "5m"},
    "ami.ping_interval": {"ami.pong_timeout": "1s"},
    "ami.reconnect_min": {"ami.reconnect_max": "1h"},
    "ami.reconnect_max": {"ami.reconnect_min": "100ms"},
    "outbox.backoff_base": {"outbox.backoff_cap": "1d"},
    "outbox.backoff_cap": {"outbox.backoff_base": "100ms"},
    "web.port": {"agi.port": 1},
    "agi.port": {"web.port": 1},
}


def _outside(f: dataclasses.Field[typing.Any], tp: typing.Any) -> list[object]:
    lo, hi = f.metadata["range"]
    if tp is Duration:
        return ([format_duration(lo / 2)] if lo > 0 else []) + [format_duration(hi * 2)]
    if tp is float:
        return [lo - 0.5 if lo > 0 else lo - 1, hi * 2 + 1]
    return [lo - 1, hi + 1]


def _inside(f: dataclasses.Field[typing.Any], tp: typing.Any) -> list[object]:
    lo, hi = f.metadata["range"]
    return [format_duration(lo), format_duration(hi)] if tp is Duration else [lo, hi]


def test_every_number_and_duration_has_a_range_holding_its_default() -> None:
    assert len(RANGED) >= 40
    missing = [key for key, f, _ in RANGED if "range" not in f.metadata]
    assert missing == []
    for key, f, _ in RANGED:
        lo, hi = f.metadata["range"]
        assert lo <= f.default <= hi, key


OUTSIDE = [(key, v) for key, f, tp in RANGED for v in _outside(f, tp)]


@pytest.mark.parametrize(("key", "value"), OUTSIDE)
def test_out_of_range_refused_by_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str,
                                     value: object) -> None:
    path = _write(tmp_path, _toml_for(key, value))
    with pytest.raises(ConfigError):  # first: were it accepted, `run` below would start the service
        load_config(path, env={})
    assert main(["--config", str(path), "run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"callguard: config error: {key}: must be ") and " to " in err and ", got " in err


@pytest.mark.parametrize(("key", "value"), [(key, v) for key, f, tp in RANGED for v in _inside(f, tp)])
def test_bounds_themselves_are_accepted(tmp_path: Path, key: str, value: object) -> None:
    load_config(_write(tmp_path, _toml_for(key, value, PARTNERS.get(key))), env={})


# The broken configs QA tried on `callguard run`, and the rules across keys.
BROKEN = [
    ("[agi]\nread_timeout_ms = 0\n", "agi.read_timeout_ms", "must be 100 to 60000, got 0"),
    ("[agi]\nread_timeout_ms = -5\n", "agi.read_timeout_ms", "got -5"),
    ("[agi]\nmax_connections = 0\n", "agi.max_connections", "must be 1 to 65536, got 0"),
    ("[agi]\nmax_header_bytes = 0\n", "agi.max_header_bytes", "got 0"),
    ("[agi]\ndrain_seconds = -1\n", "agi.drain_seconds", "must be 0 to 20, got -1"),
    ("[ami]\nreconnect_min = '0s'\nreconnect_max = '0s'\n", "ami.reconnect_min", "must be 100ms to 1m, got 0s"),
    ("[ami]\nping_interval = '0s'\n", "ami.ping_interval", "must be 2s to 5m, got 0s"),
    ("[ami]\nping_interval = '30d'\n", "ami.ping_interval", "got 30d"),
    ("[ami]\nreconnect_min = '30s'\nreconnect_max = '10s'\n", "ami.reconnect_max", "at least ami.reconnect_min (30s)"),
    ("[ami]\npong_timeout = '20s'\n", "ami.pong_timeout", "below ami.ping_interval (20s), got 20s"),
    ("[outbox]\nmax_attempts = 0\n", "outbox.max_attempts", "must be 1 to 1000, got 0"),
    ("[outbox]\nbackoff_base = '1h'\nbackoff_cap = '10m'\n", "outbox.backoff_cap", "at least outbox.backoff_base"),
    ("[store]\nbusy_timeout_ms = -1\n", "store.busy_timeout_ms", "got -1"),
    ("[web]\nmax_body_bytes = -1\n", "web.max_body_bytes", "got -1"),
    ("[web]\nport = 4573\n", "web.port", "is also agi.port"),
    ("[sync]\nbatch = 0\n", "sync.batch", "must be 1 to 10000, got 0"),
    ("[agi]\nport = -1\n", "agi.port", "must be 0 to 65535"),
    ("[ami]\nconnect_timeout = -3\n", "ami.connect_timeout", "cannot be negative"),
    ("[crm]\nkind = 'amocrm'\n", "crm.amocrm.base_url", "needs it"),
    ("[crm]\nkind = 'amocrm'\n[crm.amocrm]\nbase_url = 'https://x.amocrm.ru'\n", "crm.amocrm.token",
     "CALLGUARD_CRM_TOKEN"),
    ("[crm]\nkind = 'bitrix24'\n", "crm.bitrix24.webhook_url", "CALLGUARD_CRM_WEBHOOK_URL"),
    ("[outbox]\nsink = 'crm'\n", "outbox.sink", "needs crm.kind"),
]


@pytest.mark.parametrize(("text", "key", "words"), BROKEN)
def test_broken_configs_refused_by_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str,
                                       words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert e.value.key == key
    assert main(["--config", str(path), "run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and key in err and words in err, err


def test_non_utf8_config_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes("[phone]\ndefault_region = 'RU' # Россия\n".encode("cp1251"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})
    assert main(["--config", str(path), "run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8" in err and "Traceback" not in err


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})  # a folder


def test_crm_credentials_may_come_from_the_environment(tmp_path: Path) -> None:
    amo = _write(tmp_path, "[crm]\nkind = 'amocrm'\n[crm.amocrm]\nbase_url = 'https://x.amocrm.ru'\n")
    assert load_config(amo, env={"CALLGUARD_CRM_TOKEN": "t"}).crm.amocrm.token == "t"
    oauth = "client_id = 'i'\nredirect_uri = 'https://r'\n"
    path = _write(tmp_path, amo.read_text() + oauth)
    assert load_config(path, env={"CALLGUARD_CRM_CLIENT_SECRET": "s"}).crm.amocrm.token == ""  # OAuth gets one
    b24 = _write(tmp_path, "[crm]\nkind = 'bitrix24'\n")
    url = "https://p.bitrix24.ru/rest/1/k/"
    assert load_config(b24, env={"CALLGUARD_CRM_WEBHOOK_URL": url}).crm.bitrix24.webhook_url == url


def _range_text(f: dataclasses.Field[typing.Any], tp: typing.Any, sep: str) -> str:
    lo, hi = f.metadata["range"]
    if tp is Duration:
        return f"{format_duration(lo)}{sep}{format_duration(hi)}"
    if tp is float:
        return f"{lo:g}{sep}{hi:g}"
    return f"{lo}{sep}{hi}" if sep == " to " else f"{lo:,}{sep}{hi:,}".replace(",", " ")


def test_ranges_are_documented_in_config_toml_and_the_admin_guide() -> None:
    toml_lines = (ROOT / "config.toml").read_text().splitlines()
    doc = (ROOT / "docs" / "admin.md").read_text()
    for key, f, tp in RANGED:
        name = key.rpartition(".")[2]
        assert any(line.startswith(f"{name} = ") and line.endswith(f"  # {_range_text(f, tp, ' to ')}")
                   for line in toml_lines), key
        assert f"| `{key}` | {_range_text(f, tp, ' – ')} |" in doc, key


def test_a_key_an_older_release_had_is_ignored_not_refused(tmp_path: Path) -> None:
    # An upgrade keeps the admin's config.toml: a removed key must not leave the service down.
    path = tmp_path / "config.toml"
    path.write_text("[agi]\nworkers = 2\nport = 4574\n")
    cfg = load_config(path, env={})
    assert cfg.agi.port == 4574 and cfg.ignored == ("agi.workers",)
    assert load_config(None, env={}).ignored == ()
    path.write_text("[agi]\nworkerz = 2\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path, env={})
