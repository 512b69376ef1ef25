"""The status node: /filesync/status (latched, about 1 Hz) and /diagnostics, one status per source and target.

A node of its own rather than a part of the ledger node: the ledger stays the one small process that owns the
database, and a fault here (or in diagnostic_updater) never stops a transfer. It asks the ledger for grouped counts
(cached there until something changes, so an idle system reads nothing) and listens to the worker nodes' reports.
The parked files and their reasons come from the ledger too (a query for failed files when the counts or an event
say they changed), so after a restart the status still says what is wrong.
"""
import threading
import time
from dataclasses import fields

import rospkg
import rospy
from diagnostic_updater import DiagnosticStatusWrapper, Updater

from filesync import status as status_lib
from filesync.engine.transfer import staging_free_bytes
from filesync.logs import prune_logs
from filesync.msg import (FileEvent, LinkStatus, ParkedFile, PipelineStatus, Status, TransferStatus, WorkerReport)
from filesync.ros.node import EVENTS_TOPIC, start_node, survive, wait_for_shutdown
from filesync.ros.services import PersistentService, ServiceFailed, ServiceUnreachable
from filesync.srv import Counts, Query

STATUS_TOPIC = "/filesync/status"
WORKERS_TOPIC = "/filesync/workers"
COUNTS_SERVICE = "/filesync/ledger/counts"
QUERY_SERVICE = "/filesync/ledger/query"
PERIOD = 1.0
REPORT_PERIOD = 1.0  # how often each worker node reports while it moves a file; the soonest after a change
IDLE_REPORT_PERIOD = 4.0  # how often an idle worker node reports that it is still there
REPORT_STALE = 10.0  # seconds without a report after which a worker node counts as gone
PRUNE_PERIOD = 600.0  # seconds between checks of the ROS log directory's total size
PARKED_REFRESH = 60.0  # seconds after which the parked files are asked for again even if nothing said they changed


def _copy(source, target_class):
    """A message or dataclass of `target_class` with the same-named plain fields of `source`."""
    names = [f.name for f in fields(target_class)] if hasattr(target_class, "__dataclass_fields__") \
        else target_class.__slots__
    return target_class(**{name: getattr(source, name) for name in names if hasattr(source, name)})


def report_to_msg(report):
    """status.WorkerReport -> filesync/WorkerReport."""
    message = WorkerReport(node=report.node, downloads_held=report.downloads_held, last_error=report.last_error,
                           last_error_time=report.last_error_time,
                           transfers=[_copy(t, TransferStatus) for t in report.transfers],
                           links=[_copy(link, LinkStatus) for link in report.links])
    message.header.stamp = rospy.Time.now()
    return message


def report_from_msg(message):
    """filesync/WorkerReport -> status.WorkerReport."""
    return status_lib.WorkerReport(node=message.node, downloads_held=message.downloads_held,
                                   last_error=message.last_error, last_error_time=message.last_error_time,
                                   transfers=[_copy(t, status_lib.TransferStatus) for t in message.transfers],
                                   links=[_copy(link, status_lib.LinkStatus) for link in message.links])


def status_to_msg(status):
    """status.Status -> filesync/Status."""
    message = Status(pipelines=[_copy(p, PipelineStatus) for p in status.pipelines],
                     transfers=[_copy(t, TransferStatus) for t in status.transfers],
                     links=[_copy(link, LinkStatus) for link in status.links])
    for name in ("rate", "bytes_waiting", "staging_free_bytes", "staging_min_free_bytes", "downloads_held",
                 "ledger_ok", "ledger_error", "last_error", "last_error_time", "rate_kib_s", "bytes_to_move", "mib_to_move",
                 "files_parked"):
        setattr(message, name, getattr(status, name))
    message.parked = [_copy(parked, ParkedFile) for parked in status.parked]
    message.header.stamp = rospy.Time.from_sec(status.stamp)
    return message


class StatusNode:
    """Collects reports, asks the ledger for counts once a period, publishes the status and the diagnostics."""

    def __init__(self, config):
        self.config = config
        self.builder = status_lib.StatusBuilder(config)
        self.reports = {}  # node -> (received monotonic time, status.WorkerReport)
        self._lock = threading.Lock()
        self.counts, self.parked, self.ledger_ok, self.ledger_error = {}, {}, False, ""
        self.to_copy, self.moving = {}, set()
        # persistent: asking once a second costs no master lookup and no new connection
        self._counts_service = PersistentService(COUNTS_SERVICE, Counts)
        self._query_service = PersistentService(QUERY_SERVICE, Query)
        self.parked_files = []  # status.ParkedFile, from the ledger
        self._parked_stale = True  # ask the ledger for the parked files at the next tick
        self._parked_at = 0.0
        self.publisher = rospy.Publisher(STATUS_TOPIC, Status, queue_size=1, latch=True)
        self.diagnoses = {}
        self.updater = Updater()
        self.updater.setHardwareID("filesync")
        for role, name in self.builder.devices():
            self._add_task(f"{role} {name}")
        self._add_task("staging")
        self._add_task("ledger")
        rospy.Subscriber(WORKERS_TOPIC, WorkerReport, self._on_report, queue_size=20)
        rospy.Subscriber(EVENTS_TOPIC, FileEvent, self._on_event, queue_size=200)

    def _add_task(self, name):
        def run(stat: DiagnosticStatusWrapper):
            diagnosis = self.diagnoses.get(name)
            if diagnosis is None:
                stat.summary(status_lib.STALE, "no status yet")
                return stat
            stat.summary(diagnosis.level, diagnosis.message)
            for key, value in diagnosis.values.items():
                stat.add(key, value)
            return stat
        self.updater.add(name, run)  # shown as "<node name>: <name>", e.g. "/filesync/status: target ftp"

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
        reply = self._query_service.call(state="failed", limit=status_lib.PARKED_SHOWN)
        self.parked_files = [status_lib.parked_file(record) for record in reply.files]
        self._parked_stale, self._parked_at = False, time.monotonic()

    def _fetch_counts(self):
        try:
            reply = self._counts_service.call()
        except (ServiceUnreachable, ServiceFailed) as error:
            if self.ledger_ok:
                rospy.logwarn(f"status: the ledger does not answer ({error}); showing the last counts")
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
            except (ServiceUnreachable, ServiceFailed) as error:
                rospy.logwarn(f"status: the ledger's parked files could not be read ({error})")

    def tick(self, _event=None):
        """Build and publish one status and one round of diagnostics."""
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
                                    ledger_error=self.ledger_error, to_copy=self.to_copy,
                                    moving=self.moving)
        self.publisher.publish(status_to_msg(status))
        self.diagnoses = {d.name: d for d in status_lib.diagnose(status, self.parked,
                                                                 self.config.unreachable_warn_seconds)}
        self.updater.force_update()


def main():
    """Run the status node."""
    config = start_node("status")
    node = StatusNode(config)
    rospy.Timer(rospy.Duration(PERIOD), survive(node.tick, "status"))

    def prune(_event=None):
        log_dir = rospkg.get_log_dir()
        freed = prune_logs(log_dir, config.ros_log_max_total_bytes)
        if freed:
            rospy.loginfo(f"removed {freed} bytes of old logs from {log_dir}")

    prune()
    rospy.Timer(rospy.Duration(PRUNE_PERIOD), survive(prune, "pruning the ROS logs"))
    wait_for_shutdown()
