"""log.py: one JSON object per line, UTC ISO timestamps, secrets masked."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from callguard import log


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_utc_iso_timestamps_and_masked_secrets() -> None:
    stream = io.StringIO()
    log.configure("json", "info", stream=stream)
    logger = structlog.get_logger("test")
    before = datetime.now(UTC)
    for n in range(3):
        logger.info("call_screened", uniqueid=f"1795435929.{n}", caller="+79123456789", crm_token="abc")
        time.sleep(0.35)  # across a second boundary: the cached date part must move on
    logger.debug("not_shown")
    after = datetime.now(UTC)
    lines = _lines(stream)
    assert [e["uniqueid"] for e in lines] == ["1795435929.0", "1795435929.1", "1795435929.2"]
    stamps = [str(e["timestamp"]) for e in lines]
    assert all(s.endswith("Z") and len(s) == len("2026-11-23T19:21:41.600488Z") for s in stamps)
    parsed = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    slack = timedelta(milliseconds=1)  # float seconds to microseconds may round down by one
    assert before - slack <= parsed[0] < parsed[1] < parsed[2] <= after + slack
    assert all(e["crm_token"] == "***" and e["level"] == "info" for e in lines)
    assert log.settings() == log.Settings("json", "info", stream)
