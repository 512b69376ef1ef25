"""The ledger: SQLite (WAL, synchronous=FULL), one row per version of a file and one per task it needs.

A file is its content, not its name: a name listed again with another size or time is a new *version*, a row of its
own with its own tasks; what was done for the older version stays on record. A version's identity is its size, its
time, the SHA-256 filesync computed while staging it and the device's own checksum where it has one.

Tasks: one `download` (source -> staging), one `upload` per target, and a `remove` (delete from the source) when the
pipeline asks for it. A worker claims a task under a lease, records checkpoints while it works and finishes it with an
outcome; every call commits before it returns (inside together(), the group commits before any of its callers is
answered), so a crash after a return loses nothing. Every call is also idempotent, because a caller whose reply was
lost (a killed ledger node) calls again.
"""
import os
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import List, Optional

from filesync.fsutil import make_directories

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: staging is keyed by it
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    checksum TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (source, path, version)
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
    note TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (file_id, kind, device)
);
-- a worker's queue in file order, so a claim stops at the first ready task instead of sorting them all
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (kind, device, state, file_id);
DROP INDEX IF EXISTS tasks_ready;
CREATE INDEX IF NOT EXISTS files_state ON files (state);
CREATE INDEX IF NOT EXISTS files_counts ON files (source, state, size);
"""

# Schema 1 (before versions) had UNIQUE (source, path), which SQLite cannot alter: its rows move to a new table, with
# the foreign keys off, as SQLite's documentation for schema changes says.
_MIGRATE_FROM_1 = """
CREATE TABLE files_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1,
    size INTEGER NOT NULL, mtime REAL NOT NULL, sha256 TEXT NOT NULL DEFAULT '', checksum TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,
    UNIQUE (source, path, version));
INSERT INTO files_v2 (id, source, path, size, mtime, state, error, created, updated)
    SELECT id, source, path, size, mtime, state, error, created, updated FROM files;
