"""``callguard`` with a screen that blocks its event loop: a test-only wrapper, no hook in the product.

    python -m tests.support.stalling --config FILE run

runs ``callguard.cli.main`` with ``ScreenService._decide`` patched to ``time.sleep($CALLGUARD_TEST_STALL_S)``
(default 30) for the caller ``$CALLGUARD_TEST_STALL_CALLER`` (E.164, as ``call_screened`` shows it). The AGI
workers run this module too (``agi_pool.WORKER_MODULE``), so the patch holds in them: started with the
worker's arguments (two fds first) it runs ``callguard.agi.worker.main``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any


def patch() -> None:
    from callguard.screening.screener import ScreenService

    caller = os.environ.get("CALLGUARD_TEST_STALL_CALLER", "")
    seconds = float(os.environ.get("CALLGUARD_TEST_STALL_S", "30"))
    decide = ScreenService._decide

    def stalling(self: ScreenService, phone: Any, did: str, now: datetime | None = None) -> Any:
        if caller and phone.display == caller:
            time.sleep(seconds)  # the event loop is blocked: no other callback runs meanwhile
        return decide(self, phone, did, now)

    ScreenService._decide = stalling  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    patch()
    if argv[:2] and all(a.isdigit() for a in argv[:2]):  # LISTEN_FD LINK_FD FORMAT LEVEL: an AGI worker
        from callguard.agi import worker as agi_worker
        return agi_worker.main(argv)
    from callguard import cli
    from callguard.agi import pool as agi_pool
    agi_pool.WORKER_MODULE = __name__ if __name__ != "__main__" else "tests.support.stalling"
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
