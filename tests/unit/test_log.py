"""log.py: one JSON object per line, UTC ISO timestamps, secrets masked."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import structlog

from callguard import log


def _lines(stream: io.StringIO | io.BytesIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_utc_iso_timestamps_and_masked_secrets() -> None:
    stream = io.StringIO()
    log.configure("json", "info", stream=stream)
    logger = structlog.get_logger("test")
    before = datetime.now(UTC)
    for n in range(3):
        logger.info("call_screened", uniqueid=f"1795435929.{n}", caller="+79123456789", crm_token="abc")
        time.sleep(0.35)  # across a second boundary
    logger.debug("not_shown")
    after = datetime.now(UTC)
    lines = _lines(stream)
    assert [e["uniqueid"] for e in lines] == ["1795435929.0", "1795435929.1", "1795435929.2"]
    stamps = [str(e["timestamp"]) for e in lines]
    # structlog's TimeStamper(fmt="iso", utc=True): microseconds, except on the rare exact microsecond 0
    assert all(s.endswith("Z") and len(s) in (27, 20) for s in stamps)
    parsed = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    slack = timedelta(milliseconds=1)  # float seconds to microseconds may round down by one
    assert before - slack <= parsed[0] < parsed[1] < parsed[2] <= after + slack
    assert all(e["crm_token"] == "***" and e["level"] == "info" for e in lines)
    assert log.settings() == log.Settings("json", "info", stream)


class _Binary(io.BytesIO):
    """A stream like sys.stdout: text on top of a binary ``buffer`` that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    @property
    def writes(self) -> int:
        return len(self.chunks)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return super().write(data)


def _service_log() -> tuple[_Binary, structlog.typing.FilteringBoundLogger]:
    binary = _Binary()
    stream = io.TextIOWrapper(binary, encoding="utf-8")
    log.configure("json", "info", stream=stream, final=True)
    return binary, structlog.get_logger("test")


async def test_service_log_writes_each_line_whole_and_at_once() -> None:
    """One write() of one whole line per event, inside a running loop too: nothing is held back, so
    nothing is lost to a crash and a line never mixes with the watchdog's (callguard/watchdog.py)."""
    binary, logger = _service_log()
    try:
        for n in range(50):
            logger.info("call_screened", uniqueid=str(n), api_token="abc")
            assert binary.writes == n + 1
        logger.warning("agi_read_timeout", peer="x")
        assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in binary.chunks)
        lines = _lines(binary)
        assert [e.get("uniqueid") for e in lines] == [*map(str, range(50)), None]
        assert lines[50]["event"] == "agi_read_timeout" and lines[50]["level"] == "warning"
        assert all(e["api_token"] == "***" for e in lines if "api_token" in e)
    finally:
        log.configure("json", "info", stream=io.StringIO())


def test_service_log_without_a_running_loop_writes_at_once() -> None:
    binary, logger = _service_log()
    try:
        logger.info("service_stopped")
        assert _lines(binary)[0]["event"] == "service_stopped"
    finally:
        log.configure("json", "info", stream=io.StringIO())


def test_run_loop_leaves_nothing_unwritten_when_the_loop_ends() -> None:
    from callguard.app import run_loop

    binary, logger = _service_log()

    async def main() -> int:
        logger.info("last_words")
        return 7

    try:
        assert run_loop(main()) == 7
        assert [e["event"] for e in _lines(binary)] == ["last_words"]
    finally:
        log.configure("json", "info", stream=io.StringIO())


# --- journald priorities: `journalctl -u callguard -p warning` must find the warnings ---------


def _lines_to(path: Path, journal: bool, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        if journal:  # what systemd sets when stdout is the journal's stream (systemd.exec(5))
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        else:
            monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream's: not ours
        log.configure("json", "debug", stream=stream, final=True)
        logger = structlog.get_logger("test.journal")
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        logger.error("e")
        stream.flush()
    structlog.reset_defaults()
    return path.read_bytes().splitlines()


def test_journal_lines_carry_their_syslog_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines_to(tmp_path / "journal", True, monkeypatch)
    assert [line[:3] for line in lines] == [b"<7>", b"<6>", b"<4>", b"<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e"]  # still JSON after it


def test_elsewhere_lines_stay_plain_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines_to(tmp_path / "file", False, monkeypatch)
    assert [json.loads(line)["event"] for line in lines] == ["d", "i", "w", "e"]


def test_the_stall_line_carries_its_priority_in_the_journal() -> None:
    from callguard.watchdog import StallResponse

    r, w = os.pipe()
    try:
        journal = StallResponse(list, list, None, w, journal_prefix=log.priority_prefix)
        journal._log_line({"event": "x", "level": "error"})
        StallResponse(list, list, None, w)._log_line({"event": "y", "level": "error"})
        first, second = os.read(r, 4096).splitlines()
    finally:
        os.close(r)
        os.close(w)
    assert first.startswith(b"<3>{") and json.loads(first[3:])["event"] == "x"
    assert json.loads(second)["event"] == "y"
