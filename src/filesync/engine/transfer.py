"""One step of one file: copy it from its source into staging, send it to a target, or remove it from its source.

Crash consistency: bytes are written and fsynced before their offset is recorded in the ledger; a resumed copy cuts the
partial file back to the recorded offset. A staged file gets its final name only when complete and verified.
"""
import errno
import os
import time
from contextlib import closing
from dataclasses import dataclass

from filesync.devices.base import local_checksum
from filesync.errors import FileError, PermanentError, TransientError
from filesync.paths import PART_SUFFIX, check_relative, staged_path


UPLOAD_CHECKPOINT_SECONDS = 1.0


class LeaseLost(Exception):
    """The ledger gave this task to another worker (our lease ran out); stop without recording anything."""


class StagingFull(Exception):
    """Free space on the staging file system is under its floor: downloads wait (no attempt counted) for space."""


def staging_free_bytes(staging_dir) -> int:
    """Free bytes (for an unprivileged writer) on the file system holding `staging_dir` (or its nearest parent)."""
    path = os.path.abspath(staging_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_staging_space(settings):
    """Raise StagingFull when free staging space is under settings.staging_min_free_bytes (0: no floor)."""
    if settings.staging_min_free_bytes:
        free = staging_free_bytes(settings.staging_dir)
        if free < settings.staging_min_free_bytes:
            raise StagingFull(f"staging has {free} bytes free, under the floor of {settings.staging_min_free_bytes}")


def release_staged(settings, record):
    """Remove the staged copy of a file every target holds, when settings.retention says so; True if removed."""
    if settings.retention != "uploaded":
        return False
    try:
        os.remove(staged_path(settings.staging_dir, record.source, record.path))
    except FileNotFoundError:
        return False
    return True


@dataclass
class Settings:
    """The engine's knobs, from the configuration."""
    staging_dir: str
    checkpoint_bytes: int = 1 << 20
    lease_seconds: float = 30.0
    poll_interval: float = 10.0
    scan_interval: float = 10.0
    max_attempts: int = 5
    bwlimit: int = 0
    staging_min_free_bytes: int = 0
    retention: str = "keep"

    @classmethod
    def from_config(cls, config):
        """The settings of a filesync.config.Config."""
        return cls(staging_dir=config.staging_dir, checkpoint_bytes=config.checkpoint_bytes,
                   lease_seconds=config.lease_seconds, poll_interval=config.poll_interval,
                   scan_interval=config.scan_interval, max_attempts=config.max_attempts, bwlimit=config.bwlimit,
                   staging_min_free_bytes=config.staging_min_free_bytes, retention=config.retention)


class Job:
    """A claimed task with what it needs to record progress: the ledger, the worker's name and the settings."""

    def __init__(self, ledger, worker, settings, record, task, on_progress=None):
        self.ledger, self.worker, self.settings = ledger, worker, settings
        self.record, self.task = record, task
        self.on_progress = on_progress or (lambda job, done: None)
        self._recorded = task.offset
        self._checkpointed_at = time.monotonic()
        self._rate_start = (time.monotonic(), task.offset)
        self.done = task.offset  # bytes moved so far, updated on every chunk, for the status display

    def throttle(self, offset):
        """Note `offset` as moved; sleep as long as needed to stay under settings.bwlimit bytes/s (0: no limit)."""
        self.done = offset
        if self.settings.bwlimit:
            started, first = self._rate_start
            ahead = (offset - first) / self.settings.bwlimit - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def checkpoint(self, offset):
        """Record `offset` (already durable where it lands) in the ledger; raise LeaseLost if the task was taken."""
        if not self.ledger.checkpoint(self.record.id, self.task.kind, self.task.device, self.worker, offset,
                                      self.settings.lease_seconds):
            raise LeaseLost(f"{self.task.kind} of {self.record.path} was given to another worker")
        self._recorded = offset
        self._checkpointed_at = time.monotonic()
        self.on_progress(self, offset)

    def due(self, offset):
        """True when a checkpoint interval has passed since the last recorded offset."""
        return offset - self._recorded >= self.settings.checkpoint_bytes

    def progress(self, offset):
        """Checkpoint `offset` if one is due, at most once a second: for uploads, whose resume point is what the target
        holds (Target.held), so the ledger's offset shows progress and renews the lease but bounds no re-sending."""
        self.throttle(offset)
        if self.due(offset) and time.monotonic() - self._checkpointed_at >= UPLOAD_CHECKPOINT_SECONDS:
            self.checkpoint(offset)


def _fsync_directory(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _staging_error(error, path):
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError(f"staging disk full while writing {path}")
    return TransientError(f"staging: {error.strerror or error} ({path})")


def download(source, job) -> str:
    """Copy job.record from `source` into staging from the recorded checkpoint, verify it, give it its final name."""
    record = job.record
    check_relative(record.path)
    final = staged_path(job.settings.staging_dir, record.source, record.path)
    part = final + PART_SUFFIX
    if os.path.exists(final) and not os.path.exists(part) and os.path.getsize(final) == record.size:
        _verify(source, record, final)  # finished before a crash, or rebuilt from staging
        return final
    try:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        descriptor = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _staging_error(error, part) from None
    with os.fdopen(descriptor, "r+b") as staged:
        offset = min(job.task.offset, os.fstat(descriptor).st_size)
        staged.truncate(offset)
        staged.seek(offset)
        with closing(source.read(record.path, offset)) as chunks:
            for chunk in chunks:
                if offset + len(chunk) > record.size:
                    raise TransientError(f"{record.path} grew beyond {record.size} bytes during the copy")
                try:
                    staged.write(chunk)
                    offset += len(chunk)
                    due = job.due(offset)
                    if due:
                        staged.flush()
                        os.fsync(descriptor)
                except OSError as error:
                    raise _staging_error(error, part) from None
                if due:
                    job.checkpoint(offset)
                    check_staging_space(job.settings)  # stop at a durable offset; resumed once there is room
                job.throttle(offset)
        try:
            staged.flush()
            os.fsync(descriptor)
        except OSError as error:
            raise _staging_error(error, part) from None
    if offset != record.size:
        job.checkpoint(offset)
        raise FileError(f"{record.path}: source gave {offset} of {record.size} bytes")
    job.checkpoint(offset)
    try:
        _verify(source, record, part)
    except FileError:
        job.checkpoint(0)  # the bytes are wrong somewhere: start the copy again rather than keep them
        raise
    os.replace(part, final)
    _fsync_directory(os.path.dirname(final))
    return final


def _verify(source, record, path):
    size = os.path.getsize(path)
    if size != record.size:
        raise FileError(f"{record.path}: staged {size} bytes, expected {record.size}")
    expected = source.checksum(record.path)
    if expected is not None:
        actual = local_checksum(path, expected.algorithm)
        if actual != expected.value:
            raise FileError(f"{record.path}: {expected.algorithm} of the copy is {actual}, the source says "
                            f"{expected.value}")


def upload(target, job) -> str:
    """Send the staged copy of job.record to `target`, resuming what it holds, then publish it; return its location."""
    record = job.record
    check_relative(record.path)
    staged = staged_path(job.settings.staging_dir, record.source, record.path)
    if not os.path.exists(staged):
        raise PermanentError(f"the staged copy {staged} is missing")
    location = target.published(record.path, staged, record.size)
    if location is not None:
        return location
    offset = target.held(record.path) if target.resumable else 0
    if offset > record.size:
        target.discard(record.path)
        offset = 0
    if offset < record.size or record.size == 0:
        with open(staged, "rb") as stream:
            stream.seek(offset)
            target.write(record.path, stream, offset, record.size, job.progress)
    job.checkpoint(record.size)
    return target.publish(record.path, staged, record.size)


def remove(source, job) -> str:
    """Delete job.record from its source (every target has verified it by now)."""
    source.delete(job.record.path)
    return ""
