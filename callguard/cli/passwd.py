"""``callguard passwd NAME``: a scrypt hash line for ``[[web.users]]``, to paste into config.toml.

The password is read without echo (twice, to catch a typo), or from standard input with ``--stdin`` for
scripts; it is never printed or logged, only its hash (callguard.passwords).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from callguard import passwords
from callguard.config import Config

MIN_LENGTH = 8


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("passwd", help="print a [[web.users]] entry with a password hash for the web pages")
    p.add_argument("name", help="the login name")
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of standard input")
    p.set_defaults(handler=handle)


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("callguard: the two passwords differ; nothing printed", file=sys.stderr)
        return None
    return first


def entry(name: str, password_hash: str) -> str:
    # json.dumps gives a valid TOML basic string for any name (quotes, backslashes, Unicode).
    return f"[[web.users]]\nname = {json.dumps(name, ensure_ascii=False)}\npassword_hash = \"{password_hash}\""


def handle(args: argparse.Namespace, cfg: Config) -> int:
    name = args.name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        print("callguard: the name must be 1 to 64 printable characters", file=sys.stderr)
        return 2
    password = _read_password(args.stdin)
    if password is None:
        return 1
    if len(password) < MIN_LENGTH:
        print(f"callguard: use a password of at least {MIN_LENGTH} characters", file=sys.stderr)
        return 1
    print(entry(name, passwords.hash_password(password)))
    print("callguard: paste this into config.toml (it holds no password) and restart callguard", file=sys.stderr)
    return 0
