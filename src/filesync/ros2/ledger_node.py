"""The ledger node on ROS 2: the only process that opens the database; offers it as services under /filesync/ledger
(the handlers are filesync.ros_common.ledger_services', shared with ROS 1)."""
from filesync.ledger.recovery import rebuild_from_staging, wait_for_ledger
from filesync.ros_common.convert import event_message
from filesync.ros_common.ledger_services import LedgerServices
from filesync.ros2.messages import EVENTS_QOS, ROS2, msg, srv
from filesync.ros2.node import EVENTS_TOPIC, WAKE_TOPIC, FilesyncNode

NAMESPACE = "/filesync/ledger"
SERVICES = {"register": "Register", "claim": "Claim", "claim_batch": "ClaimBatch", "checkpoint": "Checkpoint",
            "finish": "Finish", "finish_batch": "FinishBatch", "query": "Query", "manage": "Manage", "counts": "Counts"}


def main():
    """Run the ledger node."""
    filesync = FilesyncNode("ledger")
    node, config = filesync.node, filesync.config
    # while the database cannot be opened (locked, read-only, full), the counts service says why, for the status
    problem = {"reason": ""}
    waiting = node.create_service(srv.Counts, f"{NAMESPACE}/counts",
                                  lambda _request, _reply: srv.Counts.Response(ledger_error=problem["reason"]))
    ledger, moved_aside = wait_for_ledger(config.database, filesync.finished.is_set,
                                          lambda reason: problem.update(reason=reason),
                                          retry_base=config.retry_base, retry_cap=config.retry_cap)
    node.destroy_service(waiting)
    if ledger is None:
        filesync.close()
        return
    if moved_aside:
        node.get_logger().error(f"the ledger database was unreadable; kept it as {moved_aside}, rebuilding from "
                                "staging")
        rebuild_from_staging(ledger, config)
    # a retried or forgotten file: announced to the views, and to the worker nodes, which take it up at once
    events = node.create_publisher(msg.FileEvent, EVENTS_TOPIC, EVENTS_QOS)
    wakes = node.create_publisher(msg.FileEvent, WAKE_TOPIC, EVENTS_QOS)

    def announce(record):
        event = event_message(ROS2, record)
        events.publish(event)
        wakes.publish(event)
    handlers = LedgerServices(ROS2, ledger, config.staging_dir, announce)
    for name, kind in SERVICES.items():
        handler = getattr(handlers, name)
        node.create_service(getattr(srv, kind), f"{NAMESPACE}/{name}",
                            lambda request, _reply, handler=handler: handler(request))
    node.get_logger().info(f"ledger at {config.database}: {len(ledger.counts())} source/state groups")
    filesync.wait_for_shutdown()
    filesync.close()
    handlers.close()
    ledger.close()


if __name__ == "__main__":
    main()
