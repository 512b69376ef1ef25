"""The operator views' link to ROS 2: the status and events topics in, the ledger's manage service out (the web node
uses it; the views themselves, filesync.ui, know nothing of ROS)."""
from filesync.ros_common.convert import status_from_msg
from filesync.ros_common.ledger_actions import LedgerActions as SharedLedgerActions
from filesync.ros_common.ledger_client import LedgerUnavailable
from filesync.ros_common.live_view import LiveView
from filesync.ros2.ledger_client import RosLedger
from filesync.ros2.messages import EVENTS_QOS, STATUS_QOS, msg, to_sec
from filesync.ros2.node import EVENTS_TOPIC
from filesync.status import status_view

STATUS_TOPIC = "/filesync/status"
ACTION_TIMEOUT = 5.0  # seconds a retry or forget waits for the ledger


class StatusClient(LiveView):
    """A LiveView of /filesync/status and /filesync/events on ROS 2."""

    def __init__(self, filesync, on_view):
        super().__init__(on_view)
        self.node = filesync.node
        self._subscriptions = [
            self.node.create_subscription(msg.Status, STATUS_TOPIC,
                                          lambda message: self.show(status_view(status_from_msg(message, to_sec))),
                                          STATUS_QOS),
            self.node.create_subscription(msg.FileEvent, EVENTS_TOPIC, self._on_event, EVENTS_QOS)]

    def close(self):
        """Stop listening."""
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)


class LedgerActions(SharedLedgerActions):
    """Retry and forget through the ledger's ROS 2 manage service (see filesync.ros_common.ledger_actions)."""

    def __init__(self, filesync, timeout=ACTION_TIMEOUT):
        ledger = RosLedger(filesync, wait=timeout)  # one set of clients for every action; none hangs past timeout
        super().__init__(lambda _timeout: ledger, LedgerUnavailable, timeout)
