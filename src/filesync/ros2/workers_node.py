"""The finder, downloader and uploader nodes on ROS 2: library loops wired to the ledger's services, the events topic
and the wake topic (python -m filesync.ros2.workers_node finder|downloader|uploader)."""
import logging
import sys
import threading
import time

from std_srvs.srv import Trigger

from filesync.devices.base import DeviceContext
from filesync.engine.runner import build_workers
from filesync.ros_common.convert import event_message, report_to_msg
from filesync.ros2.ledger_client import RosLedger
from filesync.ros2.messages import EVENTS_QOS, REPORTS_QOS, ROS2, msg
from filesync.ros2.node import EVENTS_TOPIC, WAKE_TOPIC, FilesyncNode, RosLeaseClient
from filesync.ros2.status_node import IDLE_REPORT_PERIOD, REPORT_PERIOD, WORKERS_TOPIC
from filesync.ros2.vehicle_node import VehicleServiceLinks
from filesync.ros_common.workers import KINDS, EventRouter, WakeSender
from filesync.status import LastError, ReportPacer, worker_report



def run(role):
    """Run the node for `role`: finder, downloader or uploader."""
    filesync = FilesyncNode(role)
    node, config, name = filesync.node, filesync.config, filesync.name
    publisher = node.create_publisher(msg.FileEvent, EVENTS_TOPIC, EVENTS_QOS)
    wakes = WakeSender(node.create_publisher(msg.FileEvent, WAKE_TOPIC, EVENTS_QOS).publish)

    def announce(record, task=None, bytes_done=None):
        event = event_message(ROS2, record, task, bytes_done)
        publisher.publish(event)
        wakes.offer(event, time.monotonic())

    # `mavlink` devices reach their vehicle through the vehicle node, the link's one owner
    # `mavros` devices make their MAVROS 2 clients on this node
    context = DeviceContext(lock=RosLeaseClient(filesync), owner=name, vehicle_links=VehicleServiceLinks(filesync),
                            ros_node=filesync)
    loops = build_workers(config, RosLedger(filesync), name, context, announce, kinds=KINDS[role],
                          finders=role == "finder")

    router = EventRouter(role, loops)

    node.create_subscription(msg.FileEvent, WAKE_TOPIC, router.on_event, EVENTS_QOS)
    if role == "finder":
        def scan(_request, reply):
            router.wake_all()
            reply.success, reply.message = True, "scanning"
            return reply
        node.create_service(Trigger, "/filesync/scan", scan)
    last_error = LastError()
    logging.getLogger("filesync").addHandler(last_error)
    reports = node.create_publisher(msg.WorkerReport, WORKERS_TOPIC, REPORTS_QOS)
    pacer = ReportPacer(lambda: worker_report(name, loops, last_error),
                        lambda report: reports.publish(report_to_msg(ROS2, report)), REPORT_PERIOD,
                        IDLE_REPORT_PERIOD)
    for source in loops + [last_error]:
        source.notify = pacer.notify
    threading.Thread(target=pacer.run, name="reports", daemon=True).start()
    node.context.on_shutdown(pacer.stop)
    filesync.run_loops(loops)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: python -m filesync.ros2.workers_node {'|'.join(KINDS)} [--ros-args ...]")
    run(sys.argv[1])
