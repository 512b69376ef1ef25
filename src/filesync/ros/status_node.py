"""The status node: /filesync/status (latched, about 1 Hz) and /diagnostics, one status per source and target.

A node of its own rather than a part of the ledger node: the ledger stays the one small process that owns the
database, and a fault here (or in diagnostic_updater) never stops a transfer. It asks the ledger for grouped counts
(cached there until something changes, so an idle system reads nothing) and listens to the worker nodes' reports.
The parked files and their reasons come from the ledger too (a query for failed files when the counts or an event
say they changed), so after a restart the status still says what is wrong.
"""
import rospkg
import rospy
from diagnostic_updater import DiagnosticStatusWrapper, Updater

from filesync import status as status_lib
from filesync.logs import prune_logs
from filesync.msg import FileEvent, Status, WorkerReport
from filesync.ros.convert import ROS1
from filesync.ros.node import EVENTS_TOPIC, start_node, survive, wait_for_shutdown
from filesync.ros.services import PersistentService, ServiceFailed, ServiceUnreachable
from filesync.ros_common import convert
from filesync.ros_common.status_collector import StatusCollector
from filesync.srv import Counts, Query

STATUS_TOPIC = "/filesync/status"
WORKERS_TOPIC = "/filesync/workers"
COUNTS_SERVICE = "/filesync/ledger/counts"
QUERY_SERVICE = "/filesync/ledger/query"
PERIOD = 1.0
REPORT_PERIOD = 1.0  # how often each worker node reports while it moves a file; the soonest after a change
IDLE_REPORT_PERIOD = 4.0  # how often an idle worker node reports that it is still there
PRUNE_PERIOD = 600.0  # seconds between checks of the ROS log directory's total size
SERVICES = {"counts": (COUNTS_SERVICE, Counts), "query": (QUERY_SERVICE, Query)}


def report_to_msg(report):
    """status.WorkerReport -> filesync/WorkerReport."""
    return convert.report_to_msg(ROS1, report)


def status_to_msg(status):
    """status.Status -> filesync/Status."""
    return convert.status_to_msg(ROS1, status)


class StatusNode(StatusCollector):
    """Collects reports, asks the ledger for counts once a period, publishes the status and the diagnostics."""

    CALL_ERRORS = (ServiceUnreachable, ServiceFailed)

    def __init__(self, config):
        super().__init__(config)
        # persistent: asking once a second costs no master lookup and no new connection
        self._services = {service: PersistentService(name, kind) for service, (name, kind) in SERVICES.items()}
        self.publisher = rospy.Publisher(STATUS_TOPIC, Status, queue_size=1, latch=True)
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

    def _call(self, service, **fields):
        """One call on the service's persistent connection (PersistentService: any failure drops it, and a
        connection found broken is opened again once)."""
        return self._services[service].call(**fields)

    def tick(self, _event=None):
        """Build and publish one status and one round of diagnostics."""
        self.publisher.publish(status_to_msg(self.collect()))
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
