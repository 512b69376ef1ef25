"""An audit of one target: does it still hold, byte for byte, every version the ledger says was delivered to it?

For every version whose upload task to the target is done, the target is asked (never the staged copy, which may be
gone): the size of the final name, then the first digest the target offers, compared with the version's SHA-256 (or,
for another algorithm, with the staged copy's digest while the staged copy is there; else the check is size only).
With read_back (`--read-back`), every readable target's bytes are read back and hashed instead, digests or not.
The digest is what the target computed over the bytes it holds (S3: the store's SHA-256 where it checks what it is
sent, else the object read back), never what filesync wrote beside them. Targets with more to check offer
`check_stored(path, sha256, note)` (S3: the store's checksum and the x-amz-meta-sha256 metadata). A version published
under a conflict name (on_conflict: keep_both) is found by the location the ledger recorded.

No ROS here: the CLI (`filesync audit`) reads the ledger and builds the target, this module compares.
"""
import hashlib
import json
import os
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional
from urllib.parse import quote

from filesync.devices.base import local_digest
from filesync.errors import ConfigError, DeviceUnavailable, FilesyncError
from filesync.ledger.store import DONE, UPLOAD, FileRecord, TaskRecord
from filesync.paths import conflict_name, staged_path

MISSING, SIZE, CONTENT, STORED, UNREADABLE = "missing", "different size", "different content", "stored facts", \
    "cannot read"
CONFLICT_ATTEMPTS = 10  # as many conflict names as the engine tries


class CannotAudit(FilesyncError):
    """The audit cannot run at all (the target is unreachable, the ledger cannot be read): exit status 2."""


@dataclass
class Problem:
    """One delivered version the target does not hold as the ledger says."""
    id: int
    source: str
    path: str
    version: int
    location: str
    kind: str  # MISSING, SIZE, CONTENT, STORED or UNREADABLE
    detail: str

    def line(self) -> str:
        """One line for people: what, which version, where."""
        return f"{self.kind.upper()}: {self.source}/{self.path} (id {self.id}, version {self.version}) at " \
               f"{self.location}: {self.detail}"


@dataclass
class Report:
    """What an audit found: versions checked, how many by size only, and the problems."""
    target: str
    checked: int = 0
    size_only: int = 0
    problems: List[Problem] = field(default_factory=list)

    @property
    def good(self) -> int:
        """Versions that passed every check."""
        return self.checked - len({p.id for p in self.problems})

    def summary(self) -> str:
        """One line: counts by kind of problem."""
        kinds = {}
        for problem in self.problems:
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
        text = f"audit of {self.target}: {self.checked} delivered version(s) checked, {self.good} good"
        text += "".join(f", {count} {kind}" for kind, count in sorted(kinds.items()))
        if self.size_only:
            text += f" ({self.size_only} by size only: the target offers no digest for them)"
        return text

    def as_json(self) -> str:
        """The report as JSON (for scripts)."""
        return json.dumps({"target": self.target, "checked": self.checked, "good": self.good,
                           "size_only": self.size_only, "problems": [asdict(p) for p in self.problems]}, indent=1)


def delivered(records: Iterable, target_name: str):
    """(record, task) of every version whose upload to `target_name` is done (records as the ledger gives them)."""
    for record in records:
        task = next((t for t in record.tasks if t.kind == UPLOAD and t.device == target_name), None)
        if task is not None and task.state == DONE:
            yield record, task


def final_name(target, record, location: str) -> str:
    """The name the version was published under: its path, or the conflict name whose location the ledger recorded."""
    if not location or target.location(record.path) == location:
        return record.path
    for attempt in range(CONFLICT_ATTEMPTS):
        name = conflict_name(record.path, record.mtime, record.id, attempt)
        if target.location(name) == location:
            return name
    return record.path


def _read_back_sha256(target, name) -> str:
    digest = hashlib.sha256()
    with closing(target.read(name)) as blocks:
        for block in blocks:
            digest.update(block)
    return digest.hexdigest()


