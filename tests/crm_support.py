"""Shared set-up for the CRM tests: configs pointing at the loopback fakes."""

from __future__ import annotations

from pathlib import Path

from callguard.config import Config, load_config


def amo_config(tmp_path: Path, base_url: str, **amo: object) -> Config:
    """amoCRM against the fake, with fast retries and a fast rate so tests stay quick."""
    values = {"base_url": base_url, "token": "amo-token", "spam_field": "Спам", "rate_rps": 50.0,
              "webhook_secret": "hook-secret", "account_id": 28805383, **amo}
    return _config(tmp_path, "amocrm", values)


def b24_config(tmp_path: Path, base_url: str, **b24: object) -> Config:
    values = {"webhook_url": f"{base_url}/rest/1/b24-secret/", "spam_field": "UF_CRM_SPAM", "rate_rps": 100.0,
              "rate_burst": 20, "application_token": "app-token", **b24}
    return _config(tmp_path, "bitrix24", values)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(tmp_path: Path, kind: str, values: dict[str, object]) -> Config:
    lines = ['[store]', 'path = "cg.sqlite3"', '[crm]', f'kind = "{kind}"', 'retry_base = "0.01s"',
             'timeout = "2s"', 'max_retries = 6', f'[crm.{kind}]']
    lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, env={})
