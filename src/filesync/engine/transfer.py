"""One step of one version of a file: copy it from its source into staging, send it to a target, or remove it from
its source. The transfer contract lives here, once, for every device (devices only move bytes and say what they can):

- Staging: a version is staged under its ledger id (<staging>/<source>/<id>), never under its name, so another version
  of the same name never reuses its bytes. Bytes are written and fsynced before their offset is recorded; a resumed
  copy cuts the partial file back to the recorded offset. The SHA-256 is computed while copying (a resumed copy hashes
  its own partial file again, never the source). The staged file gets its final name only when complete and verified
  against the device's checksum, after its description (<id>.json) is fsynced.
- Uploads: a final name that holds exactly this version's bytes counts as done (a crash between publishing and
  recording costs no second copy). A final name holding other bytes is never overwritten: the target's on_conflict
  says keep_both (publish under conflict_name), park, or overwrite. The final name is looked at before sending,
  except where the target's publish() refuses a taken name itself with nothing sent before it
  (publishes_exclusively: S3's PutObject with If-None-Match): there only when it refuses, and the upload is
  discarded before on_conflict chooses. A small file the target sends whole (sends_whole)
  goes from byte 0 over whatever an interrupted attempt left, without asking what is held. Every published copy is
  checked through the target: its size, and the first digest the target offers; a copy that fails is deleted (where
  the target can) and sent again under the same name. What a target holds of an upload that is parked, skipped or
  forgotten is dropped (abandon(): an S3 multipart upload would stay, billed).
- Removal: a source file is removed only while the source still holds this very version (size, time, and the
  device's checksum where it has one); a changed file is left alone (the finder registers its new version; other
  bytes under the same size and time, seen only by the checksum, are registered here).
"""
import errno
import hashlib
import itertools
import logging
import os
import time
from contextlib import closing
from dataclasses import dataclass

from filesync.devices.base import Checksum, digest_text, local_digest
from filesync.errors import FileError, FinalNameTaken, PermanentError, SkipFile, StartOver, TransientError, Vanished
from filesync.fsutil import FolderSyncs, fsync_directory, make_directories
from filesync.ledger.recovery import discard_staged, read_staged_meta, write_staged_meta
from filesync.ledger.store import UPLOAD
from filesync.paths import PART_SUFFIX, check_relative, conflict_name, device_name, staged_path
log = logging.getLogger(__name__)

UPLOAD_CHECKPOINT_SECONDS = 1.0


class LeaseLost(Exception):
    """The ledger gave this task to another worker (our lease ran out); stop without recording anything."""


class StagingFull(Exception):
    """Free space on the staging file system is under its floor: downloads wait (no attempt counted) for space."""


class StagedCopyLost(Exception):
    """An upload found its version's staged copy gone (a power cut lost its entry, someone cleaned staging): the
    version goes back to its download (ledger outcome 'restage'), which copies it again while the source still holds
    it and parks it, saying so, when it does not."""


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
    """Remove the staged copy of a version every target holds, when settings.retention says so; True if removed."""
    if settings.retention != "uploaded":
        return False
    return discard_staged(settings.staging_dir, record)


@dataclass
class Done:
    """What a finished step tells the ledger: where the bytes landed, and for a copy the version's identity."""
    location: str = ""
    sha256: str = ""
    checksum: str = ""


@dataclass
class Settings:
    """The engine's knobs, from the configuration."""
    staging_dir: str
    checkpoint_bytes: int = 1 << 20
    lease_seconds: float = 30.0
    poll_interval: float = 10.0
    scan_interval: float = 10.0
    max_attempts: int = 5
    retry_base: float = 2.0
    retry_cap: float = 300.0
    bwlimit: int = 0
    staging_min_free_bytes: int = 0
    retention: str = "keep"

    @classmethod
    def from_config(cls, config):
        """The settings of a filesync.config.Config."""
        return cls(staging_dir=config.staging_dir, checkpoint_bytes=config.checkpoint_bytes,
                   lease_seconds=config.lease_seconds, poll_interval=config.poll_interval,
                   scan_interval=config.scan_interval, max_attempts=config.max_attempts, bwlimit=config.bwlimit,
                   retry_base=config.retry_base, retry_cap=config.retry_cap,
                   staging_min_free_bytes=config.staging_min_free_bytes, retention=config.retention)


