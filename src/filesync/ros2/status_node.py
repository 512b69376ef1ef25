"""The status node on ROS 2: /filesync/status (transient-local, the last one waits for a late subscriber as a latched
ROS 1 topic's does; about 1 Hz) and /diagnostics (diagnostic_msgs/DiagnosticArray, one status per source and target,
staging and the ledger, named "<node>: <name>" as ROS 1's diagnostic_updater names them). The work is
filesync.ros_common.status_collector's, shared with ROS 1."""
import os
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from filesync import status as status_lib
from filesync.logs import prune_logs
from filesync.ros_common.convert import status_to_msg
from filesync.ros_common.status_collector import StatusCollector
from filesync.ros2.messages import DIAGNOSTICS_QOS, EVENTS_QOS, REPORTS_QOS, ROS2, STATUS_QOS, msg, now, srv
from filesync.ros2.node import EVENTS_TOPIC, CallFailed, FilesyncNode, call

STATUS_TOPIC = "/filesync/status"
WORKERS_TOPIC = "/filesync/workers"
DIAGNOSTICS_TOPIC = "/diagnostics"
COUNTS_SERVICE = "/filesync/ledger/counts"
QUERY_SERVICE = "/filesync/ledger/query"
PERIOD = 1.0
REPORT_PERIOD = 1.0  # how often each worker node reports while it moves a file; the soonest after a change
IDLE_REPORT_PERIOD = 4.0  # how often an idle worker node reports that it is still there
CALL_TIMEOUT = 3.0  # a status a few seconds late says the ledger does not answer
PRUNE_PERIOD = 600.0  # seconds between checks of the ROS log directory's total size


class StatusNode(StatusCollector):
    """Collects reports, asks the ledger for counts once a period, publishes the status and the diagnostics."""

    CALL_ERRORS = (CallFailed,)

    def __init__(self, filesync: FilesyncNode):
        super().__init__(filesync.config)
        node = filesync.node
        self.name = filesync.name
        self._clients = {"counts": (node.create_client(srv.Counts, COUNTS_SERVICE), srv.Counts),
                         "query": (node.create_client(srv.Query, QUERY_SERVICE), srv.Query)}
        self.publisher = node.create_publisher(msg.Status, STATUS_TOPIC, STATUS_QOS)
        self.diagnostics = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.names = [f"{role} {name}" for role, name in self.builder.devices()] + ["staging", "ledger"]
        node.create_subscription(msg.WorkerReport, WORKERS_TOPIC, self._on_report, REPORTS_QOS)
        node.create_subscription(msg.FileEvent, EVENTS_TOPIC, self._on_event, EVENTS_QOS)

    def _call(self, service, **fields):
        client, kind = self._clients[service]
        return call(client, ROS2.make(kind.Request, **fields), CALL_TIMEOUT)

    def diagnostic_array(self):
        """The diagnoses as a DiagnosticArray, STALE for a name without one yet."""
        statuses = []
        for name in self.names:
            diagnosis = self.diagnoses.get(name)
            level, message = (diagnosis.level, diagnosis.message) if diagnosis else (status_lib.STALE, "no status yet")
            values = [KeyValue(key=str(key), value=str(value)) for key, value in diagnosis.values.items()] \
                if diagnosis else []
            statuses.append(DiagnosticStatus(level=bytes([level]), name=f"{self.name}: {name}", message=message,
                                             hardware_id="filesync", values=values))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = now()
        return array

    def tick(self):
        """Build and publish one status and one round of diagnostics."""
        self.publisher.publish(status_to_msg(ROS2, self.collect()))
        self.diagnostics.publish(self.diagnostic_array())


def ros_log_dir():
    """Where rcl writes each process's log file: ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log."""
    return os.environ.get("ROS_LOG_DIR") or os.path.join(
        os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros"), "log")


def main():
    """Run the status node: a tick a PERIOD on a thread of its own (its service calls wait on the executor's
    thread, which a timer callback would block); the ROS log folder kept under ros_log_max_total_bytes (rcl starts a
    file per process, so every restart adds one)."""
    filesync = FilesyncNode("status")
    node = StatusNode(filesync)

    def ticks():
        pruned = -PRUNE_PERIOD
        while not filesync.finished.wait(PERIOD):
            node.tick()
            if time.monotonic() - pruned >= PRUNE_PERIOD:
                pruned = time.monotonic()
                freed = prune_logs(ros_log_dir(), filesync.config.ros_log_max_total_bytes)
                if freed:
                    filesync.node.get_logger().info(f"removed {freed} bytes of old logs from {ros_log_dir()}")

    threading.Thread(target=ticks, name="status", daemon=True).start()
    filesync.wait_for_shutdown()
    filesync.close()


if __name__ == "__main__":
    main()
