"""The one back-off: exponential, capped, with jitter (AMI reconnects, outbox retries, CRM HTTP retries).

Jitter spreads retries into [50 %, 100 %] of the delay so that a PBX restart or a CRM outage is not met
by every client, or every queued lead, at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

MAX_DOUBLINGS = 30  # 2**30 × any base is past every cap; keeps the float finite for any attempt number


def delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (0 = the first retry): ``base`` doubled per attempt, at most
    ``cap``, then jittered into [50 %, 100 %]."""
    plain = min(cap, base * (2 ** min(max(attempt, 0), MAX_DOUBLINGS)))
    return plain * (0.5 + rng() / 2)