class Job:
    """A claimed task with what it needs to record progress: the ledger, the worker's name and the settings, and the
    staging folder fsyncs (fsutil.FolderSyncs) of the worker's batch: each folder is settled once before the batch's
    finishes are recorded."""

    def __init__(self, ledger, worker, settings, record, task, on_progress=None, folder_syncs=None, claimed_at=None):
        self.ledger, self.worker, self.settings = ledger, worker, settings
        self.folder_syncs = folder_syncs or FolderSyncs()
        self.record, self.task = record, task
        self.on_progress = on_progress or (lambda job, done: None)
        self._recorded = task.offset
        # when the lease was last given (the claim, for a task that waited in its batch): the lease's half is from then
        self._checkpointed_at = time.monotonic() if claimed_at is None else claimed_at
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

    def checkpoint(self, offset, note=None):
        """Record `offset` (already durable where it lands), and the device's `note` to resume from there, in the
        ledger; raise LeaseLost if the task was taken."""
        if not self.ledger.checkpoint(self.record.id, self.task.kind, self.task.device, self.worker, offset,
                                      self.settings.lease_seconds, note):
            raise LeaseLost(f"{self.task.kind} of {self.record.path} was given to another worker")
        self._recorded = offset
        self._checkpointed_at = time.monotonic()
        self.on_progress(self, offset)

    def due(self, offset):
        """True when a checkpoint interval has passed since the last recorded offset, or when half the lease has passed
        since the last checkpoint with new bytes moved (a slow copy keeps its lease without waiting for
        checkpoint_bytes)."""
        return offset - self._recorded >= self.settings.checkpoint_bytes or (
            offset > self._recorded and self._lease_half_gone())

    def _lease_half_gone(self):
        return time.monotonic() - self._checkpointed_at >= self.settings.lease_seconds / 2

    def checkpoint_before_finish(self, offset, before=lambda: None):
        """Checkpoint a whole copy before its finish (calling `before` first), unless it moved less than
        checkpoint_bytes since the last checkpoint and its lease is far from running out: then the finish records it
        (one ledger transaction less per small file); a crash before the finish copies those few bytes again, as the
        bound in docs/guarantees.md allows."""
        if offset - self._recorded >= self.settings.checkpoint_bytes or self._lease_half_gone():
            before()
            self.checkpoint(offset)

    def progress(self, offset, note=None):
        """A target's progress: checkpoint `offset` if one is due, at most once a second (the resume point is what the
        target holds, so the ledger's offset shows progress and renews the lease but bounds no re-sending); a `note`
        (what the device needs to resume) is recorded at once."""
        self.throttle(offset)
        if note is not None or (self.due(offset)
                                and time.monotonic() - self._checkpointed_at >= UPLOAD_CHECKPOINT_SECONDS):
            self.checkpoint(offset, note)


def _staging_error(error, path):
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError(f"staging disk full while writing {path}")
    return TransientError(f"staging: {error.strerror or error} ({path})")


