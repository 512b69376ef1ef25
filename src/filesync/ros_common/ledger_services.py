"""The ledger node's service handlers, one ledger call each, for both ROS generations (each adapter serves them)."""
import functools
import logging
import sqlite3
import threading
import time

from filesync.ledger.database_thread import DatabaseThread
from filesync.ledger.recovery import discard_staged

WRITES = {"register", "claim", "claim_batch", "checkpoint", "finish", "finish_batch", "retry", "forget"}
QUERY_LIMIT = 1000
ERROR_LOG_PERIOD = 10.0  # seconds between two log lines saying the ledger cannot be written
log = logging.getLogger("filesync.ledger")


def _claimed_nothing(reply):
    """Whether `reply` is a claim's (one or a batch) that found no task ready."""
    return getattr(reply, "found", True) is False or (hasattr(reply, "tasks") and len(reply.tasks) == 0)


def _changes_state(handler):
    """Mark a handler that may change a file's state: LedgerServices.changes goes up once the ledger committed
    (a claim that found nothing changed nothing: idle workers asking for work cost the status no recount)."""
    @functools.wraps(handler)
    def wrapper(self, request):
        reply = None
        try:
            reply = handler(self, request)
            return reply
        finally:
            if not _claimed_nothing(reply):
                with self._changes_lock:
                    self.changes += 1
    return wrapper


