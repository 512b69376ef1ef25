"""The finder, downloader and uploader nodes: library loops wired to the ledger's services, the events topic and the
wake topic."""
import logging
import threading
import time

import rospy
from std_srvs.srv import Trigger, TriggerResponse

from filesync.devices.base import DeviceContext
from filesync.engine.runner import build_workers
from filesync.msg import FileEvent, WorkerReport
from filesync.ros.convert import file_event
from filesync.ros.ledger_client import RosLedger
from filesync.ros.node import EVENTS_TOPIC, WAKE_TOPIC, RosLeaseClient, run_loops, start_node
from filesync.ros.vehicle_node import VehicleServiceLinks
from filesync.ros.status_node import IDLE_REPORT_PERIOD, REPORT_PERIOD, WORKERS_TOPIC, report_to_msg
from filesync.ros_common.workers import KINDS, EventRouter, WakeSender
from filesync.status import LastError, ReportPacer, worker_report



def run(role):
    """Run the node for `role`: finder, downloader or uploader."""
    config = start_node(role)
    publisher = rospy.Publisher(EVENTS_TOPIC, FileEvent, queue_size=200)
    wakes = WakeSender(rospy.Publisher(WAKE_TOPIC, FileEvent, queue_size=200).publish)

    def announce(record, task=None, bytes_done=None):
        event = file_event(record, task, bytes_done)
        publisher.publish(event)
        wakes.offer(event, time.monotonic())

    # `mavlink` devices reach their vehicle through the vehicle node, the link's one owner
    context = DeviceContext(lock=RosLeaseClient(), owner=rospy.get_name(), vehicle_links=VehicleServiceLinks())
    loops = build_workers(config, RosLedger(), rospy.get_name(), context, announce, kinds=KINDS[role],
                          finders=role == "finder")

    router = EventRouter(role, loops)

    rospy.Subscriber(WAKE_TOPIC, FileEvent, router.on_event, queue_size=200)
    if role == "finder":
        rospy.Service("/filesync/scan", Trigger, lambda _: router.wake_all() or TriggerResponse(True, "scanning"))
    last_error = LastError()
    logging.getLogger("filesync").addHandler(last_error)
    reports = rospy.Publisher(WORKERS_TOPIC, WorkerReport, queue_size=2)
    pacer = ReportPacer(lambda: worker_report(rospy.get_name(), loops, last_error),
                        lambda report: reports.publish(report_to_msg(report)), REPORT_PERIOD, IDLE_REPORT_PERIOD)
    for source in loops + [last_error]:
        source.notify = pacer.notify
    threading.Thread(target=pacer.run, name="reports", daemon=True).start()
    rospy.on_shutdown(pacer.stop)
    run_loops(loops)
