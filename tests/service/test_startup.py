"""``callguard run`` start-up failures: one line on stderr, one ``startup_failed`` event, an exit code the
systemd unit does not restart on (callguard/errors.py), never a traceback. Real files, real sockets, a
real process; the full disk is RLIMIT_FSIZE in the child (it stops root too)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callguard.errors import EXIT_CANTCREAT, EXIT_DATAERR, EXIT_UNAVAILABLE, NO_RESTART
from callguard.store.migrations import LATEST

ROOT = Path(__file__).parents[2]
TIMEOUT = 60  # a busy 2-core CI host: the child imports everything before it fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port this test listens on, so callguard finds it taken."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _config(tmp_path: Path, store: str | Path, extra: str = "", agi_port: int | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"[store]\npath = {json.dumps(str(store))}\n"
                    f"[agi]\nport = {agi_port or free_port()}\n"
                    f"[web]\nport = {free_port()}\n" + extra)
    return path


def _run(config: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{prelude}\nfrom callguard.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGUARD_")}
    return subprocess.run([sys.executable, "-c", code, "--config", str(config), "run"], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=ROOT, env=env)


def _assert_refused(proc: subprocess.CompletedProcess[str], code: int, part: str, *words: str) -> str:
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err, proc.stdout[-2000:])
    assert code in NO_RESTART
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert err.count("\n") == 1 and err.startswith("callguard: "), err
    for w in words:
        assert w in err, (w, err)
    events = [json.loads(line) for line in proc.stdout.splitlines() if '"startup_failed"' in line]
    assert len(events) == 1 and events[0]["part"] == part and events[0]["exit_code"] == code, proc.stdout
    return err


def _real_store(path: Path) -> None:
    """A store the way callguard leaves it, with some rows (several pages), checkpointed."""
    from callguard.store.migrations import MIGRATIONS

    conn = sqlite3.connect(path)
    for v in sorted(MIGRATIONS):
        conn.executescript(MIGRATIONS[v])
    conn.execute(f"PRAGMA user_version = {LATEST}")
    conn.executemany("INSERT INTO overrides (phone, action, note, created_at) VALUES (?, 'block', ?, 0)",
                     [(f"+7912{i:07d}", "x" * 100) for i in range(2000)])
    conn.commit()
    conn.close()


def test_garbage_store_file(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    db.write_bytes(b"this is not sqlite\n" * 500)
    _assert_refused(_run(_config(tmp_path, db)), EXIT_DATAERR, "store", str(db), "not a SQLite database")


def test_truncated_store_file(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    _real_store(db)
    size = db.stat().st_size
    assert size > 8 * 4096
    with db.open("r+b") as f:
        f.truncate(size // 2)
    _assert_refused(_run(_config(tmp_path, db)), EXIT_DATAERR, "store", str(db), "truncated")


def test_store_cut_inside_its_header(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    _real_store(db)
    with db.open("r+b") as f:
        f.truncate(60)
    _assert_refused(_run(_config(tmp_path, db)), EXIT_DATAERR, "store", str(db), "not a SQLite database")


def test_damaged_pages_inside_a_whole_file(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    _real_store(db)
    with db.open("r+b") as f:  # page 1 (the schema) keeps its header, loses its cells
        f.seek(100)
        f.write(b"\xff" * 3000)
    _assert_refused(_run(_config(tmp_path, db)), EXIT_DATAERR, "store", str(db))


def test_schema_too_new(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    _real_store(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    _assert_refused(_run(_config(tmp_path, db)), EXIT_DATAERR, "store", "newer than this callguard supports")


def test_store_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    db = tmp_path / "passwd" / "x.sqlite3"
    _assert_refused(_run(_config(tmp_path, db)), EXIT_CANTCREAT, "store", str(db), "is a file, not a folder")


def test_store_in_a_folder_nobody_may_write(tmp_path: Path) -> None:
    # /proc/self is a folder in which no one, root included, can create a file: a read-only folder.
    db = Path("/proc/self/callguard.sqlite3")
    _assert_refused(_run(_config(tmp_path, db)), EXIT_CANTCREAT, "store", str(db), "cannot be opened for writing")


def test_disk_full_while_creating_the_store(tmp_path: Path) -> None:
    db = tmp_path / "cg.sqlite3"
    # Files of this process may not grow past 16 KiB: writes past it fail as on a full disk (Python ignores
    # SIGXFSZ, so the write returns the error instead of killing the process). Pipes are not files.
    prelude = "import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))"
    err = _assert_refused(_run(_config(tmp_path, db), prelude), EXIT_CANTCREAT, "store", str(db))
    assert "disk is full" in err


def test_agi_port_in_use(tmp_path: Path, busy_port: int) -> None:
    cfg = _config(tmp_path, tmp_path / "cg.sqlite3", agi_port=busy_port)
    _assert_refused(_run(cfg), EXIT_UNAVAILABLE, "agi", f"127.0.0.1:{busy_port}", "in use", "ss -ltnp")


def test_web_port_in_use(tmp_path: Path, busy_port: int) -> None:
    cfg = _config(tmp_path, tmp_path / "cg.sqlite3")
    cfg.write_text(cfg.read_text().replace("[web]\n", f"[web]\nport = {busy_port}\n#"))
    _assert_refused(_run(cfg), EXIT_UNAVAILABLE, "web", f"127.0.0.1:{busy_port}", "in use")


def test_agi_address_not_on_this_host(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no interface has it.
    cfg = _config(tmp_path, tmp_path / "cg.sqlite3")
    cfg.write_text(cfg.read_text().replace("[agi]\n", "[agi]\nhost = '192.0.2.1'\n"))
    _assert_refused(_run(cfg), EXIT_UNAVAILABLE, "agi", "192.0.2.1:", "fix the host")