DROP TABLE files;
ALTER TABLE files_v2 RENAME TO files;
ALTER TABLE tasks ADD COLUMN note TEXT NOT NULL DEFAULT '';
"""

DOWNLOAD, UPLOAD, REMOVE = "download", "upload", "remove"
WAITING, ACTIVE, DONE, PARKED, SKIPPED = "waiting", "active", "done", "parked", "skipped"
OUTCOMES = ("done", "retry", "park", "skip", "release", "wait", "restage")
UNKNOWN_MTIME = -1.0  # a file rebuilt from staging: its source time is not known until the finder lists it again

# Conditions under which a task may start: uploads after the download, removal after every upload reached its target.
# The unary + keeps SQLite on the primary key (file_id first) for these lookups instead of scanning tasks_queue by kind.
_READY = {
    DOWNLOAD: "1",
    UPLOAD: "EXISTS (SELECT 1 FROM tasks d WHERE d.file_id = t.file_id AND +d.kind = 'download' AND d.state = 'done')",
    REMOVE: "NOT EXISTS (SELECT 1 FROM tasks u WHERE u.file_id = t.file_id AND +u.kind = 'upload' AND u.state != 'done')",
}

# The waiting tasks a claim may take (their backoff passed), in file order, each with its file's size: a walk of
# tasks_queue in file order that stops at its LIMIT (one query with an OR and "ORDER BY (owner = ?)" sorted every
# waiting task on each claim: 30-80 ms at 100,000 files). `after` leaves out the files taken already.
_WAITING_SQL = {kind: f"""SELECT t.file_id, (SELECT f.size FROM files f WHERE f.id = t.file_id) FROM tasks t
    WHERE t.kind = :kind AND t.device = :device AND t.state = 'waiting' AND t.not_before <= :now
        AND t.file_id > :after AND {ready}
    ORDER BY t.file_id LIMIT :limit""" for kind, ready in _READY.items()}
# The active tasks of a kind and device (a batch for each of its workers at most), in file order: the file's size,
# whether `worker` holds it (held before a restart, taken back first), whether its lease ran out and whether it is
# ready.
_ACTIVE_SQL = {kind: f"""SELECT t.file_id, (SELECT f.size FROM files f WHERE f.id = t.file_id),
        t.owner = :worker, t.lease_until < :now, {ready} FROM tasks t
    WHERE t.kind = :kind AND t.device = :device AND t.state = 'active' ORDER BY t.file_id"""
    for kind, ready in _READY.items()}
# The ready waiting uploads found from the other side: the downloads done from the first waiting upload on (a few
# files at a time in flight), one range of tasks_queue per source (the recursive part lists the sources from the index
# in a step each). Walking the waiting uploads instead passes over every one whose download is not done yet, the whole
# queue on each claim once the uploads keep up with the downloads (1.6 ms a claim at 2,000 files; 0.17 ms this way).
_WAITING_SQL[UPLOAD] = """WITH RECURSIVE sources(device) AS (
        SELECT (SELECT MIN(device) FROM tasks WHERE kind = 'download')
        UNION ALL SELECT (SELECT MIN(device) FROM tasks WHERE kind = 'download' AND device > sources.device)
        FROM sources WHERE sources.device IS NOT NULL)
    SELECT t.file_id, (SELECT f.size FROM files f WHERE f.id = t.file_id) FROM sources CROSS JOIN tasks d
        CROSS JOIN tasks t
    WHERE d.kind = 'download' AND d.device = sources.device AND d.state = 'done' AND d.file_id >= (
            SELECT MIN(w.file_id) FROM tasks w WHERE w.kind = :kind AND w.device = :device AND w.state = 'waiting')
        AND t.file_id = d.file_id AND t.kind = :kind AND t.device = :device AND t.state = 'waiting'
        AND t.not_before <= :now AND t.file_id > :after
    ORDER BY t.file_id LIMIT :limit"""

# Files and their tasks in one read (`ids`: a placeholder for each): the file's columns, then TaskRecord's fields in order (NULL without tasks).
_RECORDS_SQL = ("SELECT f.id, f.source, f.path, f.size, f.mtime, f.state, f.error, f.version, f.sha256, f.checksum, "
                "t.kind, t.device, t.state, t.offset, t.attempts, t.not_before, t.error, t.owner, t.location, t.note "
                "FROM files f LEFT JOIN tasks t ON t.file_id = f.id WHERE f.id IN ({ids}) "
                "ORDER BY f.id, t.kind, t.device")
_RECORD_SQL = _RECORDS_SQL.format(ids="?")
_FILE_COLUMNS = 10

# SQLite's primary result codes that mean the file is damaged; any other error (locked, read-only, full, I/O) is a
# condition to wait out, never a reason to move the database aside.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


class LedgerCorrupt(sqlite3.DatabaseError):
    """The database file is damaged (SQLite CORRUPT or NOTADB, or quick_check failed)."""


class LedgerUnavailable(Exception):
    """The database cannot be opened or written now (locked, read-only, disk full): wait, nothing is lost."""


def is_corruption(error) -> bool:
    """True when a sqlite3 error says the database file is damaged (as opposed to locked, read-only or full)."""
    if isinstance(error, LedgerCorrupt):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


@dataclass
class TaskRecord:
    """One step of a file: its kind, the device it uses (source or target name), state, checkpoint and last error.

    `note` is what the device recorded with its last checkpoint to resume (an S3 UploadId and its parts).
    """
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
    note: str = ""


@dataclass
class FileRecord:
    """One version of a file the ledger knows, with its overall state and its tasks.

    `version` counts the versions of (source, path) from 1; `sha256` is filesync's digest of the staged copy and
    `checksum` the device's own ('mavftp-crc32:2dfd2d88'), both empty until the version is staged.
    """
    id: int
    source: str
    path: str
    size: int
    mtime: float
    state: str
    error: str = ""
    version: int = 1
    sha256: str = ""
    checksum: str = ""
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
    if download.state == SKIPPED:
        return "skipped", download.error
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
        return "uploaded", remove.error if remove and remove.state == SKIPPED else ""
    return "downloaded", next((t.error for t in uploads if t.error), "")


class Ledger:
    """The durable record. Thread-safe: one connection behind a lock (SQLite writes are serial anyway).

    Opening raises LedgerCorrupt for a damaged file (recovery moves it aside) and LedgerUnavailable for a database
    that is locked, read-only or on a full disk (the caller waits; nothing is moved or lost).
    """

    def __init__(self, path, retry_base=2.0, retry_cap=300.0, clock=time.time):
        self.path = path
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self._clock = clock
        self._lock = threading.RLock()
        self._together = False  # inside together(): each call is a savepoint of its transaction
        directory = os.path.dirname(os.path.abspath(path))
        try:
            make_directories(directory)
        except OSError as error:
            raise LedgerUnavailable(f"ledger folder {directory}: {error.strerror}") from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise LedgerUnavailable(f"ledger {path} cannot be opened: {error}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            self._db.close()
            if is_corruption(error):
                raise LedgerCorrupt(str(error)) from None
            raise LedgerUnavailable(f"ledger {path}: {error}") from None

    def _open(self):
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise LedgerCorrupt(f"quick_check: {check}")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if columns and "version" not in columns:
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.executescript("BEGIN IMMEDIATE;" + _MIGRATE_FROM_1 + "COMMIT;")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self):
        """Close the database."""
        with self._lock:
            self._db.close()

    def _transaction(self):
        return _Transaction(self)

    @contextmanager
    def together(self):
        """One transaction, one commit (one WAL fsync) for the calls made inside it by this thread.

        Each call runs in a savepoint: one that raises is undone alone and the others' work stays. Raises (and keeps
        nothing) when the commit fails or SQLite rolled the whole transaction back (a full disk, an I/O error): its
        callers then run their calls again one by one. Nobody may learn a call's result before this has returned.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._together = True
            try:
                yield
                if not self._db.in_transaction:
                    raise sqlite3.OperationalError("the grouped transaction was rolled back by SQLite")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._together = False

    # Registration -------------------------------------------------------------------------------------------------

    def register(self, source, targets, delete_after_upload, entries, downloaded=False) -> List[FileRecord]:
        """Record files found on `source`; return the versions that are new.

        `entries` are (path, size, mtime), (path, size, mtime, problem) or (path, size, mtime, problem, checksum). A
        path whose newest version has the same size and time is left alone, unless `checksum` (the device's own, as
        'algorithm:hex') differs from the one recorded when that version was staged: other bytes under the same size
        and time (a vehicle lists no times). Another size or time is a new version with its own tasks; the older version
        keeps what it did: if it was staged, its uploads go on (its bytes are in staging); if it was not, its copy
        can never be made (the source no longer holds it) and is skipped; either way it is never removed from the
        source, which now holds other bytes. A `problem` (a name the device cannot serve) parks the download with
        that reason. `downloaded` marks files rebuilt from staging.
        """
        now = self._clock()
        changed_ids = []
        with self._transaction() as db:
            for entry in entries:
                path, size, mtime = entry[:3]
                problem = entry[3] if len(entry) > 3 else ""
                checksum = entry[4] if len(entry) > 4 else ""
                known = db.execute("SELECT id, size, mtime, version, checksum FROM files WHERE source = ? AND path = ? "
                                   "ORDER BY version DESC LIMIT 1", (source, path)).fetchone()
                version = 1
                if known is not None:
                    file_id, known_size, known_mtime, known_version, known_checksum = known
                    same = known_size == size and (known_mtime == mtime or UNKNOWN_MTIME in (known_mtime, mtime))
                    if same and not (checksum and known_checksum and checksum != known_checksum):
                        if known_mtime == UNKNOWN_MTIME and mtime != UNKNOWN_MTIME:
                            db.execute("UPDATE files SET mtime = ? WHERE id = ?", (mtime, file_id))
                        continue
                    self._supersede(db, file_id, known_version + 1, now)
                    version = known_version + 1
                file_id = db.execute(
                    "INSERT INTO files (source, path, version, size, mtime, state, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, 'found', ?, ?)", (source, path, version, size, mtime, now, now)).lastrowid
                self._add_tasks(db, file_id, source, targets, delete_after_upload, downloaded, problem, now)
                changed_ids.append(file_id)
            # read back in one statement per hundred (a scan registers up to hundreds at once)
            return [record for start in range(0, len(changed_ids), 100)
                    for record in self._get_many(db, changed_ids[start:start + 100])]

    def register_staged(self, file_id, source, targets, delete_after_upload, path, version, size, mtime, sha256,
                        checksum="", delivered=None) -> Optional[FileRecord]:
        """Record a version found in staging (rebuilding a ledger) under the id it was staged with; None if known.
        `delivered` ({target: location}): the uploads its staged description says were done, recorded as done."""
        now = self._clock()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM files WHERE id = ? OR (source = ? AND path = ? AND version = ?)",
                          (file_id, source, path, version)).fetchone():
                return None
            db.execute("INSERT INTO files (id, source, path, version, size, mtime, sha256, checksum, state, created, "
                       "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'downloaded', ?, ?)",
                       (file_id, source, path, version, size, mtime, sha256, checksum, now, now))
            self._add_tasks(db, file_id, source, targets, delete_after_upload, True, "", now)
            if delivered:
                db.executemany("UPDATE tasks SET state = ?, location = ?, updated = ? WHERE file_id = ? "
                               "AND kind = 'upload' AND device = ?",
                               [(DONE, location, now, file_id, target) for target, location in delivered.items()])
                self._refresh_state(db, self._get(db, file_id), now)
        return self.get(file_id)

    def _add_tasks(self, db, file_id, source, targets, delete_after_upload, downloaded, problem, now):
        tasks = [(DOWNLOAD, source, DONE if downloaded else (PARKED if problem else WAITING), problem)]
        tasks += [(UPLOAD, target, WAITING, "") for target in targets]
        if delete_after_upload:
            tasks.append((REMOVE, source, WAITING, ""))
        db.executemany("INSERT INTO tasks (file_id, kind, device, state, error, updated) VALUES (?, ?, ?, ?, ?, ?)",
                       [(file_id, kind, device, state, error, now) for kind, device, state, error in tasks])
        # the new tasks as they are now stored: the file's state needs no read back
        state, error = derive_state([TaskRecord(file_id, kind, device, state, error=error)
                                     for kind, device, state, error in tasks])
        db.execute("UPDATE files SET state = ?, error = ?, updated = ? WHERE id = ?", (state, error, now, file_id))

    def _supersede(self, db, file_id, newer, now):
        """Version `file_id` is no longer what the source holds: its copy (if not made) and its removal are skipped."""
        copy = db.execute("SELECT state FROM tasks WHERE file_id = ? AND kind = 'download'", (file_id,)).fetchone()
        if copy and copy[0] != DONE:
            db.execute("UPDATE tasks SET state = 'skipped', error = ?, lease_until = 0, updated = ? "
                       "WHERE file_id = ? AND state IN ('waiting', 'active', 'parked')",
                       (f"replaced on the source by version {newer} before it was copied", now, file_id))
        db.execute("UPDATE tasks SET state = 'skipped', error = ?, lease_until = 0, updated = ? "
                   "WHERE file_id = ? AND kind = 'remove' AND state IN ('waiting', 'active', 'parked')",
                   (f"not removed: the source holds version {newer} now", now, file_id))
        self._refresh_state(db, self._get(db, file_id), now)

    # Work -----------------------------------------------------------------------------------------------------------

    def claim(self, kind, device, worker, lease_seconds) -> Optional[tuple]:
        """Take the next ready task of `kind` on `device` for `worker`; return (FileRecord, TaskRecord) or None.

        A worker gets back first what it held before a restart (same worker name), then waiting tasks whose backoff has
        passed, then tasks whose holder's lease ran out. No two workers hold a task at once.
        """
        claimed = self.claim_batch(kind, device, worker, lease_seconds, 1, 0)
        return claimed[0] if claimed else None

    def claim_batch(self, kind, device, worker, lease_seconds, limit, small_bytes, workers=1) -> List[tuple]:
        """Take up to `limit` ready tasks of `kind` on `device` for `worker` in one transaction (one commit for them
        all), in the order claim() would take them one by one; [(FileRecord, TaskRecord)], empty when none is ready.
        Only files under `small_bytes` go together: a larger file is taken alone (first) or left for the next claim,
        so the batch's one lease covers a few quick copies, never a long one. The device's `workers` share what is
        waiting: each takes at most its part of it, so a few files still go out on every transfer at once. A worker
        asking again (its reply lost) gets back first what it holds, all of it, as claim() does."""
        now = self._clock()
        with self._transaction() as db:
            values = dict(kind=kind, device=device, worker=worker, now=now, after=0, limit=limit * max(1, workers))
            # the first ready waiting tasks: enough to fill this batch and to tell the workers' share of them
            waiting = db.execute(_WAITING_SQL[kind], values).fetchall()
            active = db.execute(_ACTIVE_SQL[kind], values).fetchall()
            if limit > 1 and workers > 1:
                held = sum(1 for _, _, own, _, _ in active if own)
                limit = max(1, min(limit, max(held, len(waiting) // workers)))
            # what this worker held before a restart comes first, then the earlier file of the other two
            candidates = [(file_id, size) for file_id, size, own, _, ready in active if own and ready][:limit]
            after = candidates[-1][0] if candidates else 0
            if after:
                values.update(after=after, limit=limit)
                waiting = db.execute(_WAITING_SQL[kind], values).fetchall()
            expired = [(file_id, size) for file_id, size, _, lapsed, ready in active
                       if lapsed and ready and file_id > after][:limit]
            candidates += sorted(waiting[:limit] + expired)
            taken = []
            for file_id, size in candidates[:limit]:
                small = limit > 1 and size < small_bytes
                if taken and not small:
                    break
                taken.append(file_id)
                if not small:
                    break
            if not taken:
                return []
            marks = ", ".join("?" * len(taken))
            db.execute(f"UPDATE tasks SET state = 'active', owner = ?, lease_until = ?, updated = ? "
                       f"WHERE kind = ? AND device = ? AND file_id IN ({marks})",
                       (worker, now + lease_seconds, now, kind, device, *taken))
            records = self._get_many(db, taken)
            self._refresh_states(db, records, now)
        return [(record, record.task(kind, device)) for record in records]

    def checkpoint(self, file_id, kind, device, worker, offset, lease_seconds, note=None) -> bool:
        """Record that `offset` bytes are safely stored and renew the lease. False if `worker` no longer holds it.

        `note` (None: keep the last one) is what the device needs to resume from there.
        """
        now = self._clock()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET offset = ?, note = COALESCE(?, note), lease_until = ?, updated = ? "
                "WHERE file_id = ? AND kind = ? AND device = ? AND owner = ? AND state = 'active'",
                (offset, note, now + lease_seconds, now, file_id, kind, device, worker))
            return cursor.rowcount == 1

    def finish(self, file_id, kind, device, worker, outcome, error="", location="", delay=None, sha256="",
               checksum="") -> Optional[FileRecord]:
        """End a claimed task with an outcome; return the file's record, or None if `worker` did not hold the task.

        done: finished (location: where it landed). retry: a transient failure, attempts + 1, backoff with jitter.
        park: a permanent failure, kept with its reason until retried by hand. skip: not for this target, with reason.
        release: given back untouched (shutdown). wait: the device is unreachable; given back with the reason, no
        attempt counted (the worker probes the device before claiming again). restage (an upload only): the staged
        copy is gone; the download goes back to waiting from byte 0 with the reason, and this upload waits for it with
        one attempt counted, so staging that keeps losing copies parks the file after max_attempts instead of copying
        it forever (one transaction: a crash leaves either both or neither). A download done records the
        version's `sha256` and the device's `checksum`.
        The task keeps its last owner, so a worker finishing again after a lost reply gets the record again.
        """
        with self._transaction() as db:
            # one read of the file and its tasks serves the ownership check, the new state and the reply
            return self._finish(db, self._get(db, file_id), file_id, kind, device, worker, outcome, error, location,
                                delay, sha256, checksum)

    def _finish(self, db, record, file_id, kind, device, worker, outcome, error="", location="", delay=None,
                sha256="", checksum=""):
        """finish() on `record` (the file as the database holds it now, or None), inside the caller's transaction."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if outcome == "restage" and kind != UPLOAD:
            raise ValueError(f"only an upload sends its version back to be staged again, not a {kind}")
        now = self._clock()
        task = record.task(kind, device) if record else None
        if task is None or task.owner != worker:
            return None
        if task.state != ACTIVE:
            return record
        if outcome == "done":
            values = dict(state=DONE, error="", location=location)
            if kind == DOWNLOAD and sha256:  # stored with the file's state below
                record.sha256, record.checksum = sha256, checksum
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
        elif outcome == "restage":
            values = dict(state=WAITING, attempts=task.attempts + 1, error=error)
            copy = record.task(DOWNLOAD)
            db.execute("UPDATE tasks SET state = 'waiting', offset = 0, attempts = 0, not_before = 0, note = '', "
                       "error = ?, lease_until = 0, updated = ? WHERE file_id = ? AND kind = 'download'",
                       (error, now, file_id))
            copy.state, copy.offset, copy.attempts, copy.not_before, copy.note, copy.error = (
                WAITING, 0, 0, 0.0, "", error)
        else:
            values = dict(state=WAITING, error=task.error)
        for name, value in values.items():  # the record answers with what the row now holds
            setattr(task, name, value)
        values.update(updated=now, lease_until=0)
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE tasks SET {assignments} WHERE file_id = ? AND kind = ? AND device = ?",
                   (*values.values(), file_id, kind, device))
        return self._refresh_state(db, record, now)

    def finish_batch(self, calls) -> List[Optional[FileRecord]]:
        """finish(*call) for each of `calls` (tuples of finish()'s arguments) in one transaction: one commit records
        them all, or none of them (an error raises after undoing them all); their answers in order."""
        with self._lock:
            # one call of a group already: a savepoint of the group's transaction holds the batch's finishes
            with self._transaction() if self._together else self.together():
                # the batch's files and tasks in one read; a file named twice is read again for its second finish,
                # which must see what the first one did
                records = {record.id: record for record in self._get_many(self._db, sorted({c[0] for c in calls}))}
                answers = []
                for call in calls:
                    record = records.pop(call[0]) if call[0] in records else self._get(self._db, call[0])
                    answers.append(self._finish(self._db, record, *call))
                return answers

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
        """The newest version of the file at `path` on `source`, or None."""
        with self._lock:
            row = self._db.execute("SELECT id FROM files WHERE source = ? AND path = ? ORDER BY version DESC LIMIT 1",
                                   (source, path)).fetchone()
            return self._get(self._db, row[0]) if row else None

    def versions(self, source, path) -> List[FileRecord]:
        """Every version of the file at `path` on `source`, oldest first."""
        with self._lock:
            ids = [row[0] for row in self._db.execute(
                "SELECT id FROM files WHERE source = ? AND path = ? ORDER BY version", (source, path))]
            return [self._get(self._db, file_id) for file_id in ids]

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

    def bytes_to_copy(self) -> dict:
        """{source: bytes} of the copies still to make, for the status: each download and upload that is waiting or
        under way counts its file's size once (a file's download, then its upload, each move it closer to done)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT f.source, TOTAL(f.size) FROM tasks t JOIN files f ON f.id = t.file_id "
                "WHERE t.kind IN ('download', 'upload') AND t.state IN ('waiting', 'active') GROUP BY f.source")
            return {row[0]: int(row[1]) for row in rows}

    def copies_under_way(self) -> set:
        """{(file_id, kind, device)} of the downloads and uploads under way (claimed), for the status: a transfer a
        worker still reports after its task was finished is no longer in bytes_to_copy() and must not count as moved."""
        with self._lock:
            rows = self._db.execute("SELECT file_id, kind, device FROM tasks "
                                    "WHERE kind IN ('download', 'upload') AND state = 'active'")
            return {(row[0], row[1], row[2]) for row in rows}

    def _get(self, db, file_id):
        # one statement for the file and its tasks (a ledger call runs under the lock: every statement counts)
        records = self._get_many(db, [file_id])
        return records[0] if records else None

    @staticmethod
    def _get_many(db, file_ids):
        """The records of `file_ids` (those the ledger holds) in id order, read in one statement."""
        statement = _RECORD_SQL if len(file_ids) == 1 else _RECORDS_SQL.format(ids=", ".join("?" * len(file_ids)))
        records = []
        for row in db.execute(statement, file_ids):
            if not records or records[-1].id != row[0]:
                records.append(FileRecord(*row[:_FILE_COLUMNS]))
            if row[_FILE_COLUMNS] is not None:
                records[-1].tasks.append(TaskRecord(row[0], *row[_FILE_COLUMNS:]))
        return records

    def _refresh_state(self, db, record, now):
        """Store the state derived from `record`'s tasks (as they now are in the database); return the record."""
        self._refresh_states(db, [record], now)
        return record

    @staticmethod
    def _refresh_states(db, records, now):
        """Store each record's state derived from its tasks (as they now are in the database), and its identity, in
        one statement."""
        for record in records:
            record.state, record.error = derive_state(record.tasks)
        db.executemany("UPDATE files SET state = ?, error = ?, sha256 = ?, checksum = ?, updated = ? WHERE id = ?",
                       [(record.state, record.error, record.sha256, record.checksum, now, record.id)
                        for record in records])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the ledger's lock; rolls back on an exception. Inside Ledger.together(), a
    savepoint of its transaction instead (released, or rolled back alone on an exception)."""

    def __init__(self, ledger):
        self._ledger, self._db, self._lock = ledger, ledger._db, ledger._lock
        self._together = False

    def __enter__(self):
        self._lock.acquire()
        self._together = self._ledger._together  # read under the lock: only its holder's calls are grouped
        if not self._together:
            self._db.execute("BEGIN IMMEDIATE")
        elif self._db.in_transaction:
            self._db.execute("SAVEPOINT call")
        else:  # SQLite rolled the group back: running on would commit this call on its own
            self._lock.release()
            raise sqlite3.OperationalError("the grouped transaction was rolled back by SQLite")
        return self._db

    def __exit__(self, kind, value, traceback):
        try:
            if not self._together:
                self._db.execute("COMMIT" if kind is None else "ROLLBACK")
            elif self._db.in_transaction:
                if kind is not None:
                    self._db.execute("ROLLBACK TO call")
                self._db.execute("RELEASE call")
        finally:
            self._lock.release()
        return False
