"""Everything in one process, without ROS: the ledger, a finder per source and a worker per task kind and device.

Used by the library's tests and by anyone who wants filesync without a ROS master. The ROS nodes wire the same
pieces to topics and services instead.
"""
import logging
import os
import time

from filesync.config import load_config
from filesync.devices import create_source, create_target
from filesync.devices.base import DeviceContext
from filesync.engine.transfer import Settings
from filesync.engine.workers import DeviceShare, Finder, TaskWorker
from filesync.ledger.database_thread import GroupedLedger
from filesync.ledger.recovery import discard_staged, open_ledger, rebuild_from_staging
from filesync.ledger.store import DOWNLOAD, REMOVE, UPLOAD
from filesync.lock import LeaseTable

log = logging.getLogger(__name__)


def worker_names(base, transfers):
    """The lease owner names of a device's `transfers` workers: `base` for the first (as when there was one worker per
    device, so a ledger's active tasks go back to it after an upgrade), then base#2, base#3..."""
    return [base] + [f"{base}#{number}" for number in range(2, transfers + 1)]


def build_workers(config, ledger, worker_prefix, context, announce=None, kinds=(DOWNLOAD, UPLOAD, REMOVE),
                  finders=True, on_progress=None):
    """The loops for `config`: finders (if asked) and task workers of the given kinds, not yet started.

    A source's or target's `transfers` option says how many workers it gets. A source's download workers share its one
    device object with its finder (sources are thread-safe; ftp and sftp hold a connection per thread); each upload
    worker gets its own target object (a target holds one connection and the version set_context() named)."""
    settings = Settings.from_config(config)
    loops = []
    used_sources = {p.source for p in config.pipelines}
    # A source serves its finder and its download workers from several threads: devices must be thread-safe.
    sources = {name: create_source(name, config.sources[name], context) for name in used_sources}
    if finders:
        loops += [Finder(sources[p.source], p, ledger, settings, announce) for p in config.pipelines]
    if DOWNLOAD in kinds:
        for name in sorted(sources):
            share = DeviceShare()
            loops += [TaskWorker(DOWNLOAD, sources[name], ledger, worker, settings, announce, on_progress, share)
                      for worker in worker_names(f"{worker_prefix}/download/{name}",
                                                 sources[name].options["transfers"])]
    if REMOVE in kinds:
        removers = sorted({p.source for p in config.pipelines if p.delete_after_upload})
        # its own device object: a source connection is not shared between threads; one remover per source
        loops += [TaskWorker(REMOVE, create_source(name, config.sources[name], context), ledger,
                             f"{worker_prefix}/remove/{name}", settings, announce) for name in removers]
    if UPLOAD in kinds:
        for name in sorted({t for p in config.pipelines for t in p.targets}):
            first = create_target(name, config.targets[name], context)
            devices = [first] + [create_target(name, config.targets[name], context)
                                 for _ in range(first.options["transfers"] - 1)]
            for device in devices[1:]:
                device.serve_with(first)
            share = DeviceShare()
            loops += [TaskWorker(UPLOAD, device, ledger, worker, settings, announce, on_progress, share)
                      for device, worker in zip(devices, worker_names(f"{worker_prefix}/upload/{name}",
                                                                      len(devices)))]
    return loops


class LocalRunner:
    """Run a whole configuration in this process. `config` is a mapping like the YAML file."""

    def __init__(self, config, worker_prefix="local"):
        self.config = load_config(config)
        self.ledger, moved_aside = open_ledger(self.config.database, retry_base=self.config.retry_base,
                                               retry_cap=self.config.retry_cap)
        if moved_aside:
            rebuild_from_staging(self.ledger, self.config)
        lock_path = os.path.join(os.path.dirname(self.config.database), "leases.json")
        self.context = DeviceContext(lock=LeaseTable(lock_path), owner=worker_prefix)
        # the loops' calls share commits when they coincide (a download's finish beside an upload's claim)
        self._grouped = GroupedLedger(self.ledger)
        self.loops = build_workers(self.config, self._grouped, worker_prefix, self.context, self._announce)
        self._task_workers = [loop for loop in self.loops if isinstance(loop, TaskWorker)]
        self._started = False

    def _announce(self, record, task=None, done=None):
        # A new file or a finished step may be work for a task worker: wake those now. Not for a step that starts (a
        # task with its offset): that leaves nothing new to claim, and every worker woken for it claimed in vain (a
        # ledger transaction each). Not the finders: a state change tells them nothing new about their source, and a
        # finder woken per change lists the whole source again each time (O(N^2) listing for N files); they list
        # every scan_interval, or at once for forget().
        if task is not None and done is not None:
            return
        for loop in self._task_workers:
            loop.wake.set()

    def start(self):
        """Start every loop."""
        if not self._started:
            for loop in self.loops:
                loop.start()
            self._started = True

    def settled(self):
        """True when every finder has listed its source once since start and no task is waiting or moving."""
        finders = [loop for loop in self.loops if isinstance(loop, Finder)]
        if any(f.scans == 0 for f in finders):
            return False
        return self.ledger.work_left() == 0

    def run_until_settled(self, timeout=120.0):
        """Start (if needed) and wait until settled(); raises TimeoutError with what is left."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self.settled():
            if time.monotonic() > deadline:
                pending = [(r.path, r.state, r.error) for r in self.ledger.files() if r.state not in
                           ("uploaded", "removed", "failed", "skipped")]
                raise TimeoutError(f"not settled after {timeout} s: {pending[:10]}")
            time.sleep(0.1)
        return True

    def forget(self, file_id):
        """Drop a file from the ledger and its staged copy; its finder lists it again at the next scan (as `filesync forget`
        does)."""
        record = self.ledger.get(file_id)
        if record is None or not self.ledger.forget(file_id):
            return False
        discard_staged(self.config.staging_dir, record)
        for loop in self.loops:
            if isinstance(loop, Finder) and loop.source.name == record.source:
                loop.forget(record.path)
            elif isinstance(loop, TaskWorker):  # its unfinished uploads are dropped
                loop.forget(record.source, record.path, record.id)
        return True

    def close(self):
        """Stop the loops, close the devices and the ledger."""
        for loop in self.loops:
            loop.stop()
        for loop in self.loops:
            loop.join(30)
        for loop in self.loops:
            (loop.device if isinstance(loop, TaskWorker) else loop.source).close()
        self._grouped.stop()
        self.ledger.close()
