"""``callguard run``: the service, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

from callguard import log
from callguard.app import Service, run_loop
from callguard.config import Config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the service (FastAGI screening, AMI, sync, web)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, cfg: Config) -> int:
    log.configure(cfg.log.format, cfg.log.level, final=True)
    return run_loop(Service(cfg).run_until_signal())
