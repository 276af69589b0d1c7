"""``callguard [--config FILE] COMMAND …``: a thin front over the service's own code.

Each command lives in its own module here with ``register(subparsers)``; the module's handler gets the
parsed args and the loaded ``Config`` and returns an exit code (see ``callguard.errors``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from callguard import __version__, errors, log
from callguard.config import Config, load_config, resolve_config_path

Handler = Callable[[argparse.Namespace, Config], int]


def _commands() -> list[Callable[[argparse._SubParsersAction], None]]:  # type: ignore[type-arg]
    # Imported here so ``callguard --help`` stays cheap and one broken command cannot hide the others.
    from callguard.cli import check, importer, run

    mods = [run, check, importer]
    for optional in ("replay", "outbox", "sync", "stats", "callbacks", "reconcile", "doctor", "lists", "passwd"):
        try:
            mods.append(__import__(f"callguard.cli.{optional}", fromlist=["register"]))
        except ModuleNotFoundError as e:
            if e.name != f"callguard.cli.{optional}":
                raise
    return [m.register for m in mods]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callguard", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="FILE", help="config file (default: $CALLGUARD_CONFIG, ./config.toml)")
    parser.add_argument("--version", action="version", version=f"callguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _commands():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(resolve_config_path(args.config))
    except errors.ConfigError as e:
        print(f"callguard: config error: {e}", file=sys.stderr)
        return errors.EXIT_CONFIG
    # Commands print their results on stdout; log lines go to stderr (``run`` re-configures for journald).
    log.configure(cfg.log.format, "warning", stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args, cfg)
    except errors.ConfigError as e:
        print(f"callguard: config error: {e}", file=sys.stderr)
        return errors.EXIT_CONFIG
    except errors.CallguardError as e:  # one line, and the code errors.exit_code maps it to
        print(f"callguard: {e}", file=sys.stderr)
        return errors.exit_code(e)
    except KeyboardInterrupt:
        return 130
