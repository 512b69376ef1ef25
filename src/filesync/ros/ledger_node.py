"""The ledger node: the only process that opens the database; offers it as services under /filesync/ledger."""
import rospy

from filesync.ledger.recovery import rebuild_from_staging, wait_for_ledger
from filesync.ros.convert import ROS1, file_event
from filesync.ros.node import EVENTS_TOPIC, WAKE_TOPIC, start_node, wait_for_shutdown
from filesync.ros_common.ledger_services import LedgerServices as SharedLedgerServices
from filesync.msg import FileEvent
from filesync.srv import (Checkpoint, Claim, ClaimBatch, Counts, CountsResponse, Finish, FinishBatch, Manage, Query,
                          Register)

NAMESPACE = "/filesync/ledger"


class LedgerServices(SharedLedgerServices):
    """The shared service handlers answering with ROS 1's messages."""

    def __init__(self, ledger, staging_dir, announce=lambda record: None):
        super().__init__(ROS1, ledger, staging_dir, announce)


def main():
    """Run the ledger node."""
    config = start_node("ledger")
    # while the database cannot be opened (locked, read-only, full), the counts service says why, for the status
    problem = {"reason": ""}
    waiting = rospy.Service(f"{NAMESPACE}/counts", Counts, lambda _: CountsResponse(ledger_error=problem["reason"]))
    ledger, moved_aside = wait_for_ledger(config.database, rospy.is_shutdown,
                                          lambda reason: problem.update(reason=reason),
                                          retry_base=config.retry_base, retry_cap=config.retry_cap)
    waiting.shutdown()
    if ledger is None:
        return
    if moved_aside:
        rospy.logerr(f"the ledger database was unreadable; kept it as {moved_aside}, rebuilding from staging")
        rebuild_from_staging(ledger, config)
    # a retried or forgotten file: announced to the views, and to the worker nodes, which take it up at once
    events = rospy.Publisher(EVENTS_TOPIC, FileEvent, queue_size=20)
    wakes = rospy.Publisher(WAKE_TOPIC, FileEvent, queue_size=20)

    def announce(record):
        event = file_event(record)
        events.publish(event)
        wakes.publish(event)
    handlers = LedgerServices(ledger, config.staging_dir, announce)
    services = [rospy.Service(f"{NAMESPACE}/{name}", kind, getattr(handlers, name))
                for name, kind in (("register", Register), ("claim", Claim), ("claim_batch", ClaimBatch),
                                   ("checkpoint", Checkpoint), ("finish", Finish), ("finish_batch", FinishBatch),
                                   ("query", Query), ("manage", Manage), ("counts", Counts))]
    rospy.loginfo(f"ledger at {config.database}: {len(ledger.counts())} source/state groups")
    wait_for_shutdown()
    for service in services:
        service.shutdown()
    handlers.close()
    ledger.close()
