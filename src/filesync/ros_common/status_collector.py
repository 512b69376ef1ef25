"""The status node's work for both ROS generations: it collects the worker nodes' reports, asks the ledger for its
grouped counts (cached there until something changes, so an idle system reads nothing) and, when the counts or an
event say they changed, for the parked files and their reasons; then builds one status and its diagnoses."""
import logging
import threading
import time

from filesync import status as status_lib
from filesync.engine.transfer import staging_free_bytes
from filesync.ros_common.convert import report_from_msg

PARKED_REFRESH = 60.0  # seconds after which the parked files are asked for again even if nothing said they changed
REPORT_STALE = 10.0  # seconds without a report after which a worker node counts as gone
log = logging.getLogger("filesync.status")


class StatusCollector:
    """The status node without its transport: a generation's node gives _call(service, **fields) (service: "counts" or
    "query"), CALL_ERRORS (what a failed call raises) and hands in the reports and events it receives."""

    CALL_ERRORS = ()

    def __init__(self, config):
        self.config = config
        self.builder = status_lib.StatusBuilder(config)
        self.reports = {}  # node -> (received monotonic time, status.WorkerReport)
        self._lock = threading.Lock()
        self.counts, self.parked, self.ledger_ok, self.ledger_error = {}, {}, False, ""
        self.to_copy, self.moving = {}, set()
        self.parked_files = []  # status.ParkedFile, from the ledger
        self._parked_stale = True  # ask the ledger for the parked files at the next tick
        self._parked_at = 0.0
        self.diagnoses = {}

    def _call(self, service, **fields):
        raise NotImplementedError

    def _on_report(self, message):
        with self._lock:
            self.reports[message.node] = (time.monotonic(), report_from_msg(message))

    def _on_event(self, event):
        """A file was parked, or a parked one changed (retried, forgotten by a person through another tool)."""
        if event.state == "failed" or event.task_state == "parked" or \
                any(parked.file_id == event.file_id for parked in self.parked_files):
            self._parked_stale = True

    def _fetch_parked(self):
        """The first PARKED_SHOWN failed files with their reasons, from the ledger."""
        reply = self._call("query", state="failed", limit=status_lib.PARKED_SHOWN)
        self.parked_files = [status_lib.parked_file(record) for record in reply.files]
        self._parked_stale, self._parked_at = False, time.monotonic()

    def _fetch_counts(self):
        try:
            reply = self._call("counts")
        except self.CALL_ERRORS as error:
            if self.ledger_ok:
                log.warning(f"status: the ledger does not answer ({error}); showing the last counts")
            self.ledger_ok = False
            return
        self.ledger_ok, self.ledger_error = True, reply.ledger_error
        counts = {(c.source, c.state): (c.files, c.bytes) for c in reply.counts}
        if counts != self.counts or time.monotonic() - self._parked_at > PARKED_REFRESH:
            self._parked_stale = True
        self.counts = counts
        self.to_copy = dict(zip(reply.copy_sources, reply.copy_bytes))
        self.moving = set(zip(reply.moving_file_ids, reply.moving_kinds, reply.moving_devices))
        self.parked = {(role, device): files for role, device, files in
                       zip(reply.parked_roles, reply.parked_devices, reply.parked_files)}
        if self._parked_stale:
            try:
                self._fetch_parked()
            except self.CALL_ERRORS as error:
                log.warning(f"status: the ledger's parked files could not be read ({error})")

    def collect(self):
        """Ask the ledger, then build one status and its diagnoses (self.diagnoses, by name)."""
        self._fetch_counts()
        now = time.monotonic()
        with self._lock:
            for node in [n for n, (received, _) in self.reports.items() if now - received > REPORT_STALE]:
                del self.reports[node]
            reports = [report for _, report in self.reports.values()]
        try:
            free = staging_free_bytes(self.config.staging_dir)
        except OSError:
            free = 0
        status = self.builder.build(self.counts, reports, free, ledger_ok=self.ledger_ok, parked=self.parked_files,
                                    ledger_error=self.ledger_error, to_copy=self.to_copy, moving=self.moving)
        self.diagnoses = {d.name: d for d in status_lib.diagnose(status, self.parked,
                                                                 self.config.unreachable_warn_seconds)}
        return status
