"""Why a store cannot be opened, in words an admin can act on (docs/admin.md, exit codes).

``Database.open`` turns every failure into a ``StoreOpenError`` (the folder, permissions, a full disk:
exit 73) or a ``StoreCorruptError`` (not SQLite, damaged, truncated: exit 65); a locked file stays a plain
``StoreError`` (exit 1), which a restart may cure. SQLite's own result codes decide (``sqlite_errorname``,
https://www.sqlite.org/rescode.html), never the wording of its messages.
"""

from __future__ import annotations

import errno
import sqlite3
import struct
from pathlib import Path

from callguard.errors import StoreCorruptError, StoreError, StoreOpenError

# https://www.sqlite.org/fileformat.html#the_database_header
_MAGIC = b"SQLite format 3\x00"
_HEADER = 100

_WRITE_FIX = "check that the folder exists and the service user may create and write files in it"
_DISK_FIX = "free space on that filesystem (`df -h`), then start callguard again"


def prepare_folder(path: Path) -> None:
    """Create the store's folder; a parent that is a file, or one that cannot be made, says so."""
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists() and not p.is_dir():
            raise StoreOpenError(str(path), f"{p} is a file, not a folder", "point store.path into a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreOpenError(str(path), f"cannot create the folder {parent}: {e.strerror}", _WRITE_FIX) from e


def check_header(path: Path) -> None:
    """Refuse a truncated file before SQLite reads zeros past its end as pages (it would open it and fail
    on the first query of a page that is gone). The header's page count is valid when its
    version-valid-for number equals the change counter; a WAL file with frames may hold the rest."""
    try:
        size = path.stat().st_size
        if size == 0:
            return  # a new store
        with path.open("rb") as f:
            header = f.read(_HEADER)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreOpenError(str(path), f"cannot read it: {e.strerror}", _WRITE_FIX) from e
    if len(header) < _HEADER or not header.startswith(_MAGIC):
        raise StoreCorruptError(str(path), f"not a SQLite database ({size} bytes)")
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    wal = Path(f"{path}-wal")
    has_wal = wal.exists() and wal.stat().st_size > 32
    if valid_for == change_counter and size < pages * page_size and not has_wal:
        raise StoreCorruptError(str(path), f"truncated: {size} bytes, its header says {pages * page_size}")


def probe(target: str) -> None:
    """Open the file and read its header once, synchronously (start-up only): a file that cannot be opened
    fails here, as a plain sqlite3 error, before an aiosqlite thread exists for it."""
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()


def classify(path: str, error: sqlite3.Error | OSError) -> StoreError:
    """The typed error for a failure while opening (connect, pragmas, migrations)."""
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return StoreOpenError(path, "the disk is full", _DISK_FIX)
        return StoreOpenError(path, error.strerror or str(error), _WRITE_FIX)
    name = getattr(error, "sqlite_errorname", "") or ""
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT_"):
        return StoreCorruptError(path, f"not a SQLite database or damaged ({error})")
    if name == "SQLITE_FULL":
        return StoreOpenError(path, "the disk is full", _DISK_FIX)
    if name.startswith("SQLITE_IOERR"):
        return StoreOpenError(path, f"I/O error ({name}): the disk is full, read-only or failing", _DISK_FIX)
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return StoreOpenError(path, f"cannot be opened for writing ({error})", _WRITE_FIX)
    return StoreError(f"store {path}: {error}")  # SQLITE_BUSY and the like: a restart may help
