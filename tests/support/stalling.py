"""``callguard`` with a screen that blocks its event loop: a test-only wrapper, no hook in the product.

    python -m tests.support.stalling --config FILE run

runs ``callguard.cli.main`` with ``ScreenService._decide`` patched to ``time.sleep($CALLGUARD_TEST_STALL_S)``
(default 30) for the caller ``$CALLGUARD_TEST_STALL_CALLER`` (E.164, as ``call_screened`` shows it).
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
    from callguard import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