class LedgerServices:
    """The service handlers, each one ledger call; the ledger commits before the reply goes out."""

    def __init__(self, generation, ledger, staging_dir, announce=lambda record: None):
        self.generation = generation  # filesync.ros_common.generation.Generation: the messages to answer with
        self.ledger, self.staging_dir = ledger, staging_dir
        self.announce = announce  # a retried file wakes the workers; a forgotten one, the finder lists it again
        # every ledger call runs on this one thread; the ROS client's threads only read requests and
        # write replies
        self._database = DatabaseThread(together=ledger.together)
        # counts every call that may change a file's state (bumped after the ledger committed), so counts() queries
        # the ledger only after one: idle, the status costs no database reads
        self.changes = 0
        self._changes_lock = threading.Lock()
        self._counts = (-1, None)
        self.ledger_error = ""
        self._error_logged = -ERROR_LOG_PERIOD

    def _call(self, method, *args):
        """ledger.method(*args) on the database thread; returns its result once it committed (or raises its error).

        A database that cannot be written (full disk, read-only, locked) fails the call, so the caller keeps its work
        and asks again; the reason goes on the status (ledger_error) until a write works again.
        """
        try:
            result = self._database.call(getattr(self.ledger, method), *args)
        except sqlite3.Error as error:
            self.ledger_error = f"the ledger {self.ledger.path} cannot be written: {error}"
            if time.monotonic() - self._error_logged >= ERROR_LOG_PERIOD:
                self._error_logged = time.monotonic()
                log.error(self.ledger_error)
            raise
        if method in WRITES:
            self.ledger_error = ""
        return result

    def _reply(self, service, **fields):
        return self.generation.make(self.generation.response(service), **fields)

    def _record(self, record):
        return self.generation.record_to_msg(record) if record else self.generation.msg.FileRecord()

    def close(self):
        """Finish the calls under way and stop the database thread."""
        self._database.stop()

    @_changes_state
    def register(self, request):
        changed = self._call("register", request.source, request.targets, request.delete_after_upload,
                             [(f.path, f.size, f.mtime, f.problem, f.checksum) for f in request.files])
        return self._reply("Register", changed=[self.generation.record_to_msg(r) for r in changed])

    @_changes_state
    def claim(self, request):
        claimed = self._call("claim", request.kind, request.device, request.worker, request.lease_seconds)
        if claimed is None:
            return self._reply("Claim", found=False)
        record, task = claimed
        return self._reply("Claim", found=True, file=self.generation.record_to_msg(record),
                           task=self.generation.task_to_msg(task))

    @_changes_state
    def claim_batch(self, request):
        """Ledger.claim_batch: a repeated request gets back first the tasks the worker holds, as claim's does."""
        claimed = self._call("claim_batch", request.kind, request.device, request.worker, request.lease_seconds,
                             request.limit, request.small_bytes, request.workers)
        return self._reply("ClaimBatch", files=[self.generation.record_to_msg(record) for record, _ in claimed],
                           tasks=[self.generation.task_to_msg(task) for _, task in claimed])

    def checkpoint(self, request):
        return self._reply("Checkpoint", held=self._call("checkpoint", request.file_id, request.kind, request.device,
                                                         request.worker, request.offset, request.lease_seconds,
                                                         request.note if request.set_note else None))

    @_changes_state
    def finish(self, request):
        record = self._call("finish", request.file_id, request.kind, request.device, request.worker, request.outcome,
                            request.error, request.location, None if request.delay < 0 else request.delay,
                            request.sha256, request.checksum)
        return self._reply("Finish", held=record is not None, file=self._record(record))

    @_changes_state
    def finish_batch(self, request):
        """Ledger.finish_batch: each outcome as finish records it (so a repeat answers what the first recorded)."""
        records = self._call("finish_batch", [
            (o.file_id, o.kind, o.device, o.worker, o.outcome, o.error, o.location, None if o.delay < 0 else o.delay,
             o.sha256, o.checksum) for o in request.outcomes])
        return self._reply("FinishBatch", held=[record is not None for record in records],
                           files=[self._record(record) for record in records])

    def query(self, request):
        if request.file_id:
            found = [self._call("get", request.file_id)]
        elif request.path:
            found = [self._call("find", request.source, request.path)]
        else:
            found = self._call("files", request.state, request.source, request.after_id,
                               min(request.limit or QUERY_LIMIT, QUERY_LIMIT))
        return self._reply("Query", files=[self.generation.record_to_msg(r) for r in found if r is not None])

    @_changes_state
    def manage(self, request):
        if request.action == "retry":
            record = self._call("retry", request.file_id)
            ok = record is not None
            if ok:
                self.announce(record)
            message = f"file {request.file_id} is back in line" if ok else f"no file {request.file_id}"
        elif request.action == "forget":
            forgotten = self._call("get", request.file_id)
            record = None
            ok = forgotten is not None and self._call("forget", request.file_id)
            message = f"file {request.file_id} forgotten" if ok else f"no file {request.file_id}"
            if ok:
                discard_staged(self.staging_dir, forgotten)
                forgotten.state = "forgotten"
                self.announce(forgotten)
        else:
            ok, record, message = False, None, f"unknown action {request.action!r} (retry or forget)"
        return self._reply("Manage", ok=ok, message=message, file=self._record(record))

    def counts(self, _request):
        """Files and bytes per (source, state) and parked tasks per device; cached until the next change."""
        changes, cached = self._counts
        if changes != self.changes or cached is None:
            changes = self.changes  # read first: a change during the queries makes the next call count again
            parked = {}
            after = 0
            while True:  # parked files are few; page through them anyway
                failed = self._call("files", "failed", "", after, QUERY_LIMIT)
                for record in failed:
                    for task in record.tasks:
                        if task.state == "parked":
                            key = ("target" if task.kind == "upload" else "source", task.device)
                            parked[key] = parked.get(key, 0) + 1
                if len(failed) < QUERY_LIMIT:
                    break
                after = failed[-1].id
            to_copy = sorted(self._call("bytes_to_copy").items())
            moving = sorted(self._call("copies_under_way"))
            cached = self._reply(
                "Counts",
                counts=[self.generation.make(self.generation.msg.StateCount, source=source, state=state, files=files,
                                             bytes=size)
                        for (source, state), (files, size) in sorted(self._call("counts").items())],
                copy_sources=[source for source, _ in to_copy], copy_bytes=[size for _, size in to_copy],
                moving_file_ids=[file_id for file_id, _, _ in moving], moving_kinds=[kind for _, kind, _ in moving],
                moving_devices=[device for _, _, device in moving],
                parked_roles=[role for role, _ in parked], parked_devices=[device for _, device in parked],
                parked_files=list(parked.values()))
            self._counts = (changes, cached)
        cached.ledger_error = self.ledger_error
        return cached
