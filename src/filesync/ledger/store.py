"""The ledger: SQLite (WAL, synchronous=FULL), one row per file and one per task it needs.

Tasks: one `download` (source -> staging), one `upload` per target, and a `remove` (delete from the source) when the
pipeline asks for it. A worker claims a task under a lease, records checkpoints while it works and finishes it with an
outcome; every call commits before it returns, so a crash after a return loses nothing. Every call is also idempotent,
because a caller whose reply was lost (a killed ledger node) calls again.
"""
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (source, path)
);
CREATE TABLE IF NOT EXISTS tasks (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    offset INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0,
    location TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (file_id, kind, device)
);
-- a worker's queue in file order, so a claim stops at the first ready task instead of sorting them all
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (kind, device, state, file_id);
DROP INDEX IF EXISTS tasks_ready;
CREATE INDEX IF NOT EXISTS files_state ON files (state);
CREATE INDEX IF NOT EXISTS files_counts ON files (source, state, size);
"""

DOWNLOAD, UPLOAD, REMOVE = "download", "upload", "remove"
WAITING, ACTIVE, DONE, PARKED, SKIPPED = "waiting", "active", "done", "parked", "skipped"
OUTCOMES = ("done", "retry", "park", "skip", "release", "wait")
UNKNOWN_MTIME = -1.0  # a file rebuilt from staging: its source time is not known until the finder lists it again

# Conditions under which a task may start: uploads after the download, removal after every upload reached its target.
# The unary + keeps SQLite on the primary key (file_id first) for these lookups instead of scanning tasks_queue by kind.
_READY = {
    DOWNLOAD: "1",
    UPLOAD: "EXISTS (SELECT 1 FROM tasks d WHERE d.file_id = t.file_id AND +d.kind = 'download' AND d.state = 'done')",
    REMOVE: "NOT EXISTS (SELECT 1 FROM tasks u WHERE u.file_id = t.file_id AND +u.kind = 'upload' AND u.state != 'done')",
}

# The task a claim takes, in one statement: the worker's own active task (held before a restart), the first waiting
# task whose backoff has passed and the first active one whose lease ran out. Each walks tasks_queue in file order and
# stops at its first hit: one query with an OR and "ORDER BY (owner = ?)" sorted every waiting task on each claim
# (30-80 ms at 100,000 files).
_CLAIM_SQL = {kind: f"""SELECT
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'active'
        AND t.owner = :worker AND {ready} ORDER BY t.file_id LIMIT 1),
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'waiting'
        AND t.not_before <= :now AND {ready} ORDER BY t.file_id LIMIT 1),
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'active'
        AND t.lease_until < :now AND {ready} ORDER BY t.file_id LIMIT 1)""" for kind, ready in _READY.items()}

# A file and its tasks in one read: the file's columns, then TaskRecord's fields in order (NULL without tasks).
_RECORD_SQL = ("SELECT f.id, f.source, f.path, f.size, f.mtime, f.state, f.error, t.kind, t.device, t.state, "
               "t.offset, t.attempts, t.not_before, t.error, t.owner, t.location "
               "FROM files f LEFT JOIN tasks t ON t.file_id = f.id WHERE f.id = ? ORDER BY t.kind, t.device")


@dataclass
class TaskRecord:
    """One step of a file: its kind, the device it uses (source or target name), state, checkpoint and last error."""
    file_id: int
    kind: str
    device: str
    state: str
    offset: int = 0
    attempts: int = 0
    not_before: float = 0.0
    error: str = ""
    owner: str = ""
    location: str = ""


@dataclass
class FileRecord:
    """A file the ledger knows, with its overall state and its tasks."""
    id: int
    source: str
    path: str
    size: int
    mtime: float
    state: str
    error: str = ""
    tasks: List[TaskRecord] = field(default_factory=list)

    def task(self, kind, device=None) -> Optional[TaskRecord]:
        """The task of that kind (and device, for uploads), or None."""
        return next((t for t in self.tasks if t.kind == kind and (device is None or t.device == device)), None)


def derive_state(tasks) -> tuple:
    """The file's overall state and error from its tasks' states, so the two can never disagree."""
    parked = [t for t in tasks if t.state == PARKED]
    if parked:
        return "failed", "; ".join(f"{t.kind} {t.device}: {t.error}" for t in parked)
    download = next(t for t in tasks if t.kind == DOWNLOAD)
    if download.state != DONE:
        return ("downloading" if download.state == ACTIVE else "found"), download.error
    uploads = [t for t in tasks if t.kind == UPLOAD]
    if any(t.state == ACTIVE for t in uploads):
        return "uploading", ""
    if all(t.state == SKIPPED for t in uploads):
        return "skipped", "; ".join(t.error for t in uploads)
    if all(t.state in (DONE, SKIPPED) for t in uploads):
        remove = next((t for t in tasks if t.kind == REMOVE), None)
        if remove and remove.state == DONE:
            return "removed", ""
        return "uploaded", ""
    return "downloaded", next((t.error for t in uploads if t.error), "")


class Ledger:
    """The durable record. Thread-safe: one connection behind a lock (SQLite writes are serial anyway)."""

    def __init__(self, path, retry_base=2.0, retry_cap=300.0, clock=time.time):
        self.path = path
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self._clock = clock
        self._lock = threading.RLock()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            self._db.close()
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        self._db.executescript(SCHEMA)

    def close(self):
        """Close the database."""
        with self._lock:
            self._db.close()

    def _transaction(self):
        return _Transaction(self._db, self._lock)

    # Registration -------------------------------------------------------------------------------------------------

    def register(self, source, targets, delete_after_upload, entries, downloaded=False) -> List[FileRecord]:
        """Record files found on `source` (entries of (path, size, mtime)); return those new or changed.

        A file already known with the same size and time is left alone. One whose size or time changed is new
        content under an old name: its tasks start again. `downloaded` marks files rebuilt from staging.
        """
        now = self._clock()
        changed_ids = []
        with self._transaction() as db:
            for path, size, mtime in entries:
                known = db.execute("SELECT id, size, mtime FROM files WHERE source = ? AND path = ?",
                                   (source, path)).fetchone()
                if known is not None:
                    file_id, known_size, known_mtime = known
                    if known_size == size and (known_mtime == mtime or UNKNOWN_MTIME in (known_mtime, mtime)):
                        if known_mtime == UNKNOWN_MTIME and mtime != UNKNOWN_MTIME:
                            db.execute("UPDATE files SET mtime = ? WHERE id = ?", (mtime, file_id))
                        continue
                    db.execute("UPDATE files SET size = ?, mtime = ?, updated = ? WHERE id = ?",
                               (size, mtime, now, file_id))
                    db.execute("DELETE FROM tasks WHERE file_id = ?", (file_id,))
                else:
                    file_id = db.execute(
                        "INSERT INTO files (source, path, size, mtime, state, created, updated) "
                        "VALUES (?, ?, ?, ?, 'found', ?, ?)", (source, path, size, mtime, now, now)).lastrowid
                tasks = [(DOWNLOAD, source, DONE if downloaded else WAITING)]
                tasks += [(UPLOAD, target, WAITING) for target in targets]
                if delete_after_upload:
                    tasks.append((REMOVE, source, WAITING))
                db.executemany("INSERT INTO tasks (file_id, kind, device, state, updated) VALUES (?, ?, ?, ?, ?)",
                               [(file_id, kind, device, state, now) for kind, device, state in tasks])
                self._refresh_state(db, self._get(db, file_id), now)
                changed_ids.append(file_id)
        return [self.get(file_id) for file_id in changed_ids]

    # Work -----------------------------------------------------------------------------------------------------------

    def claim(self, kind, device, worker, lease_seconds) -> Optional[tuple]:
        """Take the next ready task of `kind` on `device` for `worker`; return (FileRecord, TaskRecord) or None.

        A worker gets back first what it held before a restart (same worker name), then waiting tasks whose backoff has
        passed, then tasks whose holder's lease ran out. No two workers hold a task at once.
        """
        now = self._clock()
        with self._transaction() as db:
            own, waiting, expired = db.execute(_CLAIM_SQL[kind],
                                               dict(kind=kind, device=device, worker=worker, now=now)).fetchone()
            # what this worker held before a restart comes first, then the earlier file of the other two
            candidates = [own] if own is not None else [c for c in (waiting, expired) if c is not None]
            if not candidates:
                return None
            file_id = min(candidates)
            db.execute("UPDATE tasks SET state = 'active', owner = ?, lease_until = ?, updated = ? "
                       "WHERE file_id = ? AND kind = ? AND device = ?",
                       (worker, now + lease_seconds, now, file_id, kind, device))
            record = self._refresh_state(db, self._get(db, file_id), now)
        return record, record.task(kind, device)

    def checkpoint(self, file_id, kind, device, worker, offset, lease_seconds) -> bool:
        """Record that `offset` bytes are safely stored and renew the lease. False if `worker` no longer holds it."""
        now = self._clock()
        with self._lock:  # one statement: SQLite commits it on its own (durably) before execute() returns
            cursor = self._db.execute(
                "UPDATE tasks SET offset = ?, lease_until = ?, updated = ? "
                "WHERE file_id = ? AND kind = ? AND device = ? AND owner = ? AND state = 'active'",
                (offset, now + lease_seconds, now, file_id, kind, device, worker))
            return cursor.rowcount == 1

    def finish(self, file_id, kind, device, worker, outcome, error="", location="", delay=None) -> Optional[FileRecord]:
        """End a claimed task with an outcome; return the file's record, or None if `worker` did not hold the task.

        done: finished (location: where it landed). retry: a transient failure, attempts + 1, backoff with jitter.
        park: a permanent failure, kept with its reason until retried by hand. skip: not for this target, with reason.
        release: given back untouched (shutdown). wait: the device is unreachable; given back with the reason, no
        attempt counted (the worker probes the device before claiming again).
        The task keeps its last owner, so a worker finishing again after a lost reply gets the record again.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        now = self._clock()
        with self._transaction() as db:
            # one read of the file and its tasks serves the ownership check, the new state and the reply
            record = self._get(db, file_id)
            task = record.task(kind, device) if record else None
            if task is None or task.owner != worker:
                return None
            if task.state != ACTIVE:
                return record
            if outcome == "done":
                values = dict(state=DONE, error="", location=location)
            elif outcome == "retry":
                attempts = task.attempts + 1
                values = dict(state=WAITING, attempts=attempts, error=error,
                              not_before=now + (delay if delay is not None else self.backoff(attempts)))
            elif outcome == "park":
                values = dict(state=PARKED, attempts=task.attempts + 1, error=error)
            elif outcome == "skip":
                values = dict(state=SKIPPED, error=error)
            elif outcome == "wait":
                values = dict(state=WAITING, error=error)
            else:
                values = dict(state=WAITING, error=task.error)
            for name, value in values.items():  # the record answers with what the row now holds
                setattr(task, name, value)
            values.update(updated=now, lease_until=0)
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE tasks SET {assignments} WHERE file_id = ? AND kind = ? AND device = ?",
                       (*values.values(), file_id, kind, device))
            return self._refresh_state(db, record, now)

    def backoff(self, attempts) -> float:
        """Capped exponential backoff with jitter: half to all of min(cap, base * 2^(attempts-1)) seconds."""
        ceiling = min(self.retry_cap, self.retry_base * 2 ** min(attempts - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)

    def retry(self, file_id) -> Optional[FileRecord]:
        """Put a file's parked tasks back in line with their attempts reset (a person's retry)."""
        now = self._clock()
        with self._transaction() as db:
            db.execute("UPDATE tasks SET state = 'waiting', attempts = 0, not_before = 0, error = '', updated = ? "
                       "WHERE file_id = ? AND state = 'parked'", (now, file_id))
            record = self._get(db, file_id)
            return self._refresh_state(db, record, now) if record else None

    def forget(self, file_id) -> bool:
        """Drop a file from the ledger (it will be found again if its source still holds it)."""
        with self._transaction() as db:
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount == 1

    # Queries ----------------------------------------------------------------------------------------------------

    def get(self, file_id) -> Optional[FileRecord]:
        """The file with this id, or None."""
        with self._lock:
            return self._get(self._db, file_id)

    def find(self, source, path) -> Optional[FileRecord]:
        """The file at `path` on `source`, or None."""
        with self._lock:
            row = self._db.execute("SELECT id FROM files WHERE source = ? AND path = ?", (source, path)).fetchone()
            return self._get(self._db, row[0]) if row else None

    def files(self, state="", source="", after_id=0, limit=0) -> List[FileRecord]:
        """Files in id order, optionally only those in `state` or from `source`, after `after_id`, at most `limit`."""
        clauses, values = ["id > ?"], [after_id]
        if state:
            clauses.append("state = ?")
            values.append(state)
        if source:
            clauses.append("source = ?")
            values.append(source)
        sql = f"SELECT id FROM files WHERE {' AND '.join(clauses)} ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            ids = [row[0] for row in self._db.execute(sql, values)]
            return [self._get(self._db, file_id) for file_id in ids]

    def work_left(self) -> int:
        """Tasks waiting or moving, leaving out those of failed files (they wait for a person's retry)."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM tasks t JOIN files f ON f.id = t.file_id "
                "WHERE t.state IN ('waiting', 'active') AND f.state != 'failed'").fetchone()[0]

    def counts(self) -> dict:
        """{(source, state): (files, bytes)} for the status display."""
        with self._lock:
            rows = self._db.execute("SELECT source, state, COUNT(*), TOTAL(size) FROM files GROUP BY source, state")
            return {(row[0], row[1]): (row[2], int(row[3])) for row in rows}

    def _get(self, db, file_id):
        # one statement for the file and its tasks (a ledger call runs under the lock: every statement counts)
        rows = db.execute(_RECORD_SQL, (file_id,)).fetchall()
        if not rows:
            return None
        file_id, source, path, size, mtime, state, error = rows[0][:7]
        tasks = [TaskRecord(file_id, *row[7:]) for row in rows if row[7] is not None]
        return FileRecord(file_id, source, path, size, mtime, state, error, tasks)

    def _refresh_state(self, db, record, now):
        """Store the state derived from `record`'s tasks (as they now are in the database); return the record."""
        record.state, record.error = derive_state(record.tasks)
        db.execute("UPDATE files SET state = ?, error = ?, updated = ? WHERE id = ?",
                   (record.state, record.error, now, record.id))
        return record


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the ledger's lock; rolls back on an exception."""

    def __init__(self, db, lock):
        self._db, self._lock = db, lock

    def __enter__(self):
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind, value, traceback):
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()
        return False
