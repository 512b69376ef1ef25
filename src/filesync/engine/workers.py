"""The loops that drive transfers: a Finder per source, and TaskWorkers per (task kind, device): as many as the device's
`transfers` option says, each with its own connection, sharing one DeviceShare (the link state, the probe, the
credentials backoff, and one version of a name at a time).

Workers ask the ledger for work when they start, whenever they are woken (an event said there is work) and at least
every poll_interval, so a missed message loses nothing. Idle, they sleep on an Event: no busy polling.
"""
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from filesync.engine import transfer
from filesync.engine.transfer import (Job, LeaseLost, StagedCopyLost, StagingFull, can_be_asked, check_staging_space,
                                      release_staged, staging_free_bytes)
from filesync import errors
from filesync.devices.base import listing_runs, run_digest
from filesync.errors import DeviceUnavailable, PermanentError, Stopping, TransientError, UnsafePath
from filesync.fsutil import FolderSyncs
from filesync.ledger.recovery import record_delivery
from filesync.ledger.store import DOWNLOAD, REMOVE, UPLOAD
from filesync.paths import check_relative, safe_name, staged_path

log = logging.getLogger(__name__)

STEPS = {DOWNLOAD: transfer.download, UPLOAD: transfer.upload, REMOVE: transfer.remove}
# Small files (under checkpoint_bytes) a worker claims together, and records together once done: one ledger
# transaction and one fsync per folder for the batch instead of for each file
BATCH = 8
FAILING_AFTER = 3  # steps failed in a row after which a loop shows as failing on the status (ERROR on /diagnostics)


