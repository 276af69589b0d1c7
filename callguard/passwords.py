"""Password hashes for ``web.users``: scrypt from hashlib, in one self-describing string.

``scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>``, made by ``callguard passwd NAME``. scrypt is
memory-hard (n=2^14, r=8: 16 MiB and ~50 ms a try), so a stolen config.toml is slow to attack; the cost
is bounded (``MAX_N`` …) so a config cannot make one login eat the host's memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
N, R, P = 1 << 14, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16
MAX_N, MAX_R, MAX_P = 1 << 20, 32, 16
MAX_MEM = 1 << 30  # what scrypt may allocate at the most: 128 * n * r * p bytes, plus slack


@dataclass(frozen=True, slots=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return f"{SCHEME}${self.n}${self.r}${self.p}${b64(self.salt).decode()}${b64(self.key).decode()}"


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=min(MAX_MEM, 128 * n * r * p + (1 << 20)))


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return ScryptHash(N, R, P, salt, _derive(password, salt, N, R, P, KEY_BYTES)).encode()


def parse(encoded: str) -> ScryptHash:
    """The parts of a hash string, or ``ValueError`` saying what is wrong (config validation)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("expected scrypt$n$r$p$salt$key (make one with `callguard passwd NAME`)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as e:
        raise ValueError("unreadable scrypt hash (make one with `callguard passwd NAME`)") from e
    if not (1 < n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise ValueError(f"scrypt cost out of bounds (n a power of 2 up to {MAX_N}, r ≤ {MAX_R}, p ≤ {MAX_P})")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("scrypt salt or key too short")
    return ScryptHash(n, r, p, salt, key)


def verify(password: str, encoded: str) -> bool:
    """True when ``password`` gives ``encoded``; compared in constant time. A bad hash is False."""
    try:
        h = parse(encoded)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, h.salt, h.n, h.r, h.p, len(h.key)), h.key)