def check_version(target, record, task, staging_dir="", read_back=False):
    """The problems of one delivered version on `target` ([] when it holds it as recorded), and whether only its size
    could be checked. DeviceUnavailable goes up: the audit cannot go on."""
    target.set_context(source=record.source, version_time=record.mtime, sha256=record.sha256)
    name = final_name(target, record, task.location)
    location = target.location(name)

    def problem(kind, detail):
        return Problem(record.id, record.source, record.path, record.version, location, kind, detail)

    try:
        held = target.stat(name)
        if held is None:
            return [problem(MISSING, "the target holds no such file")], False
        if held != record.size:
            return [problem(SIZE, f"holds {held} bytes, the ledger says {record.size}")], False
        expected, actual, algorithm, size_only = "", "", "", False
        if read_back and target.readable and record.sha256:
            algorithm, expected = "sha256 (read back)", record.sha256
            actual = _read_back_sha256(target, name)
        elif target.digests:
            algorithm = target.digests[0]
            staged = staged_path(staging_dir, record.source, record.id) if staging_dir else ""
            if algorithm == "sha256":
                expected = record.sha256
            elif staged and os.path.exists(staged):
                expected = local_digest(staged, algorithm)
            if expected:
                actual = target.digest(name, algorithm)
            size_only = not expected
        else:
            size_only = True
        if expected and actual != expected:
            return [problem(CONTENT, f"{algorithm} is {actual}, the ledger's is {expected}")], False
        if record.sha256:
            return [problem(STORED, detail) for detail in target.check_stored(name, record.sha256, task.note)], \
                size_only
        return [], size_only
    except DeviceUnavailable:
        raise
    except FilesyncError as error:  # this one file cannot be read (gone meanwhile, refused): said, and go on
        return [problem(UNREADABLE, str(error))], False


def audit(target, records: Iterable, staging_dir="", read_back=False) -> Report:
    """Check every version of `records` delivered to `target` (a Target device); CannotAudit when the target cannot
    be reached. `read_back`: read the bytes back and hash them (else the target's digest, or size only without one)."""
    report = Report(target.name)
    if not target.verifiable:
        raise CannotAudit(f"target {target.name} ({target.kind}) names what it stores itself: there is no name "
                          "filesync could look up to check")
    try:
        target.probe()
        for record, task in delivered(records, target.name):
            problems, size_only = check_version(target, record, task, staging_dir, read_back)
            report.checked += 1
            report.size_only += size_only
            report.problems += problems
    except DeviceUnavailable as error:
        raise CannotAudit(f"cannot check target {target.name}: {error}") from None
    return report


def read_ledger_file(path: str, target_name: str) -> List[FileRecord]:
    """The versions with an upload task to `target_name`, read straight from a ledger database opened read-only
    (no ROS, nothing written: a ledger node may be running on it)."""
    if not os.path.isfile(path):
        raise CannotAudit(f"--database: no such file {path}")
    try:
        with closing(sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            rows = db.execute(
                "SELECT f.id, f.source, f.path, f.size, f.mtime, f.state, f.error, f.version, f.sha256, f.checksum, "
                "t.kind, t.device, t.state, t.offset, t.attempts, t.not_before, t.error, t.owner, t.location, t.note "
                "FROM files f JOIN tasks t ON t.file_id = f.id WHERE t.kind = ? AND t.device = ? ORDER BY f.id",
                (UPLOAD, target_name)).fetchall()
    except sqlite3.Error as error:
        raise CannotAudit(f"--database: cannot read the ledger {path}: {error}") from None
    return [FileRecord(*row[:10], tasks=[TaskRecord(row[0], *row[10:])]) for row in rows]


def target_options(config, target_name: str) -> dict:
    """The raw options of `target_name` in a checked Config; ConfigError naming the known targets if there is none."""
    if target_name not in config.targets:
        known = ", ".join(sorted(config.targets)) or "none"
        raise ConfigError(f"targets: no target named {target_name!r} (known: {known})")
    return config.targets[target_name]


def exit_status(report: Optional[Report]) -> int:
    """0: every delivered version is there as recorded; 1: problems found; 2: nothing could be checked (None)."""
    if report is None:
        return 2
    return 1 if report.problems else 0