def download(source, job) -> Done:
    """Copy job.record's version from `source` into staging from the recorded checkpoint, verify it, name it."""
    record = job.record
    check_relative(record.path)
    final = staged_path(job.settings.staging_dir, record.source, record.id)
    part = final + PART_SUFFIX
    if os.path.exists(final):  # staged before a crash, or rebuilt from staging
        return _staged(record, final)
    if record.sha256:  # staged once already, and the staged copy was lost
        _check_still_held(source, record)
    try:
        make_directories(os.path.dirname(final))
        new = not os.path.exists(part)
        descriptor = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _staging_error(error, part) from None
    digest = hashlib.sha256()
    unnamed = [new]  # a new .part's name must be durable before an offset is recorded for it; a small file's never is

    def name_part():
        if unnamed[0]:
            try:
                fsync_directory(os.path.dirname(part))
            except OSError as error:
                raise _staging_error(error, part) from None
            unnamed[0] = False

    with os.fdopen(descriptor, "r+b") as staged:
        offset = min(job.task.offset, os.fstat(descriptor).st_size)
        staged.truncate(offset)
        for block in iter(lambda: staged.read(min(1 << 20, offset - staged.tell())), b""):
            digest.update(block)  # the bytes copied before an interruption: hashed again from staging, not the source
        with closing(source.read(device_name(record.path), offset)) as chunks:
            for chunk in chunks:
                if offset + len(chunk) > record.size:
                    raise TransientError(f"{record.path} grew beyond {record.size} bytes during the copy")
                try:
                    staged.write(chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    due = job.due(offset)
                    if due:
                        staged.flush()
                        os.fsync(descriptor)
                except OSError as error:
                    raise _staging_error(error, part) from None
                if due:
                    name_part()
                    job.checkpoint(offset)
                    check_staging_space(job.settings)  # stop at a durable offset; resumed once there is room
                job.throttle(offset)
        try:
            staged.flush()
            os.fsync(descriptor)
        except OSError as error:
            raise _staging_error(error, part) from None
    if offset != record.size:
        name_part()
        job.checkpoint(offset)
        raise FileError(f"{record.path}: source gave {offset} of {record.size} bytes")
    job.checkpoint_before_finish(offset, name_part)
    _check_unchanged(source, record, job)
    try:
        checksum = _verify_source_checksum(source, record, part)
    except FileError:
        job.checkpoint(0)  # the bytes are wrong somewhere: start the copy again rather than keep them
        raise
    sha256 = digest.hexdigest()
    if record.sha256 and sha256 != record.sha256:
        job.checkpoint(0)
        raise PermanentError(f"the staged copy of {record.path} (version {record.version}) was lost and the source "
                             f"holds other bytes under the same size and time now (SHA-256 {sha256}, the version's "
                             f"was {record.sha256}): that version cannot be copied again")
    try:
        # the description's bytes are fsynced before the copy gets its name; one fsync of the folder then makes both
        # names durable before the finish records the copy (a copy named without its description after a power cut
        # is described again from the ledger; a rebuilt ledger leaves it alone): at once, or once for the worker's
        # batch of copies into this folder, before their finishes
        write_staged_meta(final, record, sha256, checksum, sync_folder=False)
        os.replace(part, final)
        job.folder_syncs.sync(os.path.dirname(final))
    except OSError as error:
        raise _staging_error(error, final) from None
    return Done(final, sha256, checksum)


def _check_unchanged(source, record, job):
    """After a copy: the source must still hold the version that was listed, or the copy may mix two contents (a file
    rewritten in place with the same size). Changed: the copy starts over, and the finder registers the new version
    (which makes this one skipped). Gone: the copy is all there is of it, kept as it is."""
    try:
        now = source.stat(device_name(record.path))
    except Vanished:
        return
    if now.size != record.size or (record.mtime >= 0 and now.mtime != record.mtime):
        job.checkpoint(0)
        raise TransientError(f"{record.path} changed on the source during the copy; copying it again")


def _check_still_held(source, record):
    """Before copying again a version whose staged copy was lost: the source must still hold it (its size and time
    here, its bytes against the recorded SHA-256 after the copy), else it is parked saying why."""
    lost = f"the staged copy of {record.path} (version {record.version}) was lost and"
    try:
        now = source.stat(device_name(record.path))
    except Vanished:
        raise PermanentError(f"{lost} the source no longer holds the file: that version cannot be copied again") \
            from None
    if now.size != record.size or (record.mtime >= 0 and now.mtime != record.mtime):
        raise PermanentError(f"{lost} the source holds another version now ({record.size} -> {now.size} bytes, "
                             f"time {record.mtime} -> {now.mtime}): that version cannot be copied again")


def _staged(record, final):
    """The Done of a version already staged: its size checked, its identity from its description (or hashed)."""
    size = os.path.getsize(final)
    if size != record.size:
        os.replace(final, final + PART_SUFFIX)  # not this version's bytes after all: copy again from the checkpoint
        raise FileError(f"{record.path}: staged {size} bytes, expected {record.size}")
    meta = read_staged_meta(final) or {}
    if meta and (meta.get("path"), meta.get("version"), meta.get("size")) != (record.path, record.version, size):
        os.remove(final)  # another file's bytes under this id (a ledger rebuilt without its staging): copy again
        raise FileError(f"{record.path}: the staged file {final} belongs to {meta.get('path')!r}; copying again")
    sha256 = record.sha256 or meta.get("sha256") or local_digest(final, "sha256")
    checksum = record.checksum or meta.get("checksum", "")
    if not meta:
        write_staged_meta(final, record, sha256, checksum)
    return Done(final, sha256, checksum)


def _checksum_text(checksum: Checksum) -> str:
    return f"{checksum.algorithm}:{digest_text(checksum.value)}"


def _verify_source_checksum(source, record, path) -> str:
    """Compare the copy with the source's own checksum where it offers one; return it as text ('' where none)."""
    size = os.path.getsize(path)
    if size != record.size:
        raise FileError(f"{record.path}: staged {size} bytes, expected {record.size}")
    expected = source.checksum(device_name(record.path))
    if expected is None:
        return ""
    actual = local_digest(path, expected.algorithm)
    if actual != digest_text(expected.value):
        raise FileError(f"{record.path}: {expected.algorithm} of the copy is {actual}, the source says "
                        f"{digest_text(expected.value)}")
    return _checksum_text(expected)


def _staged_copy(job):
    """The staged file of job.record's version and its SHA-256."""
    record = job.record
    staged = staged_path(job.settings.staging_dir, record.source, record.id)
    if not os.path.exists(staged):
        raise StagedCopyLost(f"the staged copy of {record.path} (version {record.version}) is missing: {staged}; "
                             "copying it again from the source")
    sha256 = record.sha256 or (read_staged_meta(staged) or {}).get("sha256") or local_digest(staged, "sha256")
    return staged, sha256


def _holds(target, name, held, size, staged, sha256) -> bool:
    """True when the target's final `name`, which holds `held` bytes, holds exactly the staged bytes: same size, then
    the target's digest, else its bytes read back. A target that can do neither cannot show sameness: taken as
    different (never overwritten)."""
    if held != size:
        return False
    if target.digests:
        algorithm = target.digests[0]
        local = sha256 if algorithm == "sha256" else local_digest(staged, algorithm)
        return target.digest(name, algorithm) == local
    if target.readable:
        digest = hashlib.sha256()
        with closing(target.read(name)) as blocks:
            for block in blocks:
                digest.update(block)
        return digest.hexdigest() == sha256
    return False


def can_be_asked(target) -> bool:
    """True when `target` can show whether it holds a version (what _holds checks): a ledger rebuilt from staging then
    asks it, through the upload, instead of reading a delivery note beside the staged copy."""
    # readable first: an FTP target's digests ask the server (FEAT), and the engine asks this before a claim too
    return target.verifiable and (target.readable or bool(target.digests))


def _destination(target, record, staged, sha256):
    """Where this version goes on `target`: (name, replace, already_there). Applies the target's on_conflict."""
    policy = target.options.get("on_conflict", "keep_both")
    # the conflict names are made only when needed: the first name is nearly always free
    names = itertools.chain([record.path], (conflict_name(record.path, record.mtime, record.id, attempt)
                                            for attempt in range(10 if policy == "keep_both" else 0)))
    for name in names:
        held = target.stat(name)
        if held is None:
            return name, False, False
        if _holds(target, name, held, record.size, staged, sha256):
            return name, False, True
        if policy == "overwrite":
            return name, True, False
        if policy == "park":
            raise PermanentError(f"{target.location(name)} already holds a different file; not overwriting it "
                                 f"(on_conflict: park)")
    raise PermanentError(f"{target.location(record.path)} and its conflict names all hold other files")


def _send(target, job, name, staged, size):
    """Send the staged bytes to `name`'s temporary name, from what the target holds (byte 0 where it refuses, or where
    it sends a file of this size whole)."""
    offset = target.held(name, job.task.note) if target.resumable and not target.sends_whole(size) else 0
    if offset > size:
        target.discard(name)
        offset = 0
    if offset == size and size > 0:
        return
    with open(staged, "rb") as stream:
        stream.seek(offset)
        try:
            target.write(name, stream, offset, size, job.progress)
        except StartOver:
            target.discard(name)
            stream.seek(0)
            target.write(name, stream, 0, size, job.progress)


def upload(target, job) -> Done:
    """Send job.record's staged version to `target`, publish it without overwriting another file, verify it there."""
    record = job.record
    check_relative(record.path)
    staged, sha256 = _staged_copy(job)
    target.set_context(source=record.source, version_time=record.mtime, sha256=sha256, version_id=record.id)
    if not target.verifiable:  # an upload API: the server names and keeps what it receives; nothing to compare
        _send(target, job, record.path, staged, record.size)
        job.checkpoint_before_finish(record.size)
        return Done(target.publish(record.path, record.size))
    looked = not target.publishes_exclusively(record.size)
    if looked:
        name, replace, already_there = _destination(target, record, staged, sha256)
        if already_there:
            return Done(target.location(name))
    else:  # publish() refuses the name if it is taken: looked at only then
        name, replace = record.path, False
    try:
        location = _send_and_publish(target, job, name, staged, record.size, replace)
    except FinalNameTaken:
        if looked:
            raise TransientError(f"{target.location(name)} was taken by another file meanwhile; choosing again") \
                from None
        target.discard(name)
        name, replace, already_there = _destination(target, record, staged, sha256)
        if already_there:
            return Done(target.location(name))
        try:
            location = _send_and_publish(target, job, name, staged, record.size, replace)
        except FinalNameTaken:
            raise TransientError(f"{target.location(name)} was taken by another file meanwhile; choosing again") \
                from None
    _verify_published(target, name, record.size, staged, sha256)
    return Done(location)


def _send_and_publish(target, job, name, staged, size, replace):
    """Send the staged bytes under `name`'s temporary name and publish them under `name`; the location."""
    _send(target, job, name, staged, size)
    job.checkpoint_before_finish(size)
    return target.publish(name, size, replace)


def abandon(target, source, path, version_id):
    """Drop what `target` holds of an unfinished upload of a version that was parked, skipped or forgotten (an S3
    multipart upload would be kept, and billed, until the bucket's lifecycle rule). A failure is logged, not raised:
    the refusal that parked the file says more."""
    target.set_context(source=source, version_id=version_id)
    try:
        target.discard(path)
    except Exception as error:  # noqa: BLE001 - said, and the worker goes on
        log.warning("%s: could not drop the unfinished upload of %s: %s", target.name, path, error)


def _verify_published(target, name, size, staged, sha256):
    """Check the published copy through the target: its size, and the first digest the target offers (both from one
    fingerprint() where the target offers a digest)."""
    algorithm = target.digests[0] if target.digests else None
    held, remote = target.fingerprint(name, algorithm) if algorithm else (target.stat(name), "")
    problem = None
    if held != size:
        problem = f"holds {held} bytes, expected {size}"
    elif algorithm:
        local = sha256 if algorithm == "sha256" else local_digest(staged, algorithm)
        if remote != local:
            problem = f"{algorithm} is {remote}, the staged copy's is {local}"
    if problem:
        if target.can_delete:
            target.delete(name)  # a damaged copy must not pass for this version (or block its name) later
        raise FileError(f"{target.location(name)} {problem} after publishing; sending again")


class SourceChanged(SkipFile):
    """The source no longer holds the version that was copied: it is not removed."""


def _register_other_bytes(job, now, checksum) -> str:
    """The source's own checksum shows other bytes under this version's size and time, which no listing shows (a
    vehicle lists no times: they come from the log's name). Register them as the next version, with this version's
    targets and removal (which skips this version's removal), and say so."""
    record = job.record
    targets = [task.device for task in record.tasks if task.kind == UPLOAD]
    created = job.ledger.register(record.source, targets, True, [(record.path, now.size, now.mtime, "", checksum)])
    newer = f"version {created[0].version}" if created else "its newest version"
    return (f"not removed: the source changed after the copy (other bytes under the same size and time: {checksum}, "
            f"the copy's {record.checksum}); registered as {newer}")


def remove(source, job) -> Done:
    """Delete job.record's version from its source, only if the source still holds that very version."""
    record = job.record
    name = device_name(record.path)
    try:
        now = source.stat(name)
    except Vanished:
        return Done()  # already gone: nothing left to remove
    changes = []
    if now.size != record.size:
        changes.append(f"{record.size} -> {now.size} bytes")
    if record.mtime >= 0 and now.mtime != record.mtime:
        changes.append("modified since")
    if not changes and record.checksum and source.checksum_algorithm:
        current = source.checksum(name)
        if current is not None and _checksum_text(current) != record.checksum:
            raise SourceChanged(_register_other_bytes(job, now, _checksum_text(current)))
    if changes:
        raise SourceChanged(f"not removed: the source changed after the copy ({', '.join(changes)}); "
                            "its new version is registered on the next scan")
    source.delete(name)
    return Done()