def describe(error) -> str:
    """A one-line reason for the ledger and the FileEvent."""
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, (TransientError, PermanentError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LinkState:
    """Whether a device answers, and since when: shown on the status and used to pause work while it is down."""

    def __init__(self, clock=time.time, on_change=None):
        self._clock = clock
        self._on_change = on_change or (lambda: None)
        self.up = True
        self.since = clock()
        self.reason = ""
        self.fault = False  # down because the device answers wrongly, not because it is out of reach

    def set(self, up, reason="", fault=False):
        """Record the link state (on_change() hears of any difference); returns True when up/down changed."""
        changed = up != self.up
        if changed:
            self.up, self.since = up, self._clock()
        fault = fault and not up
        if changed or reason != self.reason or fault != self.fault:
            self.reason, self.fault = reason, fault
            self._on_change()
        return changed


class Wake(threading.Event):
    """The event that wakes a loop. Setting it when it is set already is skipped: a finished step wakes every task
    worker, a batch of small files does so for each file, and Event.set() takes a lock and notifies each time."""

    def set(self):
        """Wake the loop, unless a wake is pending already (nobody waits on a set event)."""
        if not self.is_set():
            super().set()


class Loop:
    """A thread that runs step() until stopped, sleeping poll_interval (or until woken) when there was nothing to do."""

    def __init__(self, name, poll_interval):
        self.name = name
        self.poll_interval = poll_interval
        self.wake = Wake()
        self.stop_event = threading.Event()
        self.thread = None
        # called whenever what the status shows of this loop changes (link, transfer, held back), so a node reports
        # changes as they happen instead of looking every second; set by whoever reports
        self.notify = lambda: None
        self.failures = 0  # steps failed in a row
        self.failure = ""  # why the last one failed
        self.failing_since = 0.0  # wall-clock time of the first failure in a row

    def start(self):
        """Run in a daemon thread."""
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()

    def stop(self):
        """Ask the loop to end after its current step."""
        self.stop_event.set()
        self.wake.set()

    def join(self, timeout=None):
        """Wait for the thread."""
        if self.thread:
            self.thread.join(timeout)

    def run(self):
        """Step until stopped."""
        while not self.stop_event.is_set():
            try:
                busy = self.step()
            except Stopping:  # the process shuts down: no failure
                busy = False
            except Exception as error:  # a bug, or a ledger that answers with an error: keep the loop, try again later
                self._step_failed(error)
                busy = False
            else:
                self._step_worked()
            if not busy:
                self.wake.wait(self.poll_interval)
                self.wake.clear()

    def failing(self) -> str:
        """Why this loop's steps fail, once FAILING_AFTER of them failed in a row; empty otherwise."""
        if self.failures < FAILING_AFTER:
            return ""
        return f"{self.name}: {self.failures} steps failed in a row: {self.failure}"

    def _step_failed(self, error):
        reason = describe(error)
        if reason != self.failure or not self.failures:  # in full once; failing() keeps the count on the status
            log.error("%s: step failed: %s", self.name, reason, exc_info=error)
        if not self.failures:
            self.failing_since = time.time()
        self.failures += 1
        self.failure = reason
        if self.failures == FAILING_AFTER:
            self.notify()

    def _step_worked(self):
        if self.failures >= FAILING_AFTER:
            log.info("%s: a step works again after %d failed", self.name, self.failures)
            self.notify()
        self.failures, self.failure = 0, ""

    def step(self) -> bool:
        """Do one unit of work; return True if there may be more right away."""
        raise NotImplementedError


class DeviceShare:
    """What the workers of one (task kind, device) share: whether the device answers (one LinkState, probed by one
    worker at a time, so N workers never each hammer a dead server), the backoff after refused credentials, and the
    turns on a name: two versions of one path are never moved on one device at once (the check that a final name is
    free and the rename that takes it would race), nor is one version a sibling still holds after its lease ran out.
    And room on staging: a download starts beside others only when staging holds what they all still have to write
    above its floor (partial copies all waiting for room, none complete to upload and free it, would wait forever)."""

    def __init__(self):
        self.workers = []
        self.link = LinkState(on_change=self._notify)
        self.link_retry = 0  # failed probes in a row, for the probe's backoff
        self.next_probe = 0.0  # monotonic time before which no worker probes again
        self.probing = threading.Lock()
        self.refusals, self.refused_until = 0, 0.0  # credentials refused in a row, and until when to wait
        self._room = threading.Lock()
        self._turns = threading.Condition()
        self._queues = {}  # path -> [(file id, worker)] in the order they asked; the first one moves

    def _notify(self):
        for worker in self.workers:
            worker.notify()

    def wake_all(self):
        """Wake every worker of the device (it answers again)."""
        for worker in self.workers:
            worker.wake.set()

    def start(self, worker, job, settings) -> bool:
        """Make `job` the worker's current one; False for a download that staging has no room for beside the
        downloads under way (with none under way, it starts and waits at the floor as it copies)."""
        with self._room:
            others = [w.current for w in self.workers if w is not worker and w.current is not None]
            if job.task.kind == DOWNLOAD and settings.staging_min_free_bytes and others:
                needed = sum(max(0, j.record.size - j.done) for j in others + [job])
                if staging_free_bytes(settings.staging_dir) - settings.staging_min_free_bytes < needed:
                    return False
            worker.current = job
            return True

    def take_turn(self, path, entry, stop_event, keep_lease, interval) -> bool:
        """Wait until `entry` (file id, worker) is the first on `path`, calling keep_lease() every `interval` seconds
        meanwhile; False (and out of the queue) when stopped or keep_lease() says the task was taken."""
        with self._turns:
            self._queues.setdefault(path, []).append(entry)
        try:
            while True:
                with self._turns:
                    if self._queues[path][0] == entry:
                        return True
                    self._turns.wait(interval)
                    if self._queues[path][0] == entry:
                        return True
                if stop_event.is_set() or not keep_lease():
                    break
        except BaseException:  # the ledger did not answer the renewal: never leave the queue blocked
            self.end_turn(path, entry)
            raise
        self.end_turn(path, entry)
        return False

    def end_turn(self, path, entry):
        """Leave `path`'s queue; the next in it moves."""
        with self._turns:
            queue = self._queues[path]
            queue.remove(entry)
            if not queue:
                del self._queues[path]
            self._turns.notify_all()


@dataclass
class Finish:
    """The outcome of one task of a batch, recorded with the others' (Ledger.finish's arguments)."""
    record: object
    outcome: str
    reason: str = ""
    done: transfer.Done = field(default_factory=transfer.Done)
    delay: Optional[float] = None


class TaskWorker(Loop):
    """Claims tasks of one kind on one device (a source or a target) and carries them out one at a time; the workers
    of one device share `share` (a DeviceShare), each uses its own `device` object (or its own connections of it)."""

    def __init__(self, kind, device, ledger, worker, settings, announce=None, on_progress=None, share=None):
        super().__init__(f"{kind}:{device.name}" + (worker[worker.rindex("#"):] if "#" in worker else ""),
                         settings.poll_interval)
        self.kind, self.device, self.ledger = kind, device, ledger
        self.worker, self.settings = worker, settings  # `worker` is the ledger's lease owner: unique per worker
        self.announce = announce or (lambda record, task=None, done=None: None)
        self.on_progress = on_progress
        self.share = share or DeviceShare()
        self.share.workers.append(self)
        self.link = self.share.link
        self.current = None  # the Job in progress, for the status display
        self.last_location = ("", 0.0)  # where the last finished upload landed, and when (for the status)
        self.held_back = ""  # why this worker does not take work although the device answers (staging space)
        self._forgotten = queue.SimpleQueue()  # (source, path, file id) of forgotten versions, for uploads to drop
        self._staging_syncs = FolderSyncs()  # staging folders a batch of downloads wrote new names into

    def forget(self, source, path, file_id):
        """A version was forgotten (`filesync forget`): an upload worker drops what its target holds of its upload
        at its next step (from its own thread, the one that uses the device). Any thread may call it."""
        if self.kind == UPLOAD:
            self._forgotten.put((source, path, file_id))
            self.wake.set()

    def step(self):
        if not self.link.up and not self._probe():
            return False
        while not self._forgotten.empty():
            transfer.abandon(self.device, *self._forgotten.get())
        if self.kind == DOWNLOAD and not self._staging_has_room():
            return False
        claims = self._claim()
        if not claims:
            return False
        self._staging_syncs.hold()
        if self.kind == UPLOAD:
            self.device.folder_syncs.hold()
        finishes = []  # Finish of each task carried out (or given back), recorded together after the batch
        busy = False
        claimed_at = time.monotonic()
        try:
            for index, (record, task) in enumerate(claims):
                if index and not self._batch_goes_on(claimed_at):
                    finishes += [Finish(record, "release") for record, _task in claims[index:]]
                    break
                if task is None or task.state != "active" or task.owner != self.worker:
                    # never act (above all, never delete) on a claim that is not ours: a crossed or stale reply
                    log.error("%s: the ledger answered a claim with a task this worker does not hold: %s", self.name,
                              task)
                    continue
                entry = (record.id, self.worker)
                renew = functools.partial(self.ledger.checkpoint, record.id, self.kind, self.device.name, self.worker,
                                          task.offset, self.settings.lease_seconds)
                if not self.share.take_turn(record.path, entry, self.stop_event, renew,
                                            self.settings.lease_seconds / 3):
                    break  # stopped, or the task was taken: the rest of the batch goes back when its lease runs out
                try:
                    busy = self._carry_out(record, task, finishes, claimed_at)
                finally:
                    self.share.end_turn(record.path, entry)
        finally:
            self._record(finishes)
        return busy

    def _claim(self):
        """[(record, task)] this worker takes now: a batch of small files where the ledger can claim them together and
        every step of one can be done twice without harm (a copy done but not yet recorded when the process dies is
        found staged, an upload found on the target), else at most one task."""
        batch = hasattr(self.ledger, "claim_batch") and (
            self.kind == DOWNLOAD or (self.kind == UPLOAD and can_be_asked(self.device)))
        if batch:
            return self.ledger.claim_batch(self.kind, self.device.name, self.worker, self.settings.lease_seconds,
                                           BATCH, self.settings.checkpoint_bytes, len(self.share.workers))
        claimed = self.ledger.claim(self.kind, self.device.name, self.worker, self.settings.lease_seconds)
        return [claimed] if claimed is not None else []

    def _batch_goes_on(self, claimed_at):
        """Whether the next task of a batch starts: not while stopping or while the device is down, nor once half the
        batch's lease has passed (the rest goes back to be claimed again with a lease of its own)."""
        return (not self.stop_event.is_set() and self.link.up
                and time.monotonic() - claimed_at < self.settings.lease_seconds / 2)

    def _carry_out(self, record, task, finishes, claimed_at):
        """Do the task claimed at `claimed_at` (monotonic) and add its outcome to `finishes`; True if there may be more
        work right away."""
        job = Job(self.ledger, self.worker, self.settings, record, task, self._progress, self._staging_syncs,
                  claimed_at)
        if not self.share.start(self, job, self.settings):
            # given back untouched until a sibling's download ends (it wakes this worker)
            finishes.append(Finish(record, "release"))
            return False
        self.notify()
        self.announce(record, task, task.offset)
        done, outcome, reason, delay = transfer.Done(), "done", "", None
        try:
            done = STEPS[self.kind](self.device, job)
        except LeaseLost as error:
            log.warning("%s: %s", self.name, error)
            return True
        except Stopping:  # the task stays claimed; its lease runs out and it goes on from its checkpoint
            raise
        except StagingFull as error:
            outcome, reason = "wait", str(error)
            self._hold_back(str(error))
        except StagedCopyLost as error:
            outcome, reason = ("park" if task.attempts + 1 >= self.settings.max_attempts else "restage"), str(error)
        except Exception as error:
            outcome, reason = self._outcome(error, task, record)
        finally:
            self.current = None
            self.notify()
            if self.kind == DOWNLOAD:
                self.share.wake_all()  # room on staging for a sibling that gave its download back
        if outcome != "wait" and self.link.up:
            # the link was up when this task was claimed; a sibling that saw the device go away meanwhile is not
            # contradicted by a task that began before
            self.share.refusals = 0
        if reason:
            log.warning("%s: %s %s: %s (%s)", self.name, self.kind, record.path, reason, outcome)
        if self.kind == UPLOAD and outcome in ("park", "skip"):
            # before the ledger says so: a file shown parked has no multipart upload left open (billed) behind it
            transfer.abandon(self.device, record.source, record.path, record.id)
        finishes.append(Finish(record, outcome, reason, done, delay))
        return outcome == "done"

    def _record(self, finishes):
        """Make what the batch's steps wrote durable (one fsync per folder), then record their outcomes in the ledger
        (in one transaction where there are several), then act on what the ledger answered."""
        if not finishes:
            return
        self._staging_syncs.settle()
        if self.kind == UPLOAD:
            self.device.folder_syncs.settle()
        calls = [(f.record.id, self.kind, self.device.name, self.worker, f.outcome, f.reason, f.done.location,
                  f.delay, f.done.sha256, f.done.checksum) for f in finishes]
        answers = self.ledger.finish_batch(calls) if len(calls) > 1 else [self.ledger.finish(*calls[0])]
        for finish, finished in zip(finishes, answers):
            self._recorded(finish, finished)

    def _recorded(self, finish, finished):
        """What follows a recorded finish: a delivered upload is noted (where the target cannot be asked) and its
        staged copy released when every target holds it; announced. (An upload given up was dropped from the target
        before its finish was recorded.)"""
        record, outcome, done = finish.record, finish.outcome, finish.done
        if finished is None:
            return
        if self.kind == UPLOAD and outcome == "done":
            self.last_location = (done.location, time.time())
            self.notify()
            if not can_be_asked(self.device):  # Flight Review, HTTP: a rebuilt ledger must not post it again
                record_delivery(staged_path(self.settings.staging_dir, record.source, record.id),
                                self.device.name, done.location)
        if self.kind == UPLOAD and finished.state in ("uploaded", "removed", "skipped"):
            release_staged(self.settings, finished)  # every target holds it (or takes none): retention decides
        self.announce(finished, finished.task(self.kind, self.device.name), None)

    def _outcome(self, error, task, record):
        """The ledger outcome and reason for a failed step, from errors.action's table."""
        verb = errors.action(error)
        reason = describe(error)
        if verb == errors.WAIT:
            self._link_down(error)
            return "wait", reason
        if verb == errors.SKIP:
            return "skip", reason
        if verb == errors.PARK:
            return "park", reason
        if verb == errors.RETRY_FILE:
            return ("park" if task.attempts + 1 >= self.settings.max_attempts else "retry"), reason
        if not isinstance(error, TransientError):  # unexpected: retried like a transient failure, logged in full once
            log.error("%s: %s of %s failed", self.name, self.kind, record.path, exc_info=error)
        return "retry", reason

    def _staging_has_room(self):
        """False (and held_back says why) while staging is under its free-space floor; uploads meanwhile free it."""
        try:
            check_staging_space(self.settings)
        except StagingFull as error:
            self._hold_back(str(error))
            return False
        if self.held_back:
            log.info("%s: staging has room again; downloads go on", self.name)
            self.held_back = ""
            self.notify()
        return True

    def _hold_back(self, reason):
        if not self.held_back:
            log.warning("%s: downloads wait: %s", self.name, reason)
        held_back = f"downloads wait: {reason}"
        if held_back != self.held_back:
            self.held_back = held_back
            self.notify()

    def _progress(self, job, offset):
        if self.on_progress:
            self.on_progress(job, offset)

    def _link_down(self, error):
        """Stop claiming work for this device until probe() says it answers; the task goes back unharmed."""
        went_down = self.link.set(False, describe(error), fault=isinstance(error, errors.DeviceFault))
        if went_down:
            log.warning("%s: %s is unreachable: %s; waiting for it", self.name, self.device.name, describe(error))
            self.share.next_probe = 0.0
        if isinstance(error, errors.AuthRefused) and went_down:
            # a probe that needs no credentials (an HTTP server's root) cannot tell when they are fixed: the work
            # itself is the test, tried again after a backoff that grows with every refusal (counted once for the
            # siblings refused together)
            share = self.share
            share.refusals += 1
            share.refused_until = time.monotonic() + min(
                self.settings.retry_cap, self.settings.retry_base * 2 ** min(share.refusals - 1, 30))
        self.device.close()

    def _probe(self):
        """Whether the device answers again. One worker of the device probes at a time, with a backoff between probes;
        the others wait for its answer."""
        share = self.share
        if not share.probing.acquire(blocking=False):
            self.stop_event.wait(min(1.0, self.settings.poll_interval))  # a sibling is probing
            return self.link.up
        try:
            if self.link.up:  # a sibling found it up meanwhile
                return True
            wait = max(share.next_probe, share.refused_until) - time.monotonic()
            if wait > 0:
                self.stop_event.wait(min(wait, self.settings.poll_interval))
                return False
            try:
                self.device.probe()
            except DeviceUnavailable as error:
                self.link.set(False, describe(error), fault=isinstance(error, errors.DeviceFault))  # still down
                share.link_retry += 1
                share.next_probe = time.monotonic() + min(self.settings.poll_interval,
                                                          0.5 * 2 ** min(share.link_retry, 6))
                return False
            except Exception as error:  # a probe that fails otherwise says nothing about reachability: try the work
                log.debug("%s: probe: %s", self.name, error)
            if share.refused_until > time.monotonic():
                return False
            log.info("%s: %s is reachable again", self.name, self.device.name)
            self.link.set(True)
            share.link_retry = 0
        finally:
            share.probing.release()
        share.wake_all()
        return True


class ListingFailed(Exception):
    """A source's listing failed (its cause is the device's error)."""


class Finder(Loop):
    """Lists one source every scan_interval (or when woken) and records new or changed files in the ledger.

    Names are recorded in their safe form (filesync.paths.safe_name). A name that still cannot be carried ('..', too
    long) or that the device could not serve is recorded as a failed file with the reason, so it shows in
    `filesync ls failed` while the other files go on. The listing is registered run by run as it comes
    (devices.base.listing_runs); a run registered whole is remembered as one number, so listing it again unchanged
    costs the ledger nothing and memory follows the number of runs, not of files. The memory is dropped every
    RESCAN_EVERY scans; the run of a file the ledger forgot (forget()) is registered again.
    """

    RESCAN_EVERY = 30

    def __init__(self, source, pipeline, ledger, settings, announce=None):
        super().__init__(f"find:{source.name}", settings.scan_interval)
        self.source, self.pipeline, self.ledger = source, pipeline, ledger
        self.announce = announce or (lambda record, task=None, done=None: None)
        self.link = LinkState(on_change=lambda: self.notify())
        self.scans = 0
        self._known = set()  # digests of the runs registered whole at the last scan
        self._forgotten = set()  # safe paths forget() named since the last scan
        self._forget_lock = threading.Lock()
        # safe path -> the problem logged for it: logged once, not again at each full rescan (the status's last
        # error would otherwise never clear while a file with a bad name stays on the source)
        self._reported = {}

    def forget(self, path=None):
        """Register `path` (every file when None) again at the next scan, if the source still holds it."""
        with self._forget_lock:
            if path is None:
                self._known = set()
                self._reported.clear()
            else:
                self._forgotten.add(path)
                self._reported.pop(path, None)
        self.wake.set()

    def step(self):
        if self.scans % self.RESCAN_EVERY == 0:
            self._known = set()
        with self._forget_lock:
            forgotten, self._forgotten = self._forgotten, set()
        known = set()
        try:
            for run in self._runs():
                self._register(run, forgotten, known)
        except BaseException as error:
            with self._forget_lock:
                self._forgotten |= forgotten  # cut short: what forget() named is registered at the next scan
            if not isinstance(error, ListingFailed):
                raise
            self._listing_failed(error.__cause__)
            return False
        if self.link.set(True):
            log.info("%s: %s is reachable again", self.name, self.source.name)
        self._known = known
        self.scans += 1
        return False

    def _runs(self):
        """The source's listing in runs (listing_runs); a failure of the listing itself raises ListingFailed, so that
        it is told from a failure to register."""
        try:
            yield from listing_runs(self.source.list())
        except Exception as error:
            raise ListingFailed(str(error)) from error

    def _listing_failed(self, error):
        """Whatever the reason, the source is shown down with it, never a silent stall."""
        fault = not isinstance(error, DeviceUnavailable) or isinstance(error, errors.DeviceFault)
        reason = f"listing failed: {describe(error)}" if fault else describe(error)
        if self.link.set(False, reason, fault=fault):
            log.warning("%s: %s: %s", self.name, self.source.name, reason)
        if not isinstance(error, TransientError):
            log.error("%s: listing %s failed", self.name, self.source.name, exc_info=error)
        self.source.close()

    def _register(self, run, forgotten, known):
        """Register a run's complete files, unless the same run was registered whole at the last scan; add its digest
        to `known` once it is registered whole (a run with a file still being written is registered again)."""
        entries = []
        for found in run:
            if not found.complete:
                continue
            path, problem = safe_name(found.path), found.problem
            if not problem:
                try:
                    check_relative(path)
                except UnsafePath as error:
                    problem = str(error)
            entries.append((path, found.size, found.mtime, problem))
        whole = len(entries) == len(run)
        digest = run_digest(entries) if whole else None
        if digest in self._known and not any(entry[0] in forgotten for entry in entries):
            known.add(digest)
            return
        for path, _size, _mtime, problem in entries:
            if problem and self._reported.get(path) != problem:
                log.error("%s: %s", self.name, problem)
                self._reported[path] = problem
            elif not problem:
                self._reported.pop(path, None)
        if entries:
            created = self.ledger.register(self.source.name, self.pipeline.targets, self.pipeline.delete_after_upload,
                                           entries)
            for record in created:
                self.announce(record, None, 0)
        if whole:
            known.add(digest)
