"""scrypt hashes for web.users, and the config's check of them (one ConfigError naming the key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callguard import passwords
from callguard.config import load_config, redacted
from callguard.errors import ConfigError


def test_hash_and_verify() -> None:
    h = passwords.hash_password("correct horse")
    assert h.startswith("scrypt$16384$8$1$") and h != passwords.hash_password("correct horse")  # salted
    assert passwords.verify("correct horse", h)
    assert not passwords.verify("correct horsf", h) and not passwords.verify("", h)
    assert not passwords.verify("correct horse", "garbage")


@pytest.mark.parametrize(("encoded", "message"), [
    ("md5$abc", "expected scrypt"),
    ("scrypt$x$8$1$AAAA$AAAA", "unreadable"),
    ("scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "out of bounds"),  # n not a power of two
    (f"scrypt${1 << 24}$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "out of bounds"),  # 16 GiB a try
    ("scrypt$16384$8$1$AA==$AAAAAAAAAAAAAAAAAAAAAA==", "too short"),
])
def test_bad_hashes_are_refused_with_a_reason(encoded: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        passwords.parse(encoded)


def _load(tmp_path: Path, users: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text("[web]\n" + users)
    return load_config(path, env={})


def test_config_checks_web_users(tmp_path: Path) -> None:
    good = passwords.hash_password("a long password")
    cfg = _load(tmp_path, f'[[web.users]]\nname = "olga"\npassword_hash = "{good}"\n')
    assert good not in repr(redacted(cfg))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"web.users\[0\].password_hash: expected scrypt"):
        _load(tmp_path, '[[web.users]]\nname = "olga"\npassword_hash = "plain"\n')
    with pytest.raises(ConfigError, match=r"web.users\[1\].name: 'OLGA' is listed twice"):
        _load(tmp_path, f'[[web.users]]\nname = "olga"\npassword_hash = "{good}"\n'
                        f'[[web.users]]\nname = "OLGA"\npassword_hash = "{good}"\n')
    with pytest.raises(ConfigError, match=r"web.users\[0\].name"):
        _load(tmp_path, f'[[web.users]]\nname = ""\npassword_hash = "{good}"\n')
    with pytest.raises(ConfigError, match=r"web.users\[0\].password: unknown key"):
        _load(tmp_path, f'[[web.users]]\nname = "x"\npassword = "{good}"\n')
